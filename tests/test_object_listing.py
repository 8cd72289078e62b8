"""A folder of 10,000 objects listed through WebDAV: paged listings, no request per
entry, every name once, lean replies.

Windows drops PROPFIND replies over 1,000,000 bytes (FileAttributesLimitInBytes).
No multistatus can carry 10,000 entries in that (the href and the response and
propstat elements alone take about 100 bytes each), so what is held here is the
per-entry cost with the properties a file browser asks for: 1,000 entries stay
far below the limit, and the README says how to raise it for bigger folders.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from mosaic.providers import s3
from tests.support import moto, tenants
from tests.support.live import live_server

COUNT = 10_000
WINDOWS_LIMIT = 1_000_000
#: what a file browser shows: name, folder or not, size, dates
USUAL_PROPS = """<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/>
<D:getlastmodified/><D:creationdate/></D:prop></D:propfind>"""
HREF = re.compile(r"<D:href>([^<]*)</D:href>")


def _names(count: int) -> list[str]:
    return [f"Quarterly report {index:05}.xlsx" for index in range(count)]


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """acme's /cloud on a bucket whose "big/" holds 10,000 objects another tool wrote,
    and "small/" 1,000."""
    bucket = moto.fresh_bucket()
    client = moto.client()
    keys = [f"big/{name}" for name in _names(COUNT)]
    keys += [f"small/{name}" for name in _names(1000)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))
    data = tenants.two_tenants(tmp_path_factory.mktemp("listing"))
    data["tenants"]["acme"]["mounts"]["/cloud"] = {"provider": {
        **moto.provider(bucket), "listing_cache_seconds": 0}}
    with live_server(tenants.build(data)) as live:
        yield live


@pytest.fixture
def store_calls(monkeypatch):
    """Every S3 request the server makes, by operation."""
    calls: Counter[str] = Counter()
    call = s3.S3Store.call

    def counting(self, method, **kwargs):
        calls[method] += 1
        return call(self, method, **kwargs)

    monkeypatch.setattr(s3.S3Store, "call", counting)
    return calls


def _propfind(live, path: str, body: str | None = None):
    session = live.session("alice@acme.example", "alice-secret")
    return session.request("PROPFIND", live.url + path, data=body,
                           headers={"Depth": "1"}, timeout=300)


def test_ten_thousand_objects_are_listed_once_each_from_paged_listings(big_folder, store_calls):
    reply = _propfind(big_folder, "/cloud/big/")
    assert reply.status_code == 207
    hrefs = HREF.findall(reply.text)
    assert len(hrefs) == COUNT + 1 == len(set(hrefs))
    # pages of 1,000 keys, and one probe finding the folder (it has no marker)
    assert store_calls["list_objects_v2"] == COUNT // 1000 + 1
    assert store_calls["head_object"] <= 3  # the folder itself, never one per entry
    assert "get_object" not in store_calls  # a listing reads no content


def test_entries_are_lean_with_the_usual_properties(big_folder):
    big = _propfind(big_folder, "/cloud/big/", USUAL_PROPS)
    small = _propfind(big_folder, "/cloud/small/", USUAL_PROPS)
    assert big.status_code == small.status_code == 207
    per_entry = len(big.content) / COUNT
    # 342 bytes with these names (40 characters URL-encoded): Windows' default
    # limit holds about 2,900 such entries
    assert per_entry < 350, per_entry
    assert len(small.content) < WINDOWS_LIMIT / 2
    assert big.text.count("<D:getcontentlength>1</D:getcontentlength>") == COUNT
