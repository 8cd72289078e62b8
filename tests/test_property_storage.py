"""SqlPropertyManager on real SQLite files and on a real PostgreSQL database."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from mosaic.dav.properties import SqlPropertyManager
from mosaic.dav.store import PropertyRow, make_engine


@pytest.fixture
def props(engine: Engine) -> SqlPropertyManager:
    return SqlPropertyManager(engine)


def _all_rows(engine: Engine) -> dict[tuple[str, str], bytes]:
    with engine.begin() as conn:
        rows = conn.execute(select(PropertyRow.ref_url, PropertyRow.name, PropertyRow.value))
        return {(r.ref_url, r.name): bytes(r.value) for r in rows}


def _fill(props: SqlPropertyManager, urls: list[str]) -> None:
    """One property per URL whose value names the URL it was written to."""
    for url in urls:
        props.write_property(url, "{x:}origin", url.encode(), False, None)


def _origins(engine: Engine) -> dict[str, str]:
    return {url: value.decode() for (url, _), value in _all_rows(engine).items()}


XML = b'<ns0:color xmlns:ns0="x:">r\xc3\xa9d</ns0:color>'


def test_round_trip_keeps_value_and_type(props: SqlPropertyManager) -> None:
    props.write_property("/acme/projects/doc.txt", "{x:}color", XML, False, {})
    props.write_property("/acme/projects/doc.txt", "{x:}note", "<n>ünï</n>", environ={})
    assert props.get_property("/acme/projects/doc.txt", "{x:}color", {}) == XML
    assert props.get_property("/acme/projects/doc.txt", "{x:}note") == "<n>ünï</n>"
    assert props.get_properties("/acme/projects/doc.txt", {}) == ["{x:}color", "{x:}note"]
    assert props.get_property("/acme/projects/doc.txt", "{x:}missing") is None
    assert props.get_properties("/acme/projects/other.txt") == []


def test_overwrite_and_dry_run(props: SqlPropertyManager, engine: Engine) -> None:
    props.write_property("/acme/f", "{x:}p", b"<one/>")
    props.write_property("/acme/f", "{x:}p", b"<two/>")
    props.write_property("/acme/f", "{x:}q", b"<dry/>", True, {})
    props.remove_property("/acme/f", "{x:}p", True, {})
    assert _all_rows(engine) == {("/acme/f", "{x:}p"): b"<two/>"}


def test_remove_property_and_properties(props: SqlPropertyManager, engine: Engine) -> None:
    _fill(props, ["/acme/f", "/acme/f/child", "/acme/g"])
    props.write_property("/acme/f", "{x:}other", b"<o/>")
    props.remove_property("/acme/f", "{x:}other", False, {})
    props.remove_property("/acme/f", "{x:}never-set", False, {})  # not an error
    assert props.get_properties("/acme/f") == ["{x:}origin"]
    props.remove_properties("/acme/f", {})
    assert set(_origins(engine)) == {"/acme/f/child", "/acme/g"}


def test_remove_properties_with_children(props: SqlPropertyManager, engine: Engine) -> None:
    _fill(props, ["/acme/d", "/acme/d/", "/acme/d/x", "/acme/d/x/y", "/acme/dx", "/acme/d-x"])
    props.remove_properties("/acme/d", None, with_children=True)
    assert set(_origins(engine)) == {"/acme/dx", "/acme/d-x"}


def test_copy_replaces_destination_and_keeps_source(
    props: SqlPropertyManager, engine: Engine
) -> None:
    props.write_property("/acme/src", "{x:}a", b"<a/>")
    props.write_property("/acme/src", "{x:}t", "text")
    props.write_property("/acme/dst", "{x:}stale", b"<stale/>")
    props.copy_properties("/acme/src", "/acme/dst", {})
    assert props.get_properties("/acme/dst") == ["{x:}a", "{x:}t"]
    assert props.get_property("/acme/dst", "{x:}t") == "text"
    assert props.get_properties("/acme/src") == ["{x:}a", "{x:}t"]


def test_copy_of_resource_without_properties_changes_nothing(
    props: SqlPropertyManager, engine: Engine
) -> None:
    _fill(props, ["/acme/dst", "/acme/src/child"])
    props.copy_properties("/acme/src", "/acme/dst", {})
    assert _origins(engine) == {"/acme/dst": "/acme/dst", "/acme/src/child": "/acme/src/child"}


def test_move_single_resource_leaves_children(props: SqlPropertyManager, engine: Engine) -> None:
    _fill(props, ["/acme/a", "/acme/a/child", "/acme/b"])
    props.move_properties("/acme/a", "/acme/b", with_children=False, environ={})
    assert _origins(engine) == {"/acme/b": "/acme/a", "/acme/a/child": "/acme/a/child"}


def test_move_with_children_rewrites_prefix(props: SqlPropertyManager, engine: Engine) -> None:
    _fill(props, ["/acme/a", "/acme/a/x", "/acme/a/x/y", "/acme/new/x", "/acme/new/keep"])
    props.move_properties("/acme/a/", "/acme/new/", True, {})
    assert _origins(engine) == {
        "/acme/new": "/acme/a",
        "/acme/new/x": "/acme/a/x",  # the old /acme/new/x was overwritten
        "/acme/new/x/y": "/acme/a/x/y",
        "/acme/new/keep": "/acme/new/keep",
    }


NEIGHBOURS = ["/acme/ab", "/acme/a-b", "/acme/a.b", "/acme/A/x", "/acme/ä/x", "/acme2/a/x"]


def test_move_is_prefix_safe(props: SqlPropertyManager, engine: Engine) -> None:
    _fill(props, ["/acme/a", "/acme/a/x", *NEIGHBOURS])
    props.move_properties("/acme/a", "/acme/z", with_children=True)
    moved = {"/acme/z": "/acme/a", "/acme/z/x": "/acme/a/x"}
    assert _origins(engine) == {**moved, **{url: url for url in NEIGHBOURS}}


def test_move_does_not_treat_like_wildcards_as_wildcards(
    props: SqlPropertyManager, engine: Engine
) -> None:
    _fill(props, ["/acme/a_/x", "/acme/ab/x", "/acme/a%/x", "/acme/abc/x"])
    props.move_properties("/acme/a_", "/acme/m_", True)
    props.move_properties("/acme/a%", "/acme/m%", True)
    assert set(_origins(engine)) == {"/acme/m_/x", "/acme/ab/x", "/acme/m%/x", "/acme/abc/x"}


def test_move_counts_characters_not_bytes(props: SqlPropertyManager, engine: Engine) -> None:
    _fill(props, ["/globex/ünï/ä", "/globex/ünï/ö/ß"])
    props.move_properties("/globex/ünï", "/globex/x", True)
    assert set(_origins(engine)) == {"/globex/x/ä", "/globex/x/ö/ß"}


def test_properties_survive_engine_reopen(db_url: str) -> None:
    first = make_engine(db_url)
    SqlPropertyManager(first).write_property("/acme/f", "{x:}p", XML)
    first.dispose()
    second = make_engine(db_url)
    try:
        assert SqlPropertyManager(second).get_property("/acme/f", "{x:}p") == XML
    finally:
        second.dispose()
