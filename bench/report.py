"""The result table, the ratio columns, the goal check and the JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import Settings, human_size

MOSAIC_REFERENCE = ("mosaic (root)", "mosaic (mount)")
COMPETITORS = {"wsgidav": 3.0, "rclone": 1.0}  # goal: Mosaic at least this many times better
FLAT_TOLERANCE_MIB = 16.0
Values = dict[str, float | None]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    digits: int = 0
    ratio: bool = True  # False: near-zero values whose ratio means nothing


def metrics(settings: Settings) -> list[Metric]:
    big, huge = human_size(settings.big_size), human_size(settings.huge_size)
    first = settings.listing_sizes[0]
    rows = []
    for count in settings.listing_sizes:
        rows += [Metric(f"propfind_{count}_ms", f"PROPFIND d1 {count:,} files (ms)", False),
                 Metric(f"propfind_{count}_kib", f"PROPFIND d1 {count:,} size (KiB)", False)]
    return [
        *rows,
        Metric(f"propfind_allprop_{first}_ms", f"PROPFIND d1 allprop {first:,} (ms)", False),
        Metric("propfind_d0_rps", f"PROPFIND d0 x{settings.clients} (req/s)", True),
        Metric("get_small_rps", f"GET 4 KiB x{settings.clients} (req/s)", True),
        Metric("put_small_rps", f"PUT 4 KiB x{settings.clients} (req/s)", True),
        Metric("get_big_mbps", f"GET {big} (MB/s)", True),
        Metric("put_big_mbps", f"PUT {big} (MB/s)", True),
        Metric("move_tree_s", f"MOVE {settings.tree_files:,}-file folder (s)", False, 3),
        Metric("delete_tree_s", f"DELETE {settings.tree_files:,}-file folder (s)", False, 3),
        Metric("rss_peak_mib", "RSS peak, workloads (MiB)", False),
        Metric("get_huge_peak_mib", f"RSS peak, GET {huge} (MiB)", False),
        Metric("put_huge_peak_mib", f"RSS peak, PUT {huge} (MiB)", False),
        Metric("get_big_growth_mib", f"RSS growth, GET {big} (MiB)", False, 1, False),
        Metric("get_huge_growth_mib", f"RSS growth, GET {huge} (MiB)", False, 1, False),
        Metric("put_big_growth_mib", f"RSS growth, PUT {big} (MiB)", False, 1, False),
        Metric("put_huge_growth_mib", f"RSS growth, PUT {huge} (MiB)", False, 1, False),
    ]


def mosaic_value(metric: Metric, columns: dict[str, Values]) -> float | None:
    """The worse of the single-process Mosaic columns (a conservative reference)."""
    values = [v for name in MOSAIC_REFERENCE if (v := columns.get(name, {}).get(metric.key))]
    if not values:
        return None
    return min(values) if metric.higher_is_better else max(values)


def ratio(metric: Metric, columns: dict[str, Values], other: str) -> float | None:
    """> 1 means Mosaic is better, whichever way the metric points."""
    mine, theirs = mosaic_value(metric, columns), columns.get(other, {}).get(metric.key)
    if not metric.ratio or not mine or not theirs:
        return None
    return mine / theirs if metric.higher_is_better else theirs / mine


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(settings: Settings, columns: dict[str, Values]) -> str:
    names = list(columns)
    others = [name for name in COMPETITORS if name in columns]
    header = ["metric", *names, *(f"mosaic/{name}" for name in others)]
    rows = [header]
    for metric in metrics(settings):
        cells = [_cell(columns[name].get(metric.key), metric.digits) for name in names]
        ratios = [ratio(metric, columns, name) for name in others]
        rows.append([metric.label, *cells, *(_cell(r, 2) + ("x" if r else "") for r in ratios)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join([
        "Ratios: > 1 means Mosaic is better (faster, more req/s or MB/s, less memory or bytes);",
        "Mosaic = the worse of mosaic (root) and mosaic (mount), one worker process.",
        "", *lines])


def goal_misses(settings: Settings, columns: dict[str, Values]) -> list[str]:
    """Every ratio below its goal (>= 3x wsgidav, >= 1x rclone)."""
    misses = []
    for metric in metrics(settings):
        for other, goal in COMPETITORS.items():
            value = ratio(metric, columns, other)
            if value is not None and value < goal:
                misses.append(f"{metric.label}: mosaic/{other} = {value:.2f}x (goal {goal:g}x)")
    return misses


def flatness(columns: dict[str, Values]) -> dict[str, bool | None]:
    """Per column: does streaming the big and the huge file grow RSS alike (and little)?"""
    verdicts: dict[str, bool | None] = {}
    for name, values in columns.items():
        pairs = [(values.get(f"{kind}_big_growth_mib"), values.get(f"{kind}_huge_growth_mib"))
                 for kind in ("get", "put")]
        if any(big is None or huge is None for big, huge in pairs):
            verdicts[name] = None
            continue
        verdicts[name] = all(huge <= FLAT_TOLERANCE_MIB + max(big, 0.0) for big, huge in pairs)
    return verdicts


def summary(settings: Settings, columns: dict[str, Values]) -> str:
    misses = goal_misses(settings, columns)
    flat = flatness(columns)
    lines = ["", f"Goals (>= 3x wsgidav, >= 1x rclone): {len(misses)} miss(es)"]
    lines += [f"  MISS {miss}" for miss in misses]
    lines += [f"RSS flat while streaming (huge grows <= big + {FLAT_TOLERANCE_MIB:g} MiB): "
              + ", ".join(f"{name}: {'-' if ok is None else 'yes' if ok else 'NO'}"
                          for name, ok in flat.items())]
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
