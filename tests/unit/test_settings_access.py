"""Settings sources and access control."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from fer_core import access
from fer_core.registry import ModelRegistry
from fer_core.settings import Settings


def test_defaults_point_at_embedded_sqlite_and_shipped_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLASSMOOD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings()
    assert settings.db_url == f"sqlite:///{tmp_path / 'classmood.db'}"
    assert ModelRegistry.from_settings(settings).active().path == settings.models_dir / "fer-inceptionv3"
    assert settings.ice_servers == []
    assert settings.app_password is None


def test_environment_overrides_and_database_url_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSMOOD_RETENTION_DAYS", "7")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@db/classmood")
    monkeypatch.setenv("CLASSMOOD_ICE_SERVERS", '[{"urls": ["stun:stun.example.org:3478"]}]')
    settings = Settings()
    assert settings.retention_days == 7
    assert settings.db_url == "postgresql+psycopg://u@db/classmood"
    assert settings.ice_servers[0]["urls"] == ["stun:stun.example.org:3478"]


def test_invalid_values_are_rejected_with_the_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSMOOD_RETENTION_DAYS", "0")
    with pytest.raises(ValidationError, match="retention_days"):
        Settings()


@pytest.mark.parametrize(("value", "expected"), [("", None), ("true", True), ("0", False), ("off", False)])
def test_flip_averaging_follows_the_model_unless_set(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool | None
) -> None:
    monkeypatch.setenv("CLASSMOOD_CLASSIFIER_FLIP_AVERAGE", value)
    assert Settings().classifier_flip_average is expected
    monkeypatch.setenv("CLASSMOOD_CLASSIFIER_FLIP_AVERAGE", "sometimes")
    with pytest.raises(ValidationError, match="classifier_flip_average"):
        Settings()


def test_passwords_are_secret_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSMOOD_TRAINER_PASSWORD", "hunter2")
    monkeypatch.setenv("CLASSMOOD_ANALYST_PASSWORD", "")
    settings = Settings()
    assert "hunter2" not in repr(settings)
    assert settings.analyst_password is None
    assert access.check_password(settings.trainer_password, "hunter2")
    assert not access.check_password(settings.trainer_password, "hunter")
    assert access.check_password(None, "anything")


def test_training_page_locks_on_a_network_address_without_password() -> None:
    open_settings = Settings(trainer_password=None, app_password=None)
    assert access.training_locked_reason(open_settings, "127.0.0.1") is None
    assert access.training_locked_reason(open_settings, "localhost") is None
    reason = access.training_locked_reason(open_settings, "0.0.0.0")
    assert reason is not None and "CLASSMOOD_TRAINER_PASSWORD" in reason
    assert access.training_locked_reason(open_settings, "") is not None
    protected = Settings(trainer_password=SecretStr("s3cret"))
    assert access.training_locked_reason(protected, "0.0.0.0") is None


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSMOOD_MODEL_PATH", "")
    monkeypatch.setenv("DATABASE_URL", "")
    settings = Settings()
    assert settings.model_path is None
    assert settings.db_url.startswith("sqlite:///")
