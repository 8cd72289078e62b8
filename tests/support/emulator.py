"""What the tests' store emulators have in common: a port, waiting until one is
ready, stopping one, and one per test process.

moto, fake-gcs-server, Azurite and Swift run as child processes on loopback
ports of their own. Each module (moto.py, fakegcs.py, azurite.py, swift.py)
keeps what is its emulator's own: its command line and how to tell that it
answers. An emulator that is missing or does not come up is a failure, never
a skip.
"""

from __future__ import annotations

import atexit
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Generic, Self, TypeVar

import requests

READY_TIMEOUT_S = 30.0
POLL_S = 0.05

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url``: any answer, even an error, means it is up."""
    try:
        requests.get(url, timeout=1)
    except requests.ConnectionError:
        return False
    return True


def wait_until_ready(what: str, processes: Mapping[str, subprocess.Popen[bytes]],
                     ready: Callable[[], bool], timeout: float = READY_TIMEOUT_S,
                     last_words: Callable[[str], str] = lambda _name: "") -> None:
    """Poll ``ready`` until it is true. One of ``processes`` exiting meanwhile fails
    at once, with its ``last_words`` (the end of its log): waiting on is pointless."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                who, said = name if name == what else f"{what} {name}", last_words(name)
                raise RuntimeError(f"{who} exited with {process.returncode}"
                                   + (f": {said}" if said else ""))
        if ready():
            return
        time.sleep(POLL_S)
    raise RuntimeError(f"{what} not ready after {timeout} s")


def stop(process: subprocess.Popen[bytes], kill: bool = False, timeout: float = 5.0) -> None:
    """SIGTERM (the process may save and close) or SIGKILL (a crash); SIGKILL anyway
    when it has not ended after ``timeout``."""
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Emulator:
    """One emulator process on a fixed loopback port, which a test may stop, kill and
    start again on the same port. A subclass gives its ``name``, ``command`` and
    ``ready``."""

    name = "emulator"
    stop_timeout_s = 5.0

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the emulator answers requests (it is running)."""
        raise NotImplementedError

    def start(self) -> Self:
        # a file, not a pipe: nobody reads a chatty emulator's stderr until it dies
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self._process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                         stderr=self._stderr)
        try:
            wait_until_ready(self.name, {self.name: self._process}, self.ready,
                             last_words=lambda _name: self._last_words())
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def _last_words(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:].strip()

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash); nothing if not running."""
        process, self._process = self._process, None
        if process is not None:
            stop(process, kill, self.stop_timeout_s)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class OnePerProcess(Generic[T]):
    """A server this test process starts on first use, and stops when it exits."""

    def __init__(self, start: Callable[[], T], stop: Callable[[T], None]) -> None:
        self._start, self._stop = start, stop
        self._lock = threading.Lock()
        self._running: T | None = None

    def __call__(self) -> T:
        with self._lock:
            if self._running is None:
                self._running = self._start()
                atexit.register(self._stop, self._running)
            return self._running
