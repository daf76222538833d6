"""Alembic environment: uses the connection handed over by ``migrations.upgrade``.

Run from the ``alembic`` command line (developers), it connects to
``sqlalchemy.url`` of alembic.ini or the ``CONNECTOR_STATE_URL`` environment variable.
"""

from __future__ import annotations

import os

from alembic import context

from connector.state.engine import create_state_engine
from connector.state.schema import metadata


def _run(connection) -> None:  # noqa: ANN001 - an SQLAlchemy Connection
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = os.environ.get("CONNECTOR_STATE_URL") or context.config.get_main_option("sqlalchemy.url")
    engine = create_state_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()
