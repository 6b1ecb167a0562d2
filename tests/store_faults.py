"""Make one maintenance step fail on a real database (SQLite or PostgreSQL) with a trigger.

The failure imitates what was seen in the field: a database whose status constraint refuses
'interrupted' (made before revision 0002), or one that refuses deletes.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

SQLITE_TRIGGERS = {
    "interrupted": "CREATE TRIGGER refuse_interrupted BEFORE UPDATE OF status ON sessions "
                   "WHEN NEW.status = 'interrupted' BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END",
    "delete": "CREATE TRIGGER refuse_delete BEFORE DELETE ON sessions "
              "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END",
}
POSTGRESQL_TRIGGERS = {
    "interrupted": "CREATE TRIGGER refuse_interrupted BEFORE UPDATE ON sessions FOR EACH ROW "
                   "WHEN (NEW.status = 'interrupted') EXECUTE FUNCTION refuse_in_test()",
    "delete": "CREATE TRIGGER refuse_delete BEFORE DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION refuse_in_test()",
}


def refuse(engine: Engine, what: str) -> None:
    """`what`: 'interrupted' (marking sessions interrupted fails) or 'delete' (deleting sessions fails)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(SQLITE_TRIGGERS[what]))
            return
        conn.execute(text("CREATE OR REPLACE FUNCTION refuse_in_test() RETURNS trigger LANGUAGE plpgsql AS "
                          "$$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$"))
        conn.execute(text(POSTGRESQL_TRIGGERS[what]))
