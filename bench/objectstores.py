"""Mosaic vs ``rclone serve webdav`` vs the store's own library, per object store.

For each store (see :mod:`bench.stores`), on one emulator and one bucket: the
bucket is filled by the library (so every server's first listing is cold),
then the library is measured, then Mosaic (the bucket as a tenant mount, one
worker, its own process, backend requests counted by :mod:`bench.counted_mosaic`),
then rclone. See README.md, "Object stores".
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psutil
import yaml

from .counted_mosaic import Counter, install, read_count
from .davclient import Dav
from .memory import RssProbe, _hwm_bytes, _reset_hwm, mib
from .objectstores_report import LEGEND, table
from .report import write_json
from .servers import READY_TIMEOUT, auth_header, free_port, password_hash, stop, tail
from .settings import MIB, PASSWORD, USER, human_size
from .stores import STORES, Pattern, Store
from .workloads import RESPONSE_TAG, WINDOWS_PROPS, XML

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LISTED_SIZE = 1024  # bytes per listed object
BLOCK = os.urandom(MIB)  # every upload repeats this incompressible block
Values = dict[str, float | None]


@dataclass(frozen=True)
class StoreSettings:
    sizes: tuple[int, ...]  # GET and PUT of one object of each size
    listing_sizes: tuple[int, ...]  # objects per listed folder
    stream_runs: int  # GET/PUT: median of this many
    warm_runs: int  # warm listings: median of this many
    mosaic_env: tuple[tuple[str, str], ...] = ()  # extra environment of Mosaic's process
    mount_options: tuple[tuple[str, Any], ...] = ()  # extra provider options of the mount


FULL = StoreSettings(sizes=(64 * MIB, 256 * MIB), listing_sizes=(1_000, 10_000),
                     stream_runs=3, warm_runs=5)
QUICK = StoreSettings(sizes=(32 * MIB,), listing_sizes=(1_000,), stream_runs=2, warm_runs=3)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def folder(count: int) -> str:
    return f"list/d{count}"


def big_key(size: int) -> str:
    return f"read/{human_size(size).replace(' ', '')}.bin"


def put_key(column: str, size: int) -> str:
    return f"write/{column}-{human_size(size).replace(' ', '')}.bin"


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# --- filling the bucket ---------------------------------------------------------

def populate(store: Store, settings: StoreSettings) -> None:
    """Everything the servers read, written by the library before they start."""
    for count in settings.listing_sizes:
        took = timed(lambda count=count: store.populate(folder(count), count,
                                                        BLOCK[:LISTED_SIZE]))
        say(f"  [{store.name}] {count:,} objects written in {took:.1f} s")
    for size in settings.sizes:
        store.put(big_key(size), Pattern(BLOCK, size))
    store.put_small("write/", b"")  # the folder the servers' PUTs go to


# --- the library column -----------------------------------------------------------

def library_column(store: Store, settings: StoreSettings, counter: Counter) -> Values:
    values: Values = {}
    for count in settings.listing_sizes:
        runs = [_library_listing(store, count, counter) for _ in range(settings.warm_runs + 1)]
        values[f"cold_{count}_ms"] = runs[0][0] * 1000
        values[f"warm_{count}_ms"] = median([seconds for seconds, _ in runs[1:]]) * 1000
        values[f"cold_{count}_calls"] = values[f"warm_{count}_calls"] = runs[0][1]
    meter = OwnMemory()
    values["rss_base_mib"] = mib(meter.rss())
    for size in settings.sizes:
        key = put_key("library", size)
        values.update(streams(meter, size, settings.stream_runs, Transfer(
            get=lambda size=size: store.get(big_key(size)),
            put=lambda key=key, size=size: store.put(key, Pattern(BLOCK, size)),
            cleanup=lambda key=key: store.purge(key), calls=counter.value)))
    values["rss_after_mib"] = mib(meter.rss())
    report(store, "library", values)
    return values


def _library_listing(store: Store, count: int, counter: Counter) -> tuple[float, int]:
    before = counter.value()
    start = time.perf_counter()
    entries = store.list(folder(count))
    seconds = time.perf_counter() - start
    calls = counter.value() - before
    if entries != count:
        raise RuntimeError(f"{store.name}: listed {entries} objects, expected {count}")
    return seconds, calls


@dataclass(frozen=True)
class Transfer:
    """One column's whole-object GET (returns bytes received) and PUT."""

    get: Callable[[], int]
    put: Callable[[], None]
    cleanup: Callable[[], None]  # untimed, after each PUT
    calls: Callable[[], int | None] = lambda: None  # backend requests so far, if counted


