"""The measured workloads; each writes its figures into ``Bench.results``.

Every workload uses the same client code against every server; a wrong status
or a short answer raises (a fast error must never pass for a fast server).
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .data import listing_dir
from .davclient import Dav
from .load import LoadSpec, run_load
from .memory import RssProbe, mib
from .servers import Running
from .settings import KIB, MIB, Settings

WINDOWS_PROPS = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop>
<D:displayname/><D:getcontentlength/><D:getlastmodified/><D:resourcetype/><D:creationdate/>
</D:prop></D:propfind>"""
ALLPROP = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"""
XML = {"Content-Type": 'application/xml; charset="utf-8"'}
RESPONSE_TAG = re.compile(rb"<(?:[A-Za-z][\w.-]*:)?response[\s>]")
MAX_ERROR_SHARE = 0.01
PUT_BLOCK = bytes(range(256)) * (MIB // 256)


class BenchError(RuntimeError):
    pass


@dataclass
class Bench:
    """One column's server, its probe, and what was measured so far."""

    server: Running
    settings: Settings
    probe: RssProbe
    dav: Dav
    results: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def path(self, relative: str) -> str:
        return f"{self.server.column.prefix}/{relative}"

    def median(self, key: str, samples: list[float]) -> float:
        """The median, keeping every sample in the notes (to judge the noise)."""
        self.notes.setdefault("samples", {})[key] = [round(x, 4) for x in samples]
        return statistics.median(samples)

    def say(self, text: str) -> None:
        print(f"  [{self.server.column.name}] {text}", file=sys.stderr, flush=True)


def expect(status: int, wanted: tuple[int, ...], what: str) -> None:
    if status not in wanted:
        raise BenchError(f"{what}: HTTP {status}, expected {wanted}")


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# --- 1. PROPFIND Depth 1 ---------------------------------------------------

def _propfind_once(bench: Bench, path: str, body: bytes, count: int) -> tuple[float, int]:
    start = time.perf_counter()
    status, answer = bench.dav.request("PROPFIND", path, body, {"Depth": "1", **XML})
    seconds = time.perf_counter() - start
    expect(status, (207,), f"PROPFIND {path}")
    found = len(RESPONSE_TAG.findall(answer))
    if found != count + 1:
        raise BenchError(f"PROPFIND {path}: {found} responses, expected {count + 1}")
    return seconds, len(answer)


def propfind_listing(bench: Bench, count: int, body: bytes, key: str) -> None:
    """Median time and size of a Depth 1 PROPFIND of a folder of ``count`` files."""
    path = bench.path(listing_dir(count)) + "/"
    _propfind_once(bench, path, body, count)  # warm-up
    runs = [_propfind_once(bench, path, body, count) for _ in range(bench.settings.listing_runs)]
    bench.results[f"{key}_ms"] = bench.median(f"{key}_s", [s for s, _ in runs]) * 1000
    bench.results[f"{key}_kib"] = runs[-1][1] / KIB
    bench.say(f"{key}: {bench.results[f'{key}_ms']:.0f} ms, "
              f"{bench.results[f'{key}_kib']:.0f} KiB")


def listings(bench: Bench) -> None:
    for count in bench.settings.listing_sizes:
        propfind_listing(bench, count, WINDOWS_PROPS, f"propfind_{count}")
    first = bench.settings.listing_sizes[0]
    propfind_listing(bench, first, ALLPROP, f"propfind_allprop_{first}")


# --- 2 and 3. Concurrent small requests ------------------------------------

def concurrent(bench: Bench, key: str, spec: LoadSpec, warmup: LoadSpec) -> None:
    settings = bench.settings
    run_load(bench.dav, warmup, settings.clients, settings.warmup_seconds)
    result = run_load(bench.dav, spec, settings.clients, settings.load_seconds)
    bench.notes["errors"][key] = result.errors
    bench.notes["load_client"] = result.client
    if result.requests == 0 or result.errors > MAX_ERROR_SHARE * result.requests:
        bench.results[key] = None
        bench.say(f"{key}: {result.errors} errors in {result.requests} requests - no figure")
        return
    bench.results[key] = result.rate
    bench.say(f"{key}: {result.rate:,.0f} req/s ({result.requests:,} requests, {result.client})")


def _put_spec(bench: Bench, tag: str) -> LoadSpec:
    return LoadSpec("PUT", bench.path(f"write/put4k/{tag}"),
                    {"Content-Type": "application/octet-stream"},
                    b"x" * bench.settings.small_size, unique_names=True)


def small_requests(bench: Bench) -> None:
    propfind = LoadSpec("PROPFIND", bench.path("read/small.bin"), {"Depth": "0", **XML},
                        WINDOWS_PROPS)
    concurrent(bench, "propfind_d0_rps", propfind, propfind)
    get = LoadSpec("GET", bench.path("read/small.bin"))
    concurrent(bench, "get_small_rps", get, get)
    concurrent(bench, "put_small_rps", _put_spec(bench, "run"), _put_spec(bench, "warm"))


