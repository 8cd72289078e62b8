"""Parallel ranged reads, parallel parts and the per-mount listing cache, in isolation.

The stores are in-process fakes here (these are unit tests of the streaming
and caching logic); every real store runs them through the conformance suite.
"""

from __future__ import annotations

import io
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mosaic.providers.listcache import ListingCache
from mosaic.providers.transfers import ParallelReader, ParallelWriter, PartedUpload

BLOCK = 1000


class CountingSource:
    """``read_range`` over bytes, recording calls and the most ever in flight."""

    def __init__(self, data: bytes, delay: float = 0.0) -> None:
        self.data, self.delay = data, delay
        self.calls: list[tuple[int, int]] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, start: int, end: int) -> bytes:
        with self._lock:
            self.calls.append((start, end))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        return self.data[start:end]


def test_reader_returns_the_same_bytes_for_any_seek_and_read_pattern():
    data = os.urandom(10 * BLOCK + 123)
    source = CountingSource(data)
    reader = ParallelReader(source, len(data), BLOCK, ahead=3)
    expected = io.BytesIO(data)
    rng = random.Random(7)
    for _ in range(300):
        if rng.random() < 0.2:
            where = rng.randrange(0, len(data) + 10)
            assert reader.seek(where) == expected.seek(where)
        size = rng.choice([1, 17, 256, BLOCK, 3 * BLOCK])
        assert reader.read(size) == expected.read(size)
        assert reader.tell() == expected.tell()
    reader.seek(0)
    assert reader.read() == data
    reader.close()


def test_sequential_read_keeps_blocks_in_flight_but_never_more_than_ahead():
    data = os.urandom(12 * BLOCK)
    source = CountingSource(data, delay=0.02)
    with ParallelReader(source, len(data), BLOCK, ahead=4) as reader:
        assert b"".join(iter(lambda: reader.read(256), b"")) == data
    assert 2 <= source.most_in_flight <= 4
    assert sorted(source.calls) == [(i * BLOCK, (i + 1) * BLOCK) for i in range(12)]


def test_a_small_range_of_a_big_object_costs_one_request():
    data = os.urandom(50 * BLOCK)
    source = CountingSource(data)
    reader = ParallelReader(source, len(data), BLOCK, ahead=8)
    reader.seek(20 * BLOCK + 5)
    assert reader.read(100) == data[20 * BLOCK + 5:20 * BLOCK + 105]
    assert source.calls == [(20 * BLOCK + 5, 21 * BLOCK + 5)]


def test_a_failed_range_read_raises_to_the_reader():
    def broken(start: int, end: int) -> bytes:
        raise OSError(5, "store gone")
    reader = ParallelReader(broken, 10 * BLOCK, BLOCK, ahead=3)
    with pytest.raises(OSError, match="store gone"):
        reader.read(BLOCK)


class FakeUpload(PartedUpload):
    def __init__(self, fail_part: int | None = None, delay: float = 0.0,
                 concurrent: bool = True) -> None:
        self.concurrent = concurrent
        self.parts: dict[int, bytes] = {}
        self.whole: bytes | None = None
        self.published: bytes | None = None
        self.aborted_with: list[Any] | None = None
        self.fail_part, self.delay = fail_part, delay
        self.in_flight = self.most_in_flight = 0
        self.order: list[int] = []
        self._lock = threading.Lock()

    def put_whole(self, data: bytes) -> None:
        self.published = self.whole = data

    def send_part(self, number: int, data: bytes) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.order.append(number)
        try:
            time.sleep(self.delay)
            if number == self.fail_part:
                raise OSError(5, f"part {number} refused")
            self.parts[number] = data
            return number
        finally:
            with self._lock:
                self.in_flight -= 1

    def finish(self, tokens: list[Any]) -> None:
        assert tokens == sorted(tokens) == list(range(1, len(tokens) + 1))
        self.published = b"".join(self.parts[n] for n in tokens)

    def abort(self, tokens: list[Any]) -> None:
        self.aborted_with = tokens


def _write_all(writer: ParallelWriter, data: bytes, chunk: int = 333) -> None:
    for start in range(0, len(data), chunk):
        writer.write(data[start:start + chunk])


def test_writer_sends_parts_in_parallel_bounded_and_publishes_them_in_order():
    data = os.urandom(10 * BLOCK + 7)
    upload = FakeUpload(delay=0.02)
    writer = ParallelWriter(upload, BLOCK, transfers=3)
    _write_all(writer, data)
    assert upload.published is None  # nothing visible before commit
    writer.commit()
    assert upload.published == data
    assert 2 <= upload.most_in_flight <= 3
    assert writer.tell() == len(data)