class Meter(Protocol):
    def rss(self) -> int: ...
    def reset(self) -> None: ...
    def peak(self) -> int: ...


class OwnMemory:
    """This process's RSS and high-water mark (the library column runs here)."""

    def rss(self) -> int:
        return int(psutil.Process().memory_info().rss)

    def reset(self) -> None:
        _reset_hwm(os.getpid())

    def peak(self) -> int:
        return max(_hwm_bytes(os.getpid()) or 0, self.rss())


def streams(meter: Meter, size: int, runs: int, transfer: Transfer) -> Values:
    """Median MB/s of ``runs`` GETs, then PUTs; the peak RSS during each kind and
    the backend requests per transfer (where counted)."""
    label = human_size(size).replace(" ", "")
    values: Values = {}
    for kind in ("get", "put"):
        meter.reset()
        runs_done = [_transfer_once(transfer, kind, size) for _ in range(runs)]
        values[f"{kind}_{label}_mbps"] = size / median([t for t, _ in runs_done]) / 1e6
        values[f"{kind}_{label}_rss_mib"] = mib(meter.peak())
        calls = [c for _, c in runs_done if c is not None]
        values[f"{kind}_{label}_calls"] = sum(calls) / len(calls) if calls else None
    return values


def _transfer_once(transfer: Transfer, kind: str, size: int) -> tuple[float, int | None]:
    """Seconds and backend requests of one GET or PUT; a PUT's cleanup is not counted."""
    before = transfer.calls()
    start = time.perf_counter()
    try:
        if kind == "get":
            if (received := transfer.get()) != size:
                raise RuntimeError(f"GET gave {received} bytes, expected {size}")
        else:
            transfer.put()
        seconds = time.perf_counter() - start
        after = transfer.calls()
    finally:
        if kind == "put":
            transfer.cleanup()
    return seconds, None if before is None or after is None else after - before


# --- the WebDAV columns -------------------------------------------------------------

@dataclass
class Served:
    """A WebDAV server on the bucket: its process, port and URL prefix."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    prefix: str  # the bucket's root in the URL space
    counter: Path | None  # backend request count, where it is known

    def dav(self) -> Dav:
        return Dav("127.0.0.1", self.port, auth_header())

    def calls(self) -> int | None:
        return read_count(self.counter) if self.counter else None


@dataclass(frozen=True)
class Launch:
    """How to start one WebDAV server on the bucket."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    prefix: str
    counter: Path | None = None


@contextmanager
def serving(launch: Launch, work: Path) -> Iterator[Served]:
    log = work / f"{launch.name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(launch.argv, stdout=out, stderr=subprocess.STDOUT, cwd=work,
                                   env=launch.env, start_new_session=True)
    server = Served(launch.name, process, launch.port, launch.prefix, launch.counter)
    try:
        _wait_ready(server, log)
        yield server
    finally:
        stop(process)