# --- 4. Single-stream transfers (with RSS growth) --------------------------

def _stream(bench: Bench, key: str, size: int, transfer: Callable[[], None], runs: int,
            cleanup: Callable[[], None] | None = None) -> None:
    """Median MB/s of ``runs`` transfers; RSS peak and growth over all of them."""
    bench.probe.reset()
    before = bench.probe.rss()
    times = []
    for _ in range(runs):
        times.append(timed(transfer))
        if cleanup:
            cleanup()
    seconds = bench.median(f"{key}_s", times)
    peak = bench.probe.peak()
    bench.results[f"{key}_mbps"] = size / seconds / 1e6
    bench.results[f"{key}_peak_mib"] = mib(peak)
    bench.results[f"{key}_growth_mib"] = mib(peak - before)
    bench.say(f"{key}: {size / seconds / 1e6:,.0f} MB/s, RSS +"
              f"{bench.results[f'{key}_growth_mib']:.1f} MiB")


def stream_get(bench: Bench, key: str, name: str, size: int, runs: int) -> None:
    path = bench.path(f"read/{name}")

    def transfer() -> None:
        status, received = bench.dav.get_stream(path)
        expect(status, (200,), f"GET {path}")
        if received != size:
            raise BenchError(f"GET {path}: {received} bytes, expected {size}")

    _stream(bench, key, size, transfer, runs)


def stream_put(bench: Bench, key: str, size: int, runs: int) -> None:
    """PUT a new file ``runs`` times; each is deleted (untimed) before the next."""
    path = bench.path(f"write/{key}.bin")

    def transfer() -> None:
        expect(bench.dav.put_stream(path, size, PUT_BLOCK), (200, 201, 204), f"PUT {path}")

    def cleanup() -> None:
        status, _ = bench.dav.request("DELETE", path)
        expect(status, (200, 204), f"DELETE {path}")

    _stream(bench, key, size, transfer, runs, cleanup)


def big_streams(bench: Bench) -> None:
    runs = bench.settings.stream_runs
    stream_get(bench, "get_big", "big.bin", bench.settings.big_size, runs)
    stream_put(bench, "put_big", bench.settings.big_size, runs)


def huge_streams(bench: Bench) -> None:
    """One transfer each: these are about memory, their MB/s goes to the JSON only."""
    stream_get(bench, "get_huge", "huge.bin", bench.settings.huge_size, 1)
    stream_put(bench, "put_huge", bench.settings.huge_size, 1)


# --- 5. Whole-folder MOVE and DELETE ---------------------------------------

def _move(bench: Bench, run: int) -> float:
    source, target = bench.path(f"move/src-{run}"), bench.path(f"move/dst-{run}")
    headers = {"Destination": bench.dav.url(target), "Overwrite": "F"}
    start = time.perf_counter()
    status, _ = bench.dav.request("MOVE", source, headers=headers)
    seconds = time.perf_counter() - start
    expect(status, (201, 204), f"MOVE {source}")
    return seconds


def _delete(bench: Bench, run: int) -> float:
    path = bench.path(f"delete/d-{run}")
    start = time.perf_counter()
    status, _ = bench.dav.request("DELETE", path)
    seconds = time.perf_counter() - start
    expect(status, (200, 204), f"DELETE {path}")
    return seconds


def tree_ops(bench: Bench) -> None:
    runs = range(bench.settings.tree_runs)
    moves = [_move(bench, run) for run in runs]
    deletes = [_delete(bench, run) for run in runs]
    bench.results["move_tree_s"] = bench.median("move_tree_s", moves)
    bench.results["delete_tree_s"] = bench.median("delete_tree_s", deletes)
    bench.say(f"MOVE {bench.results['move_tree_s']:.3f} s, "
              f"DELETE {bench.results['delete_tree_s']:.3f} s")


# --- 6. Peak RSS of the whole run ------------------------------------------

def record_peak(bench: Bench) -> None:
    bench.results["rss_peak_mib"] = mib(bench.probe.peak())
    bench.say(f"peak RSS {bench.results['rss_peak_mib']:.0f} MiB")


Workload = Callable[[Bench], None]
FULL_PLAN: list[tuple[str, Workload]] = [
    ("listings", listings), ("small_requests", small_requests), ("big_streams", big_streams),
    ("tree_ops", tree_ops), ("rss_peak", record_peak), ("huge_streams", huge_streams),
]
CONCURRENT_PLAN: list[tuple[str, Workload]] = [
    ("small_requests", small_requests), ("rss_peak", record_peak),
]


def run_plan(bench: Bench, plan: list[tuple[str, Workload]]) -> None:
    """Run the workloads in order, noting the server CPU seconds each one cost."""
    bench.notes.setdefault("cpu_s", {})
    bench.notes.setdefault("errors", {})
    bench.probe.reset()
    for name, workload in plan:
        bench.dav.reconnect()  # the last one may have sat idle through a load test
        cpu = bench.probe.cpu_seconds()
        workload(bench)
        bench.notes["cpu_s"][name] = round(bench.probe.cpu_seconds() - cpu, 3)
