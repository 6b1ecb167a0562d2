"""ClassMood's training library and CLIs: train, evaluate, export, bench."""
