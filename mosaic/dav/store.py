"""SQL schema and engine set-up shared by the lock storage and the property manager.

One schema serves SQLite (the default: a file under the server's data dir) and
PostgreSQL (a server farm). Both stores key rows by *ref-url*: an opaque string
the provider builds from tenant + backend identity (``/acme/projects/doc.txt``,
``/acme/home~alice/doc.txt``). This module never parses them; it only needs
"equal" and "is a descendant of", both defined byte-wise (see `children_of`).

Concurrency model: every write that must be atomic with a preceding read runs in
one transaction that is serialised across processes. SQLite gets that for every
transaction from ``BEGIN IMMEDIATE``; PostgreSQL takes a transaction-level
advisory lock where a caller asks for it (`serialise`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Engine,
    Float,
    LargeBinary,
    String,
    and_,
    create_engine,
    event,
    make_url,
    or_,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mosaic.config.schema import Server

#: How long a SQLite writer waits for another process's transaction (seconds).
SQLITE_BUSY_TIMEOUT_S = 60.0

#: Key of the PostgreSQL advisory lock that serialises lock grants ("MOSA").
ADVISORY_LOCK_KEY = 0x4D4F5341

# Paths compare byte-wise everywhere: SQLite's default BINARY collation does, and
# PostgreSQL must be told, or a locale collation (en_US, ICU) would sort "/Acme/x"
# and "/äcme/x" between "/acme/" and "/acme0" and leak them into range queries.
_PathString = String().with_variant(String(collation="C"), "postgresql")


class Base(DeclarativeBase):
    pass


class LockRow(Base):
    """One WebDAV lock; mirrors wsgidav's lock dict field by field."""

    __tablename__ = "dav_locks"

    token: Mapped[str] = mapped_column(String(200), primary_key=True)
    root: Mapped[str] = mapped_column(_PathString, index=True)
    principal: Mapped[str] = mapped_column(String)
    type: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16))
    depth: Mapped[str] = mapped_column(String(16))
    owner: Mapped[bytes] = mapped_column(LargeBinary)  # client-supplied XML
    timeout: Mapped[float] = mapped_column(Float)
    expire: Mapped[float] = mapped_column(Float)  # epoch seconds; < 0: never


class ActiveWriteRow(Base):
    """A lease saying "a worker is writing ``ref_url`` right now" (a PUT body, a PROPPATCH).

    While a valid lease exists no other worker may grant a LOCK on the URL: wsgidav
    keeps this marker in a per-process dict, which does not close the race
    (CWE-367) between processes. Leases expire so that a crashed worker, which
    never deletes its own, cannot block the URL for ever.
    """

    __tablename__ = "dav_active_writes"

    lease: Mapped[str] = mapped_column(String(64), primary_key=True)
    ref_url: Mapped[str] = mapped_column(_PathString, index=True)
    expires: Mapped[float] = mapped_column(Float, index=True)  # epoch seconds


class PropertyRow(Base):
    """One dead property of one resource."""

    __tablename__ = "dav_properties"

    ref_url: Mapped[str] = mapped_column(_PathString, primary_key=True)
    name: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    # wsgidav hands over bytes (etree.tostring) but other callers pass str; the
    # flag lets us give back exactly the type we were given.
    value_is_text: Mapped[bool] = mapped_column(Boolean, default=False)


def make_engine(url: str) -> Engine:
    """Create an engine for a ``sqlite:///...`` or ``postgresql://...`` URL.

    A bare ``postgresql://`` URL uses psycopg 3 (SQLAlchemy would pick psycopg2).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True)


def _make_sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    # SQLAlchemy's documented pysqlite recipe: take transaction control away from
    # the driver so that we can say BEGIN IMMEDIATE, which grabs the database
    # write lock up front. A deferred BEGIN would let two processes read, then
    # both try to upgrade - one fails with SQLITE_BUSY instead of waiting.
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    # WAL: readers of other processes are not blocked by the one writer.
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    # NORMAL is WAL's recommended level: the database stays consistent, and only
    # the last commits (locks, leases, dead properties) could roll back on a
    # power cut; FULL would cost one fsync per PUT for the write lease alone.
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _on_sqlite_begin(conn: Connection) -> None:
    # Read-only transactions take no write lock: a snapshot is all they need.
    # Everything else grabs the write lock up front (see _make_sqlite_engine).
    readonly = conn.get_execution_options().get(READONLY_OPTION, False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


READONLY_OPTION = "mosaic_readonly"


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (on SQLite it does not queue behind writers)."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{READONLY_OPTION: True})
        with conn.begin():
            yield conn


def serialise(conn: Connection) -> None:
    """Make the current transaction exclusive against all other serialised ones.

    SQLite needs nothing: ``BEGIN IMMEDIATE`` already holds the database write
    lock. PostgreSQL takes an advisory lock released at commit or rollback.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})


