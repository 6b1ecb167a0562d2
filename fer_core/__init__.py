"""ClassMood's engine: detect -> classify -> track -> aggregate -> store.

No Streamlit import anywhere in this package; the pages compose it.
"""
