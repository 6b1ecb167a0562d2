"""Issue 28: what produced a session (model, settings), a recording's real date, lesson markers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

sessions gains four nullable columns (sessions stored before keep NULL: "not recorded" on
History); markers is a new child table of sessions. Frozen copies of fer_core/store.py as released.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Only what is missing: a database made by create_all of a build with these columns (before
    # this revision existed) is recognised as 0003 and must not fail on them.
    inspector = sa.inspect(op.get_bind())
    present = {column["name"] for column in inspector.get_columns("sessions")}
    columns = [
        sa.Column("recorded_at", sa.DateTime(), nullable=True),
        sa.Column("model_name", sa.String(200), nullable=True),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("analysis_settings", sa.Text(), nullable=True),
    ]
    if missing := [column for column in columns if column.name not in present]:
        with op.batch_alter_table("sessions") as batch:
            for column in missing:
                batch.add_column(column)
    if not inspector.has_table("markers"):
        op.create_table(
            "markers",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("session_id", sa.Integer(), sa.ForeignKey("sessions.id", ondelete="CASCADE"),
                      nullable=False),
            sa.Column("t", sa.Float(), nullable=False),
            sa.Column("label", sa.String(200), nullable=False),
        )
        op.create_index("ix_markers_session_id", "markers", ["session_id"])


def downgrade() -> None:
    raise NotImplementedError("revisions are forward-only: restore a backup taken before upgrading")
