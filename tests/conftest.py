"""Fixtures shared by the test modules.

``db_url`` runs a test once on a fresh SQLite file and once on PostgreSQL. Where the
PostgreSQL server comes from is decided by tests/support/postgres.py (``MOSAIC_TEST_PG``,
the local server on 5432, or a throwaway cluster); no server means failed tests, not
skipped ones.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from mosaic.dav.store import Base, create_schema, make_engine
from tests.support.postgres import PostgresUnavailable, admin_url

# A byte-wise collation sorts "/ä" after "/b"; a locale one sorts it before.
_LOCALE_ORDER_PROBE = text("SELECT '/ä/x' < '/b'")


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL for this session's PostgreSQL server (see tests/support/postgres.py)."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(admin_url())
        except PostgresUnavailable as err:
            # A failure, never a skip; `from None`: the message says it all.
            raise pytest.fail.Exception(str(err), pytrace=False) from None
        yield url


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database for this session, dropped at its end.

    It uses an ICU locale, as real servers often do, so that byte-wise path
    comparison is really put to the test ("/Acme" sorts next to "/acme" there).
    """
    admin = make_engine(pg_admin_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"mosaic_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        # ENCODING: a cluster made under the C locale has SQL_ASCII templates, which
        # ICU refuses. C.UTF-8 (for LC_CTYPE) ships with every Debian glibc.
        conn.exec_driver_sql(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"
            " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        _require_locale_collation(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


def _require_locale_collation(url: str) -> None:
    """Fail unless the database sorts by locale: byte-wise, path tests would prove nothing."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not conn.execute(_LOCALE_ORDER_PROBE).scalar_one():
                pytest.fail("test database sorts byte-wise: ICU locale not in effect")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty Mosaic database: a new SQLite file, or the session's PostgreSQL emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/dav.sqlite3"  # data/ does not exist yet
    url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    try:
        create_schema(engine)
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    finally:
        engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()
