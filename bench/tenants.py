"""Scale of the config: 1 tenant against many, in the same run (see README.md).

``.venv/bin/python bench/tenants.py [--tenants 1000] [--mounts 5] [--requests 2000]``

Two configs that differ only in the number of tenants (each with ``--mounts``
local mounts, a login domain, a NetBIOS name, a host name, 3 users and a
permission rule); the measured user belongs to the LAST tenant, where a scan
would cost most. For each, in this order:

* ``check-config``: wall time and peak RSS (kernel ``ru_maxrss`` of the child);
* ``serve`` (``workers: 1``): time until it answers ``OPTIONS /`` and its RSS
  then, started alone: first on a fresh ``data_dir`` (which includes making the
  SQLite schema), then as restarts;
* both ``--starts`` times (default 5); the medians are shown;
* PROPFIND Depth 0 of ``/`` on one keep-alive connection, logged in as
  ``user@domain``: both servers are started again and take turns in ABBA
  rounds, so that noise hits both alike; the figures are the median and the
  90th percentile per request.

The ratio column is many/one: 1.00x means the number of tenants costs nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # as bench/run.py

import psutil
import yaml

from bench.davclient import Dav
from bench.servers import BIN, READY_TIMEOUT, free_port, password_hash, stop
from bench.settings import PASSWORD, USER

PROPFIND_BODY = (b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/>'
                 b"<getlastmodified/></prop></propfind>")


@dataclass
class Figures:
    check_seconds: float = 0.0
    check_rss_mib: float = 0.0
    first_listen_seconds: float = 0.0  # fresh data_dir: the SQLite schema is made too
    listen_seconds: float = 0.0  # a restart
    listen_rss_mib: float = 0.0
    propfind_ms: list[float] = field(default_factory=list)


def tenant(base: Path, index: int, mounts: int) -> dict[str, Any]:
    folder = base / f"t{index}"
    for name in ["root", *(f"m{m}" for m in range(mounts))]:
        (folder / name).mkdir(parents=True, exist_ok=True)
    return {
        "domains": [f"t{index}.example"],
        "netbios": [f"T{index}"],
        "hosts": [f"t{index}.files.example"],
        "root": {"type": "local", "root": str(folder / "root")},
        "mounts": {f"/m{m}": {"provider": {"type": "local", "root": str(folder / f"m{m}")}}
                   for m in range(mounts)},
        "groups": ["staff"],
        "users": {name: {"password_hash": password_hash(), "groups": ["staff"]}
                  for name in (USER, "alice", "bob")},
        "permissions": {"/m0": {"@staff": "write", "*": "none"}},
    }


def write_config(base: Path, tenants: int, mounts: int) -> Path:
    base.mkdir(parents=True)
    config = {
        "server": {"listen": f"127.0.0.1:{free_port()}", "data_dir": str(base / "data"),
                   "workers": 1, "log_level": "warning"},
        "tenants": {f"t{i}": tenant(base, i, mounts) for i in range(tenants)},
    }
    (base / "etc").mkdir()
    path = base / "etc" / "mosaic.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def check_config(path: Path, figures: Figures) -> None:
    start = time.perf_counter()
    process = subprocess.Popen([str(BIN / "mosaic"), "check-config", str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    figures.check_seconds = time.perf_counter() - start
    figures.check_rss_mib = usage.ru_maxrss / 1024
    if status != 0:
        assert process.stderr is not None
        raise RuntimeError(f"check-config {path}: {process.stderr.read().decode()}")


@contextmanager
def serving(path: Path, figures: Figures) -> Iterator[int]:
    port = int(yaml.safe_load(path.read_text())["server"]["listen"].rpartition(":")[2])
    start = time.perf_counter()
    log = (path.parent / "server.log").open("wb")
    process = subprocess.Popen([str(BIN / "mosaic"), "serve", "--config", str(path)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_listening(process, port)
        figures.listen_seconds = time.perf_counter() - start
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
        figures.listen_rss_mib = max(p.memory_info().rss for p in tree) / 2**20
        yield port
    finally:
        stop(process)
        log.close()


def wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosaic serve exited {process.returncode}")
        try:
            with Dav("127.0.0.1", port, "") as dav:
                if dav.request("OPTIONS", "/")[0] == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("mosaic serve did not answer")


def propfind_round(dav: Dav, requests: int, figures: Figures) -> None:
    for _ in range(requests):
        start = time.perf_counter()
        status, _ = dav.request("PROPFIND", "/", PROPFIND_BODY, {"Depth": "0"})
        figures.propfind_ms.append((time.perf_counter() - start) * 1000)
        if status != 207:
            raise RuntimeError(f"PROPFIND answered {status}")


def median_of_starts(path: Path, starts: int) -> Figures:
    """check-config and serve ``starts`` times each (the first serve on a fresh
    data_dir, the others restarts): the median of each figure."""
    samples = []
    for _ in range(starts):
        figures = Figures()
        check_config(path, figures)
        with serving(path, figures):
            pass
        samples.append(figures)
    median = Figures(**{name: statistics.median(getattr(f, name) for f in samples)
                        for name in ("check_seconds", "check_rss_mib", "listen_rss_mib")})
    median.first_listen_seconds = samples[0].listen_seconds
    median.listen_seconds = statistics.median(f.listen_seconds for f in samples[1:] or samples)
    return median


def measure(args: argparse.Namespace, work: Path) -> dict[int, Figures]:
    counts = sorted({1, args.tenants})
    figures = {n: Figures() for n in counts}
    paths = {n: write_config(work / f"{n}-tenants", n, args.mounts) for n in counts}
    for n in counts:  # each start on its own: nothing else of ours runs meanwhile
        figures[n] = median_of_starts(paths[n], args.starts)
        print(f"{n} tenant(s): check-config {figures[n].check_seconds:.2f} s, serve "
              f"{figures[n].first_listen_seconds:.2f} s, again "
              f"{figures[n].listen_seconds:.2f} s", file=sys.stderr)
    with ExitStack() as stack:
        clients = {}
        for n in counts:
            port = stack.enter_context(serving(paths[n], Figures()))
            login = f"{USER}@t{n - 1}.example"  # the last tenant: a scan's worst case
            clients[n] = stack.enter_context(Dav("127.0.0.1", port, _basic(login)))
            propfind_round(clients[n], 20, Figures())  # warm-up: login cached, imports done
        rounds = 10
        for index in range(rounds):
            # ABBA: whichever server goes second in a round is not always the same.
            for n in counts if index % 2 == 0 else counts[::-1]:
                propfind_round(clients[n], args.requests // rounds, figures[n])
    return figures


def _basic(login: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{login}:{PASSWORD}".encode()).decode()


def report(figures: dict[int, Figures]) -> str:
    one, many = figures[min(figures)], figures[max(figures)]
    rows = [
        ("check-config (s)", one.check_seconds, many.check_seconds),
        ("check-config peak RSS (MiB)", one.check_rss_mib, many.check_rss_mib),
        ("serve to listen, first (s)", one.first_listen_seconds, many.first_listen_seconds),
        ("serve to listen, restart (s)", one.listen_seconds, many.listen_seconds),
        ("serve RSS at listen (MiB)", one.listen_rss_mib, many.listen_rss_mib),
        ("PROPFIND d0 p50 (ms)", statistics.median(one.propfind_ms),
         statistics.median(many.propfind_ms)),
        ("PROPFIND d0 p90 (ms)", _p90(one.propfind_ms), _p90(many.propfind_ms)),
    ]
    head = f"{'metric':30} {'1 tenant':>10} {f'{max(figures):,} tenants':>14} {'many/one':>9}"
    lines = [head, "-" * len(head)]
    lines += [f"{name:30} {a:10.2f} {b:14.2f} {b / a:8.2f}x" for name, a, b in rows]
    return "\n".join(lines)


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--mounts", type=int, default=5, help="mounts per tenant")
    parser.add_argument("--requests", type=int, default=2000,
                        help="timed PROPFINDs per server (in 10 alternating rounds)")
    parser.add_argument("--starts", type=int, default=5,
                        help="check-config and serve runs per config (the median is shown)")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the scratch folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mosaic-bench-tenants-", dir=args.tmp) as tmp:
        figures = measure(args, Path(tmp))
    print(f"{args.tenants:,} tenants x {args.mounts} mounts against 1 tenant, "
          f"{args.requests:,} PROPFINDs each, load {os.getloadavg()[0]:.2f}")
    print(report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
