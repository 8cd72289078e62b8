"""The per-store table of ``bench/run_objectstores.py``: rows are metrics, columns
mosaic / rclone / library, then the ratios (> 1 means Mosaic is better)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .report import _cell
from .settings import human_size

if TYPE_CHECKING:
    from .objectstores import StoreSettings, Values

COMPARED = ("rclone", "library")


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    higher_is_better: bool
    digits: int = 0
    compare: bool = True  # False: no ratio (more requests per transfer is no loss)


def rows(settings: StoreSettings) -> list[Row]:
    found: list[Row] = []
    labels = [(human_size(size), human_size(size).replace(" ", "")) for size in settings.sizes]
    for shown, label in labels:
        found += [Row(f"get_{label}_mbps", f"GET {shown} (MB/s)", True),
                  Row(f"put_{label}_mbps", f"PUT {shown} (MB/s)", True)]
    for shown, label in labels:
        found += [Row(f"get_{label}_calls", f"backend calls, GET {shown}", False, 1, False),
                  Row(f"put_{label}_calls", f"backend calls, PUT {shown}", False, 1, False)]
    for count in settings.listing_sizes:
        found += [
            Row(f"cold_{count}_ms", f"PROPFIND d1 {count:,} cold (ms)", False),
            Row(f"warm_{count}_ms", f"PROPFIND d1 {count:,} warm (ms)", False, 1),
            Row(f"cold_{count}_calls", f"backend calls, {count:,} cold", False),
            Row(f"warm_{count}_calls", f"backend calls, {count:,} warm", False, 1),
        ]
    found.append(Row("rss_base_mib", "RSS before streaming (MiB)", False))
    for shown, label in labels:
        found += [Row(f"get_{label}_rss_mib", f"RSS peak, GET {shown} (MiB)", False),
                  Row(f"put_{label}_rss_mib", f"RSS peak, PUT {shown} (MiB)", False)]
    found.append(Row("rss_after_mib", "RSS after streaming (MiB)", False))
    return found


def ratio(row: Row, columns: dict[str, Values], other: str) -> float | None:
    """> 1 means Mosaic is better, whichever way the row points."""
    mine = columns.get("mosaic", {}).get(row.key)
    theirs = columns.get(other, {}).get(row.key)
    if not row.compare or mine is None or theirs is None:
        return None
    if mine == 0 or theirs == 0:  # call counts: 0 is best, a ratio of it is no number
        return None
    return mine / theirs if row.higher_is_better else theirs / mine


def table(store: str, settings: StoreSettings, columns: dict[str, Values]) -> str:
    names = ["mosaic", "rclone", "library"]
    header = [f"[{store}] metric", *names, *(f"mosaic/{other}" for other in COMPARED)]
    lines = [header]
    for row in rows(settings):
        cells = [_cell(columns.get(name, {}).get(row.key), row.digits) for name in names]
        ratios = [ratio(row, columns, other) for other in COMPARED]
        lines.append([row.label, *cells, *(_cell(r, 2) + ("x" if r else "") for r in ratios)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
            for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


LEGEND = """\
Ratios: > 1 means Mosaic is better (more MB/s, less time, fewer calls, less memory).
library = the store's Python SDK called directly with its defaults (whole-object GET/PUT,
paged listing); its cold/warm rows are its first and its median later listing, its calls
are listing pages, its RSS is the benchmark process's own. rclone's backend calls are not
counted (-). Mosaic: one worker process; its calls are every HTTP request it sent."""
