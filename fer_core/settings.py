"""ClassMood's one settings object: environment, `.streamlit/secrets.toml`, then defaults.

Nothing else in the project reads the environment directly. Every variable is
`CLASSMOOD_<FIELD>` (for example `CLASSMOOD_RETENTION_DAYS=7`); the database URL
also accepts the conventional `DATABASE_URL`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLASSMOOD_",
        extra="ignore",
        populate_by_name=True,
    )

    # --- where things live -------------------------------------------------
    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="Database, runs and promoted models.")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLASSMOOD_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="A SQLite or PostgreSQL SQLAlchemy URL; default: a SQLite file under data_dir.",
    )
    db_pool_size: int = Field(default=5, ge=1, le=100, description="PostgreSQL connections each process keeps.")
    db_max_overflow: int = Field(default=10, ge=0, le=100, description="Extra PostgreSQL connections in bursts.")
    models_dir: Path = Field(default=PROJECT_ROOT / "models", description="Shipped models.")
    model_path: Path | None = Field(
        default=None, description="Explicit model directory; overrides the promoted and shipped model "
        "(which model is active: fer_core.registry)."
    )
    classifier_backend: Literal["auto", "keras", "litert"] = "auto"
    classifier_flip_average: bool | None = Field(
        default=None,
        description="Average each face with its mirror image (twice the classifier time); "
        "unset: as the model's calibration.json says.",
    )

    # --- face detector (defaults measured on the group photos, see README) --
    detect_width: int = Field(default=640, ge=160, description="Frames are downscaled to this width to detect.")
    scale_factor: float = Field(default=1.2, gt=1.0, le=2.0)
    min_neighbors: int = Field(default=3, ge=1, le=20)
    min_face_fraction: float = Field(default=0.05, gt=0.0, lt=1.0, description="Min face side / frame height.")
    min_face_confidence: float = Field(default=1.0, description="Haar level weight below which boxes are dropped.")
    min_face_px: int = Field(default=28, ge=24, le=400, description="Smallest face side in detection pixels.")
    detect_every: int = Field(default=1, ge=1, le=30, description="Run detection on every k-th analysed frame.")
    full_scan_every: int = Field(
        default=10, ge=1, le=60,
        description="Scan the whole frame on every n-th detection (and when faces were lost); search only "
        "around the tracked faces in between. 1: always the whole frame.")
    pipelined: bool = Field(
        default=True, description="Detect the next frame on a second thread while this one is classified "
        "(faces come one frame late). Measured on the idle 2-core machine: 2.30x fer's frames/s instead of "
        "2.14x; no gain when another process takes both cores.")

    # --- tracking and aggregation -------------------------------------------
    smoothing: float = Field(default=0.6, ge=0.0, lt=1.0, description="EMA weight of a track's past probabilities.")
    track_max_age_s: float = Field(default=1.5, gt=0.0)
    live_window_s: int = Field(default=600, ge=10, description="Seconds of buckets kept in memory for live charts.")
    attention_negative_share: float = Field(default=0.5, gt=0.0, le=1.0)
    attention_seconds: int = Field(default=10, ge=1)

    # --- store ----------------------------------------------------------------
    retention_days: int = Field(default=30, ge=1, description="Sessions older than this are purged.")
    flush_interval_s: float = Field(default=1.0, gt=0.0, le=2.0)

    # --- uploads ---------------------------------------------------------------
    max_upload_mb: int = Field(default=500, ge=1)
    max_zip_members: int = Field(default=100_000, ge=1)
    max_zip_uncompressed_mb: int = Field(default=2_000, ge=1)

    # --- WebRTC -----------------------------------------------------------------
    ice_servers: list[dict[str, Any]] = Field(
        default_factory=list, description="RTCIceServer dicts; empty works on a LAN and on localhost."
    )
    loopback_only: bool = Field(default=False, description="Test-only: ICE on 127.0.0.1 in a network namespace.")

    # --- online classes (students join from their own browsers) -------------------
    class_min_students: int = Field(
        default=5, ge=1, le=100,
        description="Privacy floor: expressions are shown only when at least this many students' faces are in view.")
    class_max_students: int = Field(default=60, ge=1, le=1000, description="Streams one class accepts.")
    class_analysis_fps: float = Field(default=2.0, gt=0.0, le=15.0, description="Analysed frames/s per student.")
    class_video_width: int = Field(default=320, ge=160, le=1920, description="Students' camera: ideal width.")
    class_video_height: int = Field(default=240, ge=120, le=1080, description="Students' camera: ideal height.")
    class_video_fps: int = Field(default=5, ge=1, le=30, description="Students' camera: most frames/s sent.")
    class_idle_timeout_min: float = Field(
        default=30.0, gt=0.0, description="A class nobody has watched or joined for this long ends itself.")
    class_code_ttl_hours: float = Field(default=12.0, gt=0.0, description="Join codes stop working after this.")
    class_member_timeout_s: float = Field(
        default=5.0, ge=2.0, le=60.0, description="A student whose frames stopped this long ago is no longer counted.")
    class_batch_window_ms: float = Field(
        default=5.0, ge=0.0, le=100.0, description="How long the shared classifier waits to batch students' faces.")
    public_url: str | None = Field(
        default=None, description="The app's address as students reach it (join links); default: the page's own.")

    # --- access control -----------------------------------------------------------
    app_password: SecretStr | None = None
    analyst_password: SecretStr | None = None
    trainer_password: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        secrets_toml = TomlConfigSettingsSource(settings_cls, toml_file=PROJECT_ROOT / ".streamlit" / "secrets.toml")
        return (init_settings, env_settings, secrets_toml, file_secret_settings)

    @field_validator(
        "app_password", "analyst_password", "trainer_password", "model_path", "database_url",
        "classifier_flip_average", "public_url", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    # --- derived paths ---------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'classmood.db'}"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings. Tests call `get_settings.cache_clear()` after changing env."""
    return Settings()