def _wait_ready(server: Served, log: Path) -> None:
    """Until PROPFIND Depth 0 of the bucket's root answers 207 (no listing of it)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{tail(log)}")
        with suppress(OSError), server.dav() as dav:
            status, _ = dav.request("PROPFIND", server.prefix + "/", headers={"Depth": "0"})
            if status != 207:
                raise RuntimeError(f"{server.name}: PROPFIND answered {status}")
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {READY_TIMEOUT:.0f} s")


def mosaic_launch(store: Store, work: Path, extra_env: dict[str, str],
                  mount_options: dict[str, Any] | None = None) -> Launch:
    """``mosaic serve`` (counted), one worker, the bucket mounted at ``store.mount``."""
    port = free_port()
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "data_dir": str(work / "data"),
                   "workers": 1, "log_level": "warning"},
        "tenants": {"bench": {
            "root": {"type": "local", "root": str(work / "root")},
            "mounts": {store.mount: {"provider": {**store.provider(), **(mount_options or {})}}},
            "users": {USER: {"password_hash": password_hash()}},
        }},
    }
    (work / "root").mkdir(parents=True, exist_ok=True)
    (work / "etc").mkdir(exist_ok=True)  # its own folder: Mosaic watches the config's
    path = work / "etc" / "mosaic.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    counter = work / "requests.count"
    argv = [sys.executable, "-m", "bench.counted_mosaic", str(counter), "serve",
            "--config", str(path)]
    env = {**os.environ, **extra_env, "PYTHONPATH": str(ROOT)}
    return Launch("mosaic", argv, env, port, store.mount, counter)


def rclone_launch(store: Store, work: Path) -> Launch:
    """``rclone serve webdav`` on an on-the-fly remote, its defaults."""
    port = free_port()
    argv = ["rclone", "serve", "webdav", "--addr", f"127.0.0.1:{port}", "--user", USER,
            "--pass", PASSWORD, store.rclone_remote()]
    env = store.rclone_env({**os.environ, "RCLONE_CONFIG": str(work / "rclone.conf")})
    return Launch("rclone", argv, env, port, "")


def dav_column(store: Store, launch: Launch, settings: StoreSettings, work: Path) -> Values:
    """Cold then warm listings (the first PROPFIND of each folder is cold), then
    GET and PUT with the server's peak RSS over all of them."""
    values: Values = {}
    with serving(launch, work) as server, server.dav() as dav:
        _connect_backend(server, dav)
        for count in settings.listing_sizes:
            values.update(_dav_listings(server, dav, count, settings.warm_runs))
        probe = RssProbe(server.process.pid)
        try:
            values["rss_base_mib"] = mib(probe.rss())
            for size in settings.sizes:
                values.update(streams(probe, size, settings.stream_runs,
                                      _dav_transfer(store, server, dav, size)))
            values["rss_after_mib"] = mib(probe.rss())  # what the process kept
        finally:
            probe.close()
    report(store, launch.name, values)
    return values


def _connect_backend(server: Served, dav: Dav) -> None:
    """One request that reaches the store but lists no measured folder: the cold
    listings then measure the listing, not the server's first connection to it."""
    path = f"{server.prefix}/read/"
    status, _ = dav.request("PROPFIND", path, WINDOWS_PROPS, {"Depth": "0", **XML})
    if status != 207:
        raise RuntimeError(f"{server.name}: PROPFIND {path}: HTTP {status}")


def _propfind(server: Served, dav: Dav, count: int) -> tuple[float, int | None]:
    """Seconds and backend requests of one PROPFIND Depth 1 of a folder of ``count``."""
    path = f"{server.prefix}/{folder(count)}/"
    before = server.calls()
    start = time.perf_counter()
    status, answer = dav.request("PROPFIND", path, WINDOWS_PROPS, {"Depth": "1", **XML})
    seconds = time.perf_counter() - start
    if status != 207 or len(RESPONSE_TAG.findall(answer)) != count + 1:
        raise RuntimeError(f"{server.name}: PROPFIND {path}: HTTP {status}, "
                           f"{len(RESPONSE_TAG.findall(answer))} responses, wanted {count + 1}")
    after = server.calls()
    return seconds, None if before is None or after is None else after - before


def _dav_listings(server: Served, dav: Dav, count: int, runs: int) -> Values:
    cold, cold_calls = _propfind(server, dav, count)
    warm = [_propfind(server, dav, count) for _ in range(runs)]
    calls = [c for _, c in warm if c is not None]
    return {f"cold_{count}_ms": cold * 1000,
            f"warm_{count}_ms": median([seconds for seconds, _ in warm]) * 1000,
            f"cold_{count}_calls": cold_calls,
            f"warm_{count}_calls": sum(calls) / len(calls) if calls else None}


def _dav_transfer(store: Store, server: Served, dav: Dav, size: int) -> Transfer:
    source = f"{server.prefix}/{big_key(size)}"
    key = put_key(server.name, size)

    def get() -> int:
        status, received = dav.get_stream(source)
        if status != 200:
            raise RuntimeError(f"{server.name}: GET {source}: HTTP {status}")
        return received

    def put() -> None:
        status = dav.put_stream(f"{server.prefix}/{key}", size, BLOCK)
        if status not in (200, 201, 204):
            raise RuntimeError(f"{server.name}: PUT {key}: HTTP {status}")

    def cleanup() -> None:
        dav.request("DELETE", f"{server.prefix}/{key}")  # so the server knows
        store.purge(key)  # and every version goes (moto keeps them in memory)

    return Transfer(get, put, cleanup, server.calls)


# --- one store, all columns ---------------------------------------------------------

COLUMNS = ("mosaic", "rclone", "library")


