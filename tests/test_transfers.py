"""Streamed reads, streamed and parted writes, the per-mount listing cache, in isolation.

The stores are in-process fakes here (these are unit tests of the streaming
and caching logic); every real store runs them through the conformance suite.
"""

from __future__ import annotations

import io
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mosaic.core.errors import FileTooLargeError
from mosaic.providers.listcache import ListingCache
from mosaic.providers.transfers import (
    BodyPipe,
    ParallelWriter,
    PartedUpload,
    StreamedReader,
    StreamedWriter,
)

BLOCK = 1000
CHUNK = 100  # what the fake stream hands over at a time


class CountingStreams:
    """``open_stream`` over bytes: records each stream's start, how many chunks
    it handed over and whether it was closed."""

    def __init__(self, data: bytes, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.data, self.delay, self.fail_at = data, delay, fail_at
        self.starts: list[int] = []
        self.sent: list[int] = []  # chunks handed over, per stream
        self.closed: list[bool] = []

    def __call__(self, start: int) -> Iterator[bytes]:
        index = len(self.starts)
        self.starts.append(start)
        self.sent.append(0)
        self.closed.append(False)
        try:
            for offset in range(start, len(self.data), CHUNK):
                if self.fail_at is not None and offset >= self.fail_at:
                    raise OSError(5, "store gone")
                time.sleep(self.delay)
                self.sent[index] += 1
                yield self.data[offset:offset + CHUNK]
        finally:
            self.closed[index] = True


def _eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within 5 s"
        time.sleep(0.01)


def test_reader_returns_the_same_bytes_for_any_seek_and_read_pattern():
    data = os.urandom(10 * BLOCK + 123)
    reader = StreamedReader(CountingStreams(data), len(data), ahead=3)
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


def test_a_sequential_read_is_one_stream_read_ahead_no_further_than_ahead():
    data = os.urandom(12 * BLOCK)
    streams = CountingStreams(data)
    with StreamedReader(streams, len(data), ahead=4) as reader:
        assert reader.read(CHUNK) == data[:CHUNK]
        time.sleep(0.2)  # the pump fills its queue, then waits for the client
        # 1 handed out + 4 queued + 1 in the pump's hand, blocked on the full queue
        assert streams.sent[0] <= 1 + 4 + 1
        assert reader.read(CHUNK // 2) + reader.read() == data[CHUNK:]
    assert streams.starts == [0]


def test_a_seek_elsewhere_closes_the_stream_and_opens_one_there():
    data = os.urandom(50 * BLOCK)
    streams = CountingStreams(data)
    reader = StreamedReader(streams, len(data), ahead=2)
    assert reader.read(10) == data[:10]
    reader.seek(10)  # where it is: the stream goes on
    assert reader.read(10) == data[10:20]
    reader.seek(20 * BLOCK + 5)
    assert reader.read(100) == data[20 * BLOCK + 5:20 * BLOCK + 105]
    assert streams.starts == [0, 20 * BLOCK + 5]
    _eventually(lambda: streams.closed[0])
    reader.close()
    _eventually(lambda: streams.closed[1])
    assert max(streams.sent) <= 1 + 2 + 1  # a small range never read the big object


def test_a_failed_stream_raises_to_the_reader_at_its_position():
    data = os.urandom(10 * BLOCK)
    reader = StreamedReader(CountingStreams(data, fail_at=5 * BLOCK), len(data), ahead=3)
    assert reader.read(5 * BLOCK) == data[:5 * BLOCK]
    with pytest.raises(OSError, match="store gone"):
        reader.read(BLOCK)
    with pytest.raises(OSError, match="store gone"):  # again, not a short read
        reader.read(BLOCK)


def test_a_stream_shorter_than_the_object_is_an_error_not_a_short_file():
    data = os.urandom(3 * BLOCK)
    reader = StreamedReader(CountingStreams(data[:BLOCK]), len(data), ahead=3)
    with pytest.raises(OSError, match="ended at 1000 of 3000"):
        reader.read()


def test_closing_mid_stream_stops_the_pump_and_closes_the_stream():
    data = os.urandom(100 * BLOCK)
    streams = CountingStreams(data, delay=0.001)
    reader = StreamedReader(streams, len(data), ahead=2)
    reader.read(CHUNK)
    reader.close()
    _eventually(lambda: streams.closed[0])
    assert streams.sent[0] < len(data) // CHUNK


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


@pytest.mark.parametrize("hard", [True, False])
def test_a_part_beyond_the_limit_is_refused_unsent_unless_the_store_goes_beyond(hard):
    upload = FakeUpload()
    upload.max_parts, upload.max_parts_is_hard = 2, hard
    writer = ParallelWriter(upload, BLOCK, transfers=2)
    data = os.urandom(2 * BLOCK + 1)
    _write_all(writer, data)
    if not hard:  # Swift: manifests nest
        writer.commit()
        assert upload.published == data
        return
    with pytest.raises(FileTooLargeError, match="more than 2 parts"):
        writer.commit()
    writer.discard()
    assert sorted(upload.parts) == [1, 2] and sorted(upload.aborted_with or []) == [1, 2]
    assert upload.published is None


# -- the listing cache ---------------------------------------------------------------


class StreamingUpload(PartedUpload):
    """``put_stream`` reads the body as an HTTP library would: ``read_size`` at a
    time until ``length`` bytes, optionally failing after ``fail_after`` bytes
    (the store went away) or pausing on ``gate`` before reading (a slow store)."""

    def __init__(self, read_size: int = 64, fail_after: int | None = None,
                 gate: threading.Event | None = None) -> None:
        self.read_size, self.fail_after, self.gate = read_size, fail_after, gate
        self.received = bytearray()
        self.outcome: str | None = None

    def put_whole(self, data: bytes) -> None:
        raise AssertionError("a streamed upload sends no whole object")

    def send_part(self, number: int, data: bytes) -> Any:
        raise AssertionError("a streamed upload sends no parts")

    def finish(self, tokens: list[Any]) -> None:
        raise AssertionError("a streamed upload finishes with its last byte")

    def abort(self, tokens: list[Any]) -> None:
        raise AssertionError("a streamed upload is cut off, not aborted")

    def put_stream(self, body: BodyPipe, length: int) -> None:
        assert len(body) == length  # what an HTTP library sends as Content-Length
        if self.gate is not None:
            self.gate.wait(10)
        try:
            while len(self.received) < length:
                if self.fail_after is not None and len(self.received) >= self.fail_after:
                    raise ConnectionResetError("store gone")
                piece = body.read(self.read_size)
                assert piece, "the body ended before its length"
                self.received += piece
        except BaseException as exc:
            self.outcome = type(exc).__name__
            raise
        self.outcome = "stored"


def _writes(writer: StreamedWriter, data: bytes, size: int) -> None:
    for start in range(0, len(data), size):
        writer.write(data[start:start + size])


def test_streamed_writer_sends_the_body_as_one_request_read_in_any_sizes():
    data = os.urandom(10_000)
    for read_size in (1, 7, 64, 100_000):
        upload = StreamingUpload(read_size=read_size)
        writer = StreamedWriter(upload, len(data), capacity=500)
        _writes(writer, data, 333)
        writer.commit()
        assert (bytes(upload.received), upload.outcome) == (data, "stored")


def test_streamed_writer_holds_no_more_than_its_capacity_for_a_slow_store():
    gate = threading.Event()
    upload = StreamingUpload(gate=gate)
    writer = StreamedWriter(upload, 5_000, capacity=1_000)
    done = threading.Event()

    def write_all() -> None:
        _writes(writer, bytes(5_000), 250)
        done.set()

    thread = threading.Thread(target=write_all)
    thread.start()
    time.sleep(0.3)
    assert not done.is_set() and writer.tell() == 1_000  # blocked on a full pipe
    gate.set()
    thread.join(10)
    writer.commit()
    assert len(upload.received) == 5_000


def test_a_short_body_is_never_completed_and_commit_fails():
    upload = StreamingUpload()
    writer = StreamedWriter(upload, 1_000, capacity=100)
    writer.write(bytes(600))
    with pytest.raises(OSError, match="600 of the 1000 bytes"):
        writer.commit()
    assert upload.outcome == "OSError" and len(upload.received) <= 600  # cut off


def test_discard_cuts_the_request_off_before_its_last_byte():
    upload = StreamingUpload()
    writer = StreamedWriter(upload, 1_000, capacity=100)
    writer.write(bytes(999))
    writer.discard()
    assert upload.outcome == "OSError" and len(upload.received) <= 999


def test_more_than_announced_is_refused():
    writer = StreamedWriter(StreamingUpload(), 100, capacity=1_000)
    writer.write(bytes(60))
    with pytest.raises(OSError, match="more than the 100 bytes"):
        writer.write(bytes(41))
    writer.discard()


def test_a_store_failing_mid_body_fails_the_next_write_not_a_hang():
    upload = StreamingUpload(fail_after=300)
    writer = StreamedWriter(upload, 10_000, capacity=100)
    with pytest.raises(ConnectionResetError, match="store gone"):
        _writes(writer, bytes(10_000), 100)
    assert upload.outcome == "ConnectionResetError"
    writer.discard()  # what the caller does next: nothing left to cut off


def test_parts_grow_to_fit_the_part_limit_within_the_same_memory():
    from mosaic.providers.primitives import MIB, parts_for
    assert parts_for(None, 8 * MIB, 4, 1000) == (8 * MIB, 4)  # size unknown: as configured
    assert parts_for(8000 * MIB, 8 * MIB, 4, 1000) == (8 * MIB, 4)  # fits exactly
    assert parts_for(8000 * MIB + 1, 8 * MIB, 4, 1000) == (9 * MIB, 3)
    assert parts_for(20_000 * MIB, 8 * MIB, 4, 1000) == (20 * MIB, 1)
    assert parts_for(100 * 1024 * MIB, 8 * MIB, 4, 0) == (8 * MIB, 4)  # no limit (GCS)
    part, _ = parts_for(5 * 1024**4, 8 * MIB, 4, 10_000)  # S3's 5 TiB object
    assert part * 10_000 >= 5 * 1024**4 and part % MIB == 0


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
