"""Dead WebDAV properties in SQL (the ``dav_properties`` table).

`SqlPropertyManager` implements the interface of wsgidav's
``wsgidav.prop_man.property_manager.PropertyManager``, including the positional
``environ`` argument wsgidav passes last. Values are stored as given: wsgidav
hands over serialized XML as bytes, other callers may pass str, and each comes
back as the type it went in as.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from mosaic.dav.store import PropertyRow, children_of, create_schema, subtree_of

_logger = logging.getLogger(__name__)

PropertyValue = bytes | str

_table = PropertyRow.__table__


def _encode(value: PropertyValue) -> dict[str, Any]:
    if isinstance(value, str):
        return {"value": value.encode("utf-8"), "value_is_text": True}
    return {"value": bytes(value), "value_is_text": False}


def _decode(value: bytes, is_text: bool) -> PropertyValue:
    value = bytes(value)  # some drivers hand back memoryview
    return value.decode("utf-8") if is_text else value


def _no_slash_after(column: Any, start: int) -> Any:
    """No "/" in ``column`` from 1-based position ``start`` on (a direct child).

    The LIKE pattern is a constant, so no user text needs wildcard escaping."""
    return func.substr(column, start).not_like("%/%")


def _upsert(conn: Connection, row: dict[str, Any]) -> None:
    """Insert or overwrite one property; atomic even against concurrent writers."""
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    stmt = dialect.insert(_table).values(row)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_table.c.ref_url, _table.c.name],
        set_={"value": stmt.excluded.value, "value_is_text": stmt.excluded.value_is_text},
    )
    conn.execute(stmt)


class SqlPropertyManager:
    """wsgidav property manager on an SQL engine (creates its table if missing)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_schema(engine)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine.url!r})"

    def get_properties(self, norm_url: str, environ: Any = None) -> list[str]:
        """Names of the dead properties of ``norm_url``."""
        query = select(_table.c.name).where(_table.c.ref_url == norm_url)
        with self.engine.begin() as conn:
            return list(conn.execute(query.order_by(_table.c.name)).scalars())

    def bulk_properties(self, norm_url: str, children: bool) -> dict[str, dict[str, Any]]:
        """All dead properties of ``norm_url`` and, if asked, of its direct
        children: ``{ref_url: {name: value}}`` in one query (a PROPFIND of a
        folder must not cost one round trip per member)."""
        base = norm_url.rstrip("/")
        wanted = _table.c.ref_url == base
        if children:
            wanted = or_(wanted, and_(children_of(_table.c.ref_url, norm_url),
                                      _no_slash_after(_table.c.ref_url, len(base) + 2)))
        query = select(_table.c.ref_url, _table.c.name, _table.c.value, _table.c.value_is_text)
        found: dict[str, dict[str, Any]] = {}
        with self.engine.begin() as conn:
            for row in conn.execute(query.where(wanted)):
                found.setdefault(row.ref_url, {})[row.name] = _decode(row.value, row.value_is_text)
        return found

    def get_property(self, norm_url: str, name: str, environ: Any = None) -> PropertyValue | None:
        query = select(_table.c.value, _table.c.value_is_text).where(
            _table.c.ref_url == norm_url, _table.c.name == name
        )
        with self.engine.begin() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _decode(row.value, row.value_is_text)

    def write_property(
        self,
        norm_url: str,
        name: str,
        property_value: PropertyValue,
        dry_run: bool = False,
        environ: Any = None,
    ) -> None:
        if not norm_url.startswith("/") or not name or property_value is None:
            raise ValueError(f"bad property write: {norm_url!r} {name!r}")
        if dry_run:
            return  # nothing can fail here that would not fail for real too
        row = {"ref_url": norm_url, "name": name, **_encode(property_value)}
        with self.engine.begin() as conn:
            _upsert(conn, row)

    def remove_property(
        self, norm_url: str, name: str, dry_run: bool = False, environ: Any = None
    ) -> None:
        """Remove one property; removing a missing one is not an error (RFC 4918)."""
        if dry_run:
            return
        stmt = delete(_table).where(_table.c.ref_url == norm_url, _table.c.name == name)
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def remove_properties(
        self, norm_url: str, environ: Any = None, *, with_children: bool = False
    ) -> None:
        """Remove all properties of ``norm_url`` (and of its descendants if asked).

        wsgidav only ever removes one URL; ``with_children`` is for a provider
        that deletes a whole collection in one call.
        """
        where = subtree_of(_table.c.ref_url, norm_url) if with_children \
            else _table.c.ref_url == norm_url
        with self.engine.begin() as conn:
            conn.execute(delete(_table).where(where))

    def copy_properties(self, src_url: str, dest_url: str, environ: Any = None) -> None:
        """Give ``dest_url`` exactly the properties of ``src_url`` (if it has any).

        Like wsgidav's managers this copies one resource: a COPY of a collection
        calls it once per member.
        """
        columns = (literal(dest_url), _table.c.name, _table.c.value, _table.c.value_is_text)
        copy = insert(_table).from_select(
            ["ref_url", "name", "value", "value_is_text"],
            select(*columns).where(_table.c.ref_url == src_url),
        )
        with self.engine.begin() as conn:
            if src_url == dest_url or not self._has_properties(conn, src_url):
                return
            conn.execute(delete(_table).where(_table.c.ref_url == dest_url))
            conn.execute(copy)

    def move_properties(
        self, src_url: str, dest_url: str, with_children: bool, environ: Any = None
    ) -> None:
        """Re-key the properties of ``src_url`` (and of its descendants) to ``dest_url``.

        Properties already at a target URL are replaced, as a MOVE with
        ``Overwrite: T`` replaces the resource.
        """
        if src_url == dest_url:
            return
        with self.engine.begin() as conn:
            if with_children:
                _move_tree(conn, src_url, dest_url)
            elif self._has_properties(conn, src_url):
                conn.execute(delete(_table).where(_table.c.ref_url == dest_url))
                conn.execute(
                    update(_table).where(_table.c.ref_url == src_url).values(ref_url=dest_url)
                )

    def _dump(self, msg: str = "") -> None:
        """Called by wsgidav's debug filter on ``?dump_storage``: log a count only."""
        with self.engine.begin() as conn:
            count = conn.execute(select(func.count()).select_from(_table)).scalar_one()
        _logger.info("%r: %s %d dead properties", self, msg, count)

    @staticmethod
    def _has_properties(conn: Connection, ref_url: str) -> bool:
        query = select(_table.c.name).where(_table.c.ref_url == ref_url).limit(1)
        return conn.execute(query).first() is not None


def _move_tree(conn: Connection, src_url: str, dest_url: str) -> None:
    """Prefix rewrite in SQL: ``src/x/y`` becomes ``dest/x/y``, ``src`` becomes ``dest``."""
    src_base, dest_base = src_url.rstrip("/"), dest_url.rstrip("/")
    source = _table.alias("source")  # the sub-select must not correlate with the DELETE

    def renamed(column: Any) -> Any:
        # substr counts characters in both SQLite and PostgreSQL, as len() does.
        return literal(dest_base) + func.substr(column, len(src_base) + 1)

    targets = select(renamed(source.c.ref_url)).where(subtree_of(source.c.ref_url, src_url))
    in_source = subtree_of(_table.c.ref_url, src_url)
    conn.execute(delete(_table).where(_table.c.ref_url.in_(targets), ~in_source))
    conn.execute(update(_table).where(in_source).values(ref_url=renamed(_table.c.ref_url)))
