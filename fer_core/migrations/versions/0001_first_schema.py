"""The first released schema (commit 3729598): sessions, buckets, track_samples, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Written by hand from that commit's `metadata`; frozen here (no imports from the live code)
so that it builds the same tables whatever fer_core/store.py later says.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def _session_fk() -> sa.Column:
    return sa.Column("session_id", sa.Integer(), sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("class_label", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("faces_seen", sa.Integer(), nullable=False),
        sa.Column("dominant_emotion", sa.String(16), nullable=True),
        sa.Column("frames_analysed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.CheckConstraint("source IN ('live', 'recording')", name="ck_sessions_source"),
        sa.CheckConstraint("status IN ('running', 'completed', 'partial', 'failed')", name="ck_sessions_status"),
    )
    op.create_index("ix_sessions_started_at", "sessions", ["started_at"])
    op.create_table(
        "buckets",
        _session_fk(),
        sa.Column("t", sa.BigInteger(), primary_key=True),
        sa.Column("faces", sa.Integer(), nullable=False),
        *[sa.Column(f"p_{e}", sa.Float(), nullable=True) for e in EMOTIONS],
        *[sa.Column(f"share_{e}", sa.Float(), nullable=False) for e in EMOTIONS],
        sa.Column("needs_attention", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "track_samples",
        _session_fk(),
        sa.Column("t", sa.BigInteger(), primary_key=True),
        sa.Column("track_id", sa.Integer(), primary_key=True),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        *[sa.Column(f"p_{e}", sa.Float(), nullable=False) for e in EMOTIONS],
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.Integer(), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("t_start", sa.Float(), nullable=False),
        sa.Column("t_end", sa.Float(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.UniqueConstraint("session_id", "kind", "t_start", name="uq_events_start"),
    )
    op.create_index("ix_events_session_id", "events", ["session_id"])
