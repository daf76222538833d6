"""Shared test set-up.

Fixture modules live in ``tests/fixtures/`` (one per area: sandbox, state, ...) and
are loaded here automatically, so each area owns its own file.

PostgreSQL: ``pg_url`` gives the URL of a throw-away schema-free database for tests
marked ``postgres``. Locally an unreachable server skips those tests; in CI
(``CI=true``) it fails them, because CI must prove the PostgreSQL path.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)

# The Dataverse sandbox holds each reply for the execution time it charges (as late as the
# real service); the suite turns that off for speed. Tests of that behaviour turn it back on
# per sandbox (``Limits(hold_replies=True)``); the limits themselves stay as strict.
os.environ.setdefault("SANDBOX_DATAVERSE_HOLD_REPLIES", "0")

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_base_url() -> str:
    url = os.environ.get("CONNECTOR_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the PostgreSQL test database; skip locally / fail in CI when unreachable."""
    url = _pg_base_url()
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI but not reachable at {url}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {url}: {exc}")
    return url


@pytest.fixture
def pg_url(pg_server_url: str):
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = "cesp_test_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    base = sa.engine.make_url(pg_server_url)
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
    admin.dispose()