def run_store(store: Store, settings: StoreSettings, scratch: Path,
              library_calls: Counter) -> dict[str, Any]:
    """Every column on one emulator; a failed column is noted, the others still run."""
    columns: dict[str, Values] = {}
    failures: dict[str, str] = {}
    with ExitStack() as stack:
        started = timed(lambda: store.start(stack))
        say(f"[{store.name}] emulator and bucket ready in {started:.1f} s")
        populate(store, settings)

        def work(name: str) -> Path:
            path = scratch / store.name / name
            path.mkdir(parents=True, exist_ok=True)
            return path

        def served(name: str, launch: Callable[[Path], Launch]) -> Callable[[], Values]:
            return lambda: dav_column(store, launch(work(name)), settings, work(name))

        mosaic_env = dict(settings.mosaic_env)
        steps: dict[str, Callable[[], Values]] = {
            "library": lambda: library_column(store, settings, library_calls),
            "mosaic": served("mosaic", lambda path: mosaic_launch(store, path, mosaic_env,
                                                                dict(settings.mount_options))),
            "rclone": served("rclone", lambda path: rclone_launch(store, path)),
        }
        for name, step in steps.items():
            try:
                columns[name] = step()
            except Exception as exc:  # report it, keep the other columns
                failures[name] = f"{type(exc).__name__}: {exc}"
                say(f"  [{store.name}/{name}] FAILED: {failures[name]}")
    return {"columns": columns, "failures": failures}


def report(store: Store, column: str, values: Values) -> None:
    shown = ", ".join(f"{key} {value:,.1f}" for key, value in values.items()
                      if value is not None)
    say(f"  [{store.name}/{column}] {shown}")


# --- the command ----------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="one 32 MiB object, 1,000 listed objects, fewer runs")
    parser.add_argument("--stores", default=None,
                        help=f"comma-separated, of {','.join(STORES)} (default: every one "
                             "this checkout can run)")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "objectstores.json",
                        help="where to write the results")
    parser.add_argument("--mosaic-env", action="append", default=[], metavar="NAME=VALUE",
                        help="set this in Mosaic's environment only, e.g. "
                             "MALLOC_MMAP_THRESHOLD_=1048576 (repeatable)")
    parser.add_argument("--mount-option", action="append", default=[], metavar="NAME=VALUE",
                        help="a provider option of Mosaic's mount, e.g. transfers=2 "
                             "(the value is read as YAML; repeatable)")
    parser.add_argument("--sizes-mib", default=None, metavar="N,N",
                        help="GET/PUT object sizes instead of the profile's, e.g. 256")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="parent folder of the scratch data (default: the system temp dir)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.mosaic_env + args.mount_option):
        parser.error("--mosaic-env and --mount-option take NAME=VALUE")
    if args.stores is None:
        args.stores = ",".join(name for name, store in STORES.items() if not store.missing())
    for name in args.stores.split(","):
        if name not in STORES:
            parser.error(f"unknown store {name}; choose from {', '.join(STORES)}")
        if missing := STORES[name].missing():
            parser.error(f"{name} cannot run here: {', '.join(missing)} not found")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = dataclasses.replace(
        QUICK if args.quick else FULL,
        mosaic_env=tuple(tuple(item.split("=", 1)) for item in args.mosaic_env))  # type: ignore[misc]
    options = [item.split("=", 1) for item in args.mount_option]
    settings = dataclasses.replace(settings, mount_options=tuple(
        (name, yaml.safe_load(value)) for name, value in options))
    if args.sizes_mib:
        sizes = tuple(int(size) * MIB for size in args.sizes_mib.split(","))
        settings = dataclasses.replace(settings, sizes=sizes)
    started, load = time.monotonic(), os.getloadavg()[0]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mosaic-objbench-", dir=args.tmp) as scratch:
        library_calls = Counter(Path(scratch) / "library.count")
        install(library_calls)  # the libraries run in this process
        for name in args.stores.split(","):
            results[name] = run_store(STORES[name](), settings, Path(scratch), library_calls)
    tables = [table(name, settings, result["columns"]) for name, result in results.items()]
    failures = [f"FAILED {name}/{column}: {why}" for name, result in results.items()
                for column, why in result["failures"].items()]
    seconds = time.monotonic() - started
    text = "\n\n".join([LEGEND, *tables, *(["\n".join(failures)] if failures else [])])
    print(text)
    print(f"\n{seconds:.0f} s; 1-min load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end, {os.cpu_count()} CPUs; JSON: {args.json}")
    write_json(args.json, {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
        "settings": dataclasses.asdict(settings), "stores": results, "table": text,
        "seconds": round(seconds, 1),
    })
    return 1 if failures else 0
