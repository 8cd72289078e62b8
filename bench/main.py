"""Runs every selected server through the workloads and reports (see README.md)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .data import make_source, prepare_served
from .memory import RssProbe, StealMeter
from .report import Values, flatness, goal_misses, metrics, ratio, summary, table, write_json
from .servers import Column, running, tree_dir
from .settings import FULL, QUICK, Settings
from .workloads import CONCURRENT_PLAN, FULL_PLAN, Bench, run_plan

HERE = Path(__file__).resolve().parent
COLUMNS = [
    Column("mosaic (root)", "mosaic"),
    Column("mosaic (mount)", "mosaic", prefix="/mnt"),
    Column("mosaic (2 workers)", "mosaic", workers=2, full=False),
    Column("wsgidav", "wsgidav"),
    Column("rclone", "rclone"),
]
FAMILIES = sorted({column.family for column in COLUMNS})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smaller files and shorter loads (about 1-2 minutes)")
    parser.add_argument("--only", default=",".join(FAMILIES),
                        help=f"comma-separated servers to run (default: {','.join(FAMILIES)})")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "latest.json",
                        help="where to write the results (default: bench/results/latest.json)")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="parent folder of the scratch data (default: the system temp dir)")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown server(s) {', '.join(sorted(unknown))}; choose from {FAMILIES}")
    return args


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_column(column: Column, source: Path, base: Path,
               settings: Settings) -> tuple[Values, dict[str, Any]]:
    """Fresh folder, fresh server process, the column's plan; then clean up.

    A failure is noted and the figures measured so far are kept, so that one
    broken server does not cost the other columns.
    """
    print(f"{column.name}:", file=sys.stderr, flush=True)
    load_before, steal = os.getloadavg()[0], StealMeter()
    work = base / _slug(column.name)
    results: Values = {}
    notes: dict[str, Any] = {}
    try:
        prepare_served(tree_dir(column, work), source, settings)
        with running(column, work) as server:
            bench = Bench(server, settings, RssProbe(server.pid), server.client(),
                          results, notes)
            try:
                run_plan(bench, FULL_PLAN if column.full else CONCURRENT_PLAN)
            finally:
                bench.probe.close()
                bench.dav.close()
    except Exception as exc:  # report it and keep the other columns
        notes["failure"] = f"{type(exc).__name__}: {exc}"
        print(f"  [{column.name}] FAILED: {notes['failure']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes["load_avg_1min"] = [load_before, os.getloadavg()[0]]
    notes["cpu_steal_share"] = round(steal.share(), 3)
    return results, notes


def _version(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return "not installed"
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).splitlines()[0].strip() if result.stdout \
        or result.stderr else "?"


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return {
        "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "python": sys.version.split()[0],
        "platform": platform.platform(), "mosaic_commit": commit,
        "wsgidav": version("wsgidav"), "cheroot": version("cheroot"),
        "rclone": _version(["rclone", "version"]), "wrk": _version(["wrk", "--version"]),
    }


def conditions(notes: dict[str, Any]) -> str:
    """One line per column: how busy the machine was while it ran."""
    lines = ["Machine while each column ran (1-min load average before/after, CPU steal):"]
    for name, note in notes.items():
        before, after = note.get("load_avg_1min", (0.0, 0.0))
        lines.append(f"  {name}: load {before:.2f} / {after:.2f}, "
                     f"steal {100 * note.get('cpu_steal_share', 0.0):.0f}%")
    return "\n".join(lines)


def ratios(settings: Settings, columns: dict[str, Values]) -> dict[str, dict[str, float | None]]:
    return {m.key: {other: ratio(m, columns, other) for other in ("wsgidav", "rclone")}
            for m in metrics(settings)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    chosen = [c for c in COLUMNS if c.family in args.only.split(",")]
    started, info = time.monotonic(), machine()
    columns: dict[str, Values] = {}
    notes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mosaic-bench-", dir=args.tmp) as scratch:
        print("generating the test tree ...", file=sys.stderr, flush=True)
        source = make_source(Path(scratch) / "source", settings)
        for column in chosen:
            columns[column.name], notes[column.name] = run_column(
                column, source, Path(scratch), settings)
    info["load_avg_end"] = os.getloadavg()
    info["seconds"] = round(time.monotonic() - started, 1)
    text = "\n".join([table(settings, columns), summary(settings, columns), conditions(notes)])
    print(text)
    print(f"\n{info['seconds']:.0f} s; load average at end {info['load_avg_end'][0]:.2f} "
          f"on {info['cpus']} CPUs; JSON: {args.json}")
    write_json(args.json, {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
        "settings": dataclasses.asdict(settings), "machine": info, "columns": columns,
        "notes": notes, "ratios": ratios(settings, columns),
        "goal_misses": goal_misses(settings, columns), "rss_flat": flatness(columns),
        "table": text,
    })
    return 1 if any("failure" in n for n in notes.values()) else 0
