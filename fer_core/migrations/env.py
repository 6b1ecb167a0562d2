"""Alembic environment for the session database.

Two ways in: `fer_core.schema.upgrade` passes its locked connection in `config.attributes`
(the app, the CLIs, `python -m fer_core.store upgrade`); the `alembic` command (alembic.ini at
the repository root, for writing revisions) opens the database given by `-x url=...` or the
settings, with the same lock.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

import fer_core.class_store  # noqa: F401  (its tables join `metadata`, for autogenerate)
from fer_core import schema
from fer_core.store import Store, metadata

config = context.config
if config.config_file_name is not None:  # the alembic command: its messages go to the console
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, **schema.CONTEXT_OPTIONS)
    with context.begin_transaction():  # a no-op inside schema's transaction, which commits
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run python -m fer_core.store upgrade")

if (given := config.attributes.get("connection")) is not None:
    run(given)
else:
    store = Store(context.get_x_argument(as_dictionary=True).get("url"), upgrade=False)
    try:
        with schema.migration_connection(store.engine) as connection:
            run(connection)
    finally:
        store.dispose()
