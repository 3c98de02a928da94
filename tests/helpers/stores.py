"""Central's two store backends for the tests: a fresh SQLite file, or a fresh PostgreSQL database per test.

PostgreSQL: the server named by ``GRIDEDGE_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``,
trust auth on loopback); each test creates ``gridedge_test_<random>`` and drops it after (``WITH (FORCE)``: a
worker the test left connected does not keep it alive).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from central.store_pg import reading_value

ADMIN_URL = os.environ.get("GRIDEDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")


def admin_connect() -> Any:
    import psycopg

    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({err}): install and start it (apt-get install postgresql, "
            "trust auth for postgres on 127.0.0.1) or point GRIDEDGE_TEST_PG at one"
        )


@contextmanager
def pg_database() -> Iterator[str]:
    """A new, empty database; yields its URL and drops it after."""
    name = f"gridedge_test_{uuid.uuid4().hex[:12]}"
    with admin_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def store_target(backend: str, tmp_path: Path, name: str = "central.db") -> Iterator[str | Path]:
    """What central.store.open_store opens for ``backend``: a SQLite file in ``tmp_path`` or a new database."""
    if backend == "sqlite":
        yield tmp_path / name
    elif backend == "postgresql":
        with pg_database() as url:
            yield url
    else:
        raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")


@pytest.fixture(
    name="target",
    params=[pytest.param(b, marks=[pytest.mark.integration] if b == "postgresql" else []) for b in BACKENDS],
)
def target_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """``target``: the store a test runs on (import ``target_fixture`` into the test module): ``tmp_path/central.db``,
    or a new PostgreSQL database dropped after the test (marked integration)."""
    with store_target(request.param, tmp_path) as t:
        yield t


def store_toml(target: str | Path) -> str:
    """The ``[store]`` table of a central TOML file for ``target``."""
    key = "url" if isinstance(target, str) else "db"
    return f'[store]\n{key} = "{target}"\n'


def config_store(target: str | Path) -> dict[str, Any]:
    """CentralConfig's store fields for ``target``."""
    if isinstance(target, str):
        return {"db_path": None, "store_url": target}
    return {"db_path": target, "store_url": None}


def query(target: str | Path, statement: str, args: tuple = ()) -> list[tuple]:
    """Rows of a read query on either backend (``?`` placeholders); ``readings.value`` as one column on both.

    On PostgreSQL a reading's value lives in one of three columns (central/store_pg.py); the word ``value`` of a
    statement on ``readings`` is read as the one of them that holds it.
    """
    if isinstance(target, Path):
        from helpers.db import query_db

        return query_db(target, statement, args)
    import psycopg

    pg = statement.replace("?", "%s")
    merge = "FROM readings" in pg and " value," in pg
    if merge:
        pg = pg.replace(" value,", " value, value_int, value_text,", 1)
    with psycopg.connect(target, autocommit=True) as conn:
        try:
            cur = conn.execute(pg, args)
        except psycopg.errors.UndefinedTable:
            return []
        rows = cur.fetchall()
        cols = [c.name for c in cur.description or ()]
    if not merge:
        return [tuple(r) for r in rows]
    i = cols.index("value")
    return [(*r[:i], reading_value(r[i], r[i + 1], r[i + 2]), *r[i + 3 :]) for r in rows]
