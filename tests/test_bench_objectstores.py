"""The object-store benchmark's own pieces: the streamed body, the request
counter, and the ratios' direction (the measurements themselves need emulators
and minutes: bench/run_objectstores.py --quick)."""

from __future__ import annotations

import io
from pathlib import Path

from bench.counted_mosaic import Counter, read_count
from bench.objectstores import QUICK
from bench.objectstores_report import Row, ratio, rows, table
from bench.stores import Pattern


def test_pattern_repeats_the_block_and_seeks() -> None:
    body = Pattern(b"abc", 8)
    assert body.read() == b"abcabcab"
    assert body.seek(0, io.SEEK_END) == 8 and body.read(4) == b""
    body.seek(4)
    assert body.read(3) == b"bca" and body.tell() == 7
    assert len(body) == 8


def test_counter_is_read_from_its_file(tmp_path: Path) -> None:
    counter = Counter(tmp_path / "count")
    for _ in range(3):
        counter.bump()
    assert read_count(tmp_path / "count") == 3 == counter.value()


def test_ratios_say_more_than_one_when_mosaic_is_better() -> None:
    faster = {"mosaic": {"t": 100.0, "r": 10.0}, "rclone": {"t": 50.0, "r": 20.0}}
    assert ratio(Row("t", "MB/s", True), faster, "rclone") == 2.0
    assert ratio(Row("r", "ms", False), faster, "rclone") == 2.0
    assert ratio(Row("t", "MB/s", True, compare=False), faster, "rclone") is None
    assert ratio(Row("t", "MB/s", True), faster, "library") is None  # not measured


def test_table_has_a_row_per_metric() -> None:
    text = table("s3", QUICK, {"mosaic": {"get_32MiB_mbps": 100.0}})
    assert "GET 32 MiB (MB/s)" in text and "mosaic/library" in text
    assert len(text.splitlines()) == len(rows(QUICK)) + 2