def database_url(server: Server) -> str:
    """The configured database, else SQLite in the data directory."""
    return server.database_url or f"sqlite:///{Path(server.data_dir).resolve() / 'mosaic.db'}"


def prepare_database(url: str) -> None:
    """Create the schema (and switch SQLite to WAL) before any worker opens it.

    Workers opening a fresh SQLite file together both try to switch it to WAL,
    which takes the file's exclusive lock; the loser failed with "database is
    locked" instead of waiting. Once the file is in WAL mode the switch is a
    no-op. The engine is closed again: no connection may cross a fork.
    """
    engine = make_engine(url)
    try:
        create_schema(engine)
    finally:
        engine.dispose()


def create_schema(engine: Engine) -> None:
    """Create the tables if they are missing (idempotent, safe to race).

    ``create_all`` is enough while the schema is young; once it has to change
    in place, replace this with Alembic migrations.
    """
    with engine.begin() as conn:
        # Two workers starting together would otherwise both see "no table"
        # and one would fail on CREATE TABLE.
        serialise(conn)
        Base.metadata.create_all(conn)


class ConnectionScope:
    """A per-thread "current transaction" on one engine.

    `begin` opens a transaction, or joins the one this thread already has open,
    so that several storage calls made by wsgidav's LockManager (conflict check,
    then create) can run inside one serialised transaction without wsgidav
    knowing about connections.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()

    @contextmanager
    def begin(self, *, serialised: bool = False, readonly: bool = False
              ) -> Iterator[Connection]:
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            if serialised and not self._local.serialised:
                # Too late: reads already done outside the exclusive section.
                raise RuntimeError("cannot serialise a transaction that is already open")
            yield current
            return
        opened = reading(self.engine) if readonly and not serialised else self.engine.begin()
        with opened as conn:
            if serialised:
                serialise(conn)
            self._local.conn, self._local.serialised = conn, serialised
            try:
                yield conn
            finally:
                self._local.conn = None


def raw(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """Run ``sql`` ("?" placeholders) on the driver cursor of ``conn``.

    For the statements on every request (lock checks, write leases): building
    and compiling a SQLAlchemy statement costs ~0.7 ms, the driver ~15 us. The
    transaction is still ``conn``'s, so serialisation and rollback hold.
    """
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")  # psycopg; our SQL has no literal "?" or "%"
    cursor = conn.connection.dbapi_connection.cursor()
    cursor.execute(sql, tuple(params))
    return cursor


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


def children_range(path: str) -> tuple[str, str]:
    """Bounds of the rows strictly below ``path`` (see `children_of`)."""
    prefix = path.rstrip("/") + "/"
    return prefix, prefix[:-1] + "0"


def children_of(column: ColumnElement[str], path: str) -> ColumnElement[bool]:
    """Rows strictly below ``path``: "/a/b" is below "/a", "/ab" is not.

    A half-open range ["/a/", "/a0") instead of LIKE: no wildcard escaping, no
    SQLite case-insensitive LIKE, and it uses the index. "0" is the character
    after "/", so the range holds exactly the strings that start with "/a/".
    """
    low, high = children_range(path)
    return and_(column > low, column < high)


def subtree_of(column: ColumnElement[str], path: str) -> ColumnElement[bool]:
    """``path`` itself (with or without trailing slash) and everything below it."""
    base = path.rstrip("/")
    return or_(column == base, column == base + "/", children_of(column, path))
