"""Sizes and durations of one benchmark run: the default and the ``--quick`` profile."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

USER = "bench"
PASSWORD = "bench-password-0123"
CLIENTS = 8


@dataclass(frozen=True)
class Settings:
    """What a run measures and how long it may take."""

    big_size: int  # single-stream GET/PUT
    huge_size: int  # the RSS-while-streaming check
    listing_sizes: tuple[int, ...]  # PROPFIND Depth 1 folders
    listing_runs: int  # median of this many timed PROPFINDs
    tree_runs: int  # MOVE/DELETE of a folder: median of this many
    stream_runs: int  # single-stream GET/PUT: median of this many
    tree_files: int  # files in the MOVE/DELETE folder
    load_seconds: int  # each concurrent workload (wrk takes whole seconds)
    warmup_seconds: int
    small_size: int = 4 * KIB
    clients: int = CLIENTS


FULL = Settings(big_size=256 * MIB, huge_size=1 * GIB, listing_sizes=(1_000, 10_000),
                listing_runs=5, tree_runs=3, stream_runs=3, tree_files=1_000, load_seconds=5,
                warmup_seconds=1)
QUICK = Settings(big_size=64 * MIB, huge_size=256 * MIB, listing_sizes=(1_000, 10_000),
                 listing_runs=3, tree_runs=2, stream_runs=3, tree_files=1_000, load_seconds=2,
                 warmup_seconds=1)


def human_size(size: int) -> str:
    """``268435456`` -> ``256 MiB``."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"
