"""Resident memory and CPU time of a server process and all its children.

Peaks come from the kernel's high-water mark (``VmHWM``), which
``/proc/PID/clear_refs`` resets, so a short spike between two samples is not
missed; a 10 Hz psutil sampler is the fallback where that is unavailable. For
several processes (Mosaic with workers) the peaks are summed: an upper bound.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from pathlib import Path

import psutil

from .settings import MIB

SAMPLE_SECONDS = 0.1


def _hwm_bytes(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssProbe:
    """Current RSS, peak RSS since :meth:`reset`, and CPU seconds of a process tree."""

    def __init__(self, pid: int) -> None:
        self._root = psutil.Process(pid)
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()

    def processes(self) -> list[psutil.Process]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for process in self.processes():
            with suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes():
            with suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def reset(self) -> None:
        """Start a new peak measurement from the current RSS."""
        for process in self.processes():
            _reset_hwm(process.pid)
        self._sampled_peak = self.rss()

    def peak(self) -> int:
        marks = [_hwm_bytes(process.pid) for process in self.processes()]
        kernel = sum(mark for mark in marks if mark is not None)
        return max(kernel, self._sampled_peak, self.rss())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sampled_peak = max(self._sampled_peak, self.rss())


class StealMeter:
    """Share of the machine's CPU time the hypervisor took (steal) since creation."""

    def __init__(self) -> None:
        self._start = psutil.cpu_times()

    def share(self) -> float:
        end = psutil.cpu_times()
        total = sum(end) - sum(self._start)
        stolen = getattr(end, "steal", 0.0) - getattr(self._start, "steal", 0.0)
        return stolen / total if total > 0 else 0.0


def mib(size: int) -> float:
    return size / MIB
