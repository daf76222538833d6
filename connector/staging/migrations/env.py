"""Alembic environment of the staging database (its own version table).

Run through ``connector.staging.sql.migrate_staging`` (online, with a connection in
``config.attributes["connection"]``) or offline to print the DDL for a DBA. The table
name and schema come from ``config.attributes["table"]`` / ``["schema"]``.
"""

from __future__ import annotations

from alembic import context

VERSION_TABLE = "cesp_staging_version"

config = context.config
schema = config.attributes.get("schema") or None


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes["connection"]
    context.configure(connection=connection, version_table=VERSION_TABLE, version_table_schema=schema)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
