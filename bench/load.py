"""Concurrent load: ``wrk`` when installed, else client threads.

Both keep one connection per client open, send Basic credentials on every
request and count answers outside 2xx as errors. A PUT load writes a new file
per request (``<path>-<client>-<n>.bin``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .davclient import Dav


@dataclass(frozen=True)
class LoadSpec:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    unique_names: bool = False  # append -<client>-<n>.bin to the path


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    client: str

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_load(dav: Dav, spec: LoadSpec, clients: int, seconds: int) -> LoadResult:
    if shutil.which("wrk"):
        return run_wrk(dav, spec, clients, seconds)
    return run_threads(dav, spec, clients, seconds)


# --- wrk -------------------------------------------------------------------

_LUA_UNIQUE = """
counter = 0
next_client = 0
function setup(thread)
  thread:set("client", next_client)
  next_client = next_client + 1
end
function request()
  counter = counter + 1
  return wrk.format(nil, wrk.path .. "-" .. client .. "-" .. counter .. ".bin")
end
"""


def _lua_string(value: str) -> str:
    """A Lua string literal; anything but printable ASCII as a decimal escape."""
    return '"' + "".join(ch if " " <= ch <= "~" and ch not in '"\\' else f"\\{ord(ch):03d}"
                         for ch in value) + '"'


def wrk_script(dav: Dav, spec: LoadSpec) -> str:
    lines = [f"wrk.method = {_lua_string(spec.method)}",
             f"wrk.headers[\"Authorization\"] = {_lua_string(dav.authorization)}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in spec.headers.items()]
    if spec.body:
        lines.append(f"wrk.body = {_lua_string(spec.body.decode('latin-1'))}")
    return "\n".join(lines) + (_LUA_UNIQUE if spec.unique_names else "\n")


def run_wrk(dav: Dav, spec: LoadSpec, clients: int, seconds: int) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(dav, spec))
    try:
        argv = ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--timeout", "30s",
                "-s", script.name, dav.url(spec.path)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    finally:
        Path(script.name).unlink()
    if done.returncode:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


def parse_wrk(output: str) -> LoadResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    seconds = float(done[2]) / (1000 if done[3] == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        output)
    errors = (int(bad[1]) if bad else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return LoadResult(int(done[1]), errors, seconds, "wrk")


# --- threads (fallback) ----------------------------------------------------

@dataclass
class _Tally:
    requests: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, requests: int, errors: int) -> None:
        with self.lock:
            self.requests += requests
            self.errors += errors


def _client_loop(dav: Dav, spec: LoadSpec, client: int, deadline: float, tally: _Tally) -> None:
    done = errors = 0
    with Dav(dav.host, dav.port, dav.authorization) as own:
        while time.monotonic() < deadline:
            path = f"{spec.path}-{client}-{done}.bin" if spec.unique_names else spec.path
            status, _ = own.request(spec.method, path, spec.body, spec.headers)
            done += 1
            errors += not 200 <= status < 300
    tally.add(done, errors)


def run_threads(dav: Dav, spec: LoadSpec, clients: int, seconds: float) -> LoadResult:
    tally = _Tally()
    start = time.monotonic()
    threads = [threading.Thread(target=_client_loop,
                                args=(dav, spec, index, start + seconds, tally))
               for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(tally.requests, tally.errors, time.monotonic() - start, "threads")