def test_small_object_is_one_request_and_an_exact_multiple_sends_no_empty_part():
    small = FakeUpload()
    writer = ParallelWriter(small, BLOCK, transfers=4)
    writer.write(b"tiny")
    writer.commit()
    assert small.whole == b"tiny" and not small.parts
    exact = FakeUpload()
    writer = ParallelWriter(exact, BLOCK, transfers=4)
    _write_all(writer, b"x" * (3 * BLOCK))
    writer.commit()
    assert sorted(exact.parts) == [1, 2, 3] and exact.published == b"x" * (3 * BLOCK)


def test_a_failed_part_fails_the_upload_and_abort_gets_the_parts_that_arrived():
    upload = FakeUpload(fail_part=2)
    writer = ParallelWriter(upload, BLOCK, transfers=2)
    with pytest.raises(OSError, match="part 2 refused"):
        _write_all(writer, os.urandom(8 * BLOCK))
        writer.commit()
    writer.discard()
    assert upload.published is None
    assert upload.aborted_with is not None and 2 not in upload.aborted_with
    assert 1 in upload.aborted_with


def test_discard_waits_for_parts_in_flight_then_aborts():
    upload = FakeUpload(delay=0.05)
    writer = ParallelWriter(upload, BLOCK, transfers=4)
    _write_all(writer, os.urandom(4 * BLOCK))
    writer.discard()
    assert upload.in_flight == 0
    assert upload.published is None and sorted(upload.aborted_with or []) == [1, 2, 3, 4]


def test_a_sequential_upload_sends_one_part_at_a_time_in_order():
    upload = FakeUpload(delay=0.01, concurrent=False)
    writer = ParallelWriter(upload, BLOCK, transfers=8)
    data = os.urandom(6 * BLOCK)
    _write_all(writer, data)
    writer.commit()
    assert upload.most_in_flight == 1 and upload.order == [1, 2, 3, 4, 5, 6]
    assert upload.published == data


# -- the listing cache ---------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


def test_cache_answers_within_its_lifetime_and_fetches_again_after():
    cache = ListingCache(ttl=0.2, stamp_file=None)
    fetch = Counter()
    assert cache.get("k", fetch) == cache.get("k", fetch) == 1
    time.sleep(0.25)
    assert cache.get("k", fetch) == 2


def test_own_change_forgets_everything_at_once(tmp_path: Path):
    cache = ListingCache.for_mount(60, tmp_path, "acme", "/cloud")
    fetch = Counter()
    cache.get("k", fetch)
    cache.invalidate()
    assert cache.get("k", fetch) == 2


def test_a_change_in_another_worker_is_seen_at_once(tmp_path: Path):
    """Two caches of one mount (two worker processes) share the stamp file."""
    worker_a = ListingCache.for_mount(60, tmp_path, "acme", "/cloud")
    worker_b = ListingCache.for_mount(60, tmp_path, "acme", "/cloud")
    other_mount = ListingCache.for_mount(60, tmp_path, "globex", "/cloud")
    fetch_b, fetch_other = Counter(), Counter()
    worker_b.get("k", fetch_b)
    other_mount.get("k", fetch_other)
    worker_a.invalidate()
    assert worker_b.get("k", fetch_b) == 2
    assert other_mount.get("k", fetch_other) == 1  # another tenant's mount keeps its entries


def test_a_fetch_that_straddles_a_change_is_not_kept():
    cache = ListingCache(ttl=60, stamp_file=None)
    calls = Counter()

    def slow_fetch() -> int:
        value = calls()
        if value == 1:
            cache.invalidate()  # a write lands while the listing is in flight
        return value

    assert cache.get("k", slow_fetch) == 1
    assert cache.get("k", slow_fetch) == 2  # the straddling answer was not cached


def test_zero_lifetime_means_no_cache(tmp_path: Path):
    cache = ListingCache.for_mount(0, tmp_path, "acme", "/cloud")
    fetch = Counter()
    cache.get("k", fetch)
    assert cache.get("k", fetch) == 2
    assert not (tmp_path / "listing-stamps").exists()


def test_a_listing_slower_than_the_lifetime_is_still_reused():
    cache = ListingCache(ttl=0.2, stamp_file=None)
    calls = Counter()

    def slow_fetch() -> int:
        time.sleep(0.3)
        return calls()

    assert cache.get("k", slow_fetch) == 1
    assert cache.get("k", slow_fetch) == 1  # the lifetime counts from the answer
