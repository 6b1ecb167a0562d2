"""Sessions may have the status 'interrupted' (commit f428679: live sessions whose process died).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Before this, a database created by the first release kept its old CHECK constraint, so marking
a dead live session 'interrupted' failed on it. SQLite cannot alter a constraint: batch mode
copies the table (with foreign keys switched off by fer_core.schema, so no cascade fires).
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("ck_sessions_status", type_="check")
        batch.create_check_constraint(
            "ck_sessions_status", "status IN ('running', 'completed', 'partial', 'failed', 'interrupted')"
        )
