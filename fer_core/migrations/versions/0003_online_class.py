"""Online classes (issue 26): classes, class_members, class_partials; buckets.students; source 'class'.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Frozen copies of the tables in fer_core/class_store.py and the column in fer_core/store.py as
first released. Databases opened by that release before this revision existed got the class
tables from create_all (but not the column or the constraint): the tables are created only
where missing, the column only where missing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "students" not in {column["name"] for column in inspector.get_columns("buckets")}:
        with op.batch_alter_table("buckets") as batch:
            batch.add_column(sa.Column("students", sa.Integer(), nullable=True))
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("ck_sessions_source", type_="check")
        batch.create_check_constraint("ck_sessions_source", "source IN ('live', 'recording', 'class')")

    if not inspector.has_table("classes"):
        op.create_table(
            "classes",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("code", sa.String(16), nullable=False, unique=True),
            sa.Column("session_id", sa.Integer(), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False,
                      unique=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("end_reason", sa.String(16), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("expires_at", sa.DateTime(), nullable=False),
            sa.Column("ended_at", sa.DateTime(), nullable=True),
            sa.Column("saved_at", sa.DateTime(), nullable=True),
            sa.Column("instructor_seen_at", sa.DateTime(), nullable=False),
            sa.Column("min_students", sa.Integer(), nullable=False),
            sa.Column("max_students", sa.Integer(), nullable=False),
            sa.Column("salt", sa.String(32), nullable=False),
            sa.CheckConstraint("status IN ('open', 'ended')", name="ck_classes_status"),
        )
    if not inspector.has_table("class_members"):
        op.create_table(
            "class_members",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("class_id", sa.Integer(), sa.ForeignKey("classes.id", ondelete="CASCADE"), nullable=False),
            sa.Column("browser", sa.String(64), nullable=False),
            sa.Column("instance", sa.String(64), nullable=False),
            sa.Column("joined_at", sa.DateTime(), nullable=False),
            sa.Column("last_seen_at", sa.DateTime(), nullable=False),
            sa.Column("left_at", sa.DateTime(), nullable=True),
            sa.UniqueConstraint("class_id", "browser", name="uq_class_members_browser"),
        )
        op.create_index("ix_class_members_class_id", "class_members", ["class_id"])
    if not inspector.has_table("class_partials"):
        op.create_table(
            "class_partials",
            sa.Column("class_id", sa.Integer(), sa.ForeignKey("classes.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("instance", sa.String(64), primary_key=True),
            sa.Column("t", sa.BigInteger(), primary_key=True),
            sa.Column("students", sa.Integer(), nullable=False),
            sa.Column("contributors", sa.Integer(), nullable=False),
            sa.Column("frames", sa.Integer(), nullable=False),
            sa.Column("faces", sa.Integer(), nullable=False),
            sa.Column("observations", sa.Integer(), nullable=False),
            *[sa.Column(f"sum_{e}", sa.Float(), nullable=False) for e in EMOTIONS],
            *[sa.Column(f"n_{e}", sa.Integer(), nullable=False) for e in EMOTIONS],
        )
