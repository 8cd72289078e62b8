"""Where the time of an SMB GET and PUT goes: Mosaic against smbprotocol directly.

Run as ``.venv/bin/python -m bench.smb_profile [--sizes-mib 64,256] [--runs 3]``.
One private smbd (tests/support/samba.py), one folder of the ``conformance``
share; per size, GETs and PUTs (the median of ``--runs`` shown) by:

* ``library``: smbprotocol's smbclient in this process, as bench/stores.py's SMB
  column does (``buffering=0``, ``readinto`` and writes of Mosaic's default block);
* ``mosaic``: ``mosaic serve`` (one worker) with the folder as the mount ``/smb``,
  through bench/davclient.py's one-connection reader and writer; each PUT makes a
  new file, as run_objectstores.py's do.

Printed per transfer: MB/s, the CPU seconds of each process (the client, Mosaic,
smbd), Mosaic's peak RSS, and every SMB message sent and received by command and
size, counted where smbprotocol hands bytes to and takes them from its socket in
the process that talks SMB (with the socket receives a large message took).
Options: ``--perf`` (Linux perf, cpu-clock: C and kernel functions, where page
faults and copies show) or ``--py-spy PATH`` (Python functions) sample that
process during the last run of each transfer; ``--mosaic-env NAME=VALUE`` and
``--mount-option NAME=VALUE`` change Mosaic's side; ``--only library|mosaic``.
With ``SMB_PROFILE_ORDER=1`` in both environments (``--mosaic-env`` too) each
message sent is listed in order with the Mosaic and wsgidav frames that sent it.
Nothing here is a pass/fail figure: it is for reading, beside
``run_objectstores.py --stores smb``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

from .memory import RssProbe, mib
from .objectstores import BLOCK, OwnMemory, mosaic_launch, serving
from .settings import MIB
from .stores import SMB, Pattern
from .workloads import WINDOWS_PROPS, XML

COMMANDS = ("NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT",
            "CREATE", "CLOSE", "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO",
            "QUERY_DIRECTORY", "CHANGE_NOTIFY", "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK")


# --- the message trace (in whichever process talks SMB) ------------------------------

class Trace:
    """Every SMB message (or compound) sent or received: (direction, commands, bytes)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        #: (direction, commands, bytes, socket receives it took: received only, the
        #: sender's Mosaic frames with SMB_PROFILE_ORDER set, else "-")
        self.records: list[tuple[str, str, int, int, str]] = []
        self._lock = threading.Lock()

    def add(self, direction: str, data: Any, receives: int = 0, where: str = "-") -> None:
        raw = bytes(data) if not isinstance(data, bytes | bytearray | memoryview) else data
        record = (direction, "+".join(_commands(raw)), len(raw), receives, where)
        with self._lock:
            if self.path is None:
                self.records.append(record)
            else:
                with self.path.open("a") as out:
                    out.write(" ".join(map(str, record)) + "\n")

    def take(self) -> list[tuple[str, str, int, int, str]]:
        with self._lock:
            if self.path is None:
                taken, self.records = self.records, []
                return taken
            lines = self.path.read_text().splitlines() if self.path.exists() else []
            self.path.write_text("")
        return [(d, c, int(n), int(r), w) for d, c, n, r, w in (line.split() for line in lines)]


def _caller() -> str:
    """Where Mosaic sent from: its innermost frames, with SMB_PROFILE_ORDER set."""
    if not os.environ.get("SMB_PROFILE_ORDER"):
        return "-"
    frames = [f"{Path(f.filename).stem}.{f.name}" for f in traceback.extract_stack()
              if "/mosaic/" in f.filename or "wsgidav" in f.filename]
    return "<".join(reversed(frames[-6:])) or "-"


def _commands(raw: Any) -> list[str]:
    """The commands of one message, a compound's chain followed (plain SMB2 only)."""
    names, offset = [], 0
    while offset + 24 <= len(raw) and raw[offset:offset + 4] == b"\xfeSMB":
        command, = struct.unpack_from("<H", raw, offset + 12)
        names.append(COMMANDS[command] if command < len(COMMANDS) else str(command))
        following, = struct.unpack_from("<L", raw, offset + 20)
        if not following:
            break
        offset += following
    return names or ["ENCRYPTED" if raw[:4] == b"\xfdSMB" else "?"]


def install(trace: Trace) -> None:
    """Record at smbprotocol's socket: Tcp.send gets a message, Tcp.recv returns one."""
    import smbprotocol.transport as transport
    from smbprotocol.transport import Tcp

    send, recv = Tcp.send, Tcp.recv
    waits = [0]  # select() calls: one per socket receive of Tcp._recv

    class CountingSelect:
        def __getattr__(self, name: str) -> Any:
            return getattr(select, name)

        def select(self, *args: Any) -> Any:
            waits[0] += 1
            return select.select(*args)

    transport.select = CountingSelect()  # type: ignore[assignment]

    def traced_send(self: Any, header: Any) -> None:
        trace.add("sent", header if isinstance(header, bytes) else header.pack(), where=_caller())
        send(self, header)

    def traced_recv(self: Any, timeout: Any) -> bytes:
        waits[0] = 0
        data = recv(self, timeout)
        if data:
            trace.add("received", data, waits[0] - 1)  # the 4-byte length is one
        return data

    Tcp.send = traced_send  # type: ignore[method-assign]
    Tcp.recv = traced_recv  # type: ignore[method-assign]


def serve(argv: list[str]) -> int:
    """``python -m bench.smb_profile --serve TRACE serve --config FILE``: Mosaic, traced."""
    install(Trace(Path(argv[0])))
    from mosaic.cli import main as mosaic_main

    return mosaic_main(argv[1:])


def summary(records: list[tuple[str, str, int, int, str]]) -> str:
    """``sent 18: READ 16x113B, ...`` by command and size, then the socket receives
    that the received messages of 1 MiB or more took."""
    groups: dict[tuple[str, str, int], int] = collections.Counter(r[:3] for r in records)
    parts = []
    for direction in ("sent", "received"):
        mine = sorted(((c, n, k) for (d, c, n), k in groups.items() if d == direction),
                      key=lambda item: (-item[1] * item[2], item[0]))
        total = sum(k for _, _, k in mine)
        shown = ", ".join(f"{c} {k}x{_size(n)}" for c, n, k in mine)
        parts.append(f"{direction} {total}: {shown}")
    big = [r[3] for r in records if r[0] == "received" and r[2] >= MIB]
    if big:
        parts.append(f"socket receives per message of 1 MiB or more: {sum(big) / len(big):.1f} "
                     f"(min {min(big)}, max {max(big)})")
    return "\n      ".join(parts)


def _size(count: int) -> str:
    return f"{count / MIB:.2f}M" if count >= MIB // 4 else f"{count}B"


# --- CPU of the processes involved ---------------------------------------------------

class Cpu:
    """CPU seconds (user + system) of this process, Mosaic and smbd, between two marks,
    and the page faults of the process that talks SMB (``faults``: this one or Mosaic)."""

    def __init__(self, server: int | None, smbd: int) -> None:
        self._pids = {"mosaic": server, "smbd": smbd}
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        times = {"client": own.ru_utime + own.ru_stime}
        smb_talker = self._pids["mosaic"] or os.getpid()
        # /proc/PID/stat: minflt is the 10th field, after the name in parentheses
        times["faults"] = int(Path(f"/proc/{smb_talker}/stat").read_text()
                              .rpartition(")")[2].split()[7])
        for name, pid in self._pids.items():
            if pid is None:
                continue
            root = psutil.Process(pid)
            total = 0.0
            for process in (root, *root.children(recursive=True)):
                cpu = process.cpu_times()
                total += cpu.user + cpu.system
            times[name] = total
        return times

    def spent(self) -> dict[str, float]:
        end = self._now()
        return {name: end[name] - self._start[name] for name in end}


# --- py-spy ---------------------------------------------------------------------------

class Sampler:
    """py-spy (raw folded stacks) or perf (cpu-clock, C level and kernel) recording one
    process until :meth:`stop`; ``tool`` None: nothing."""

    def __init__(self, tool: tuple[str, str] | None, pid: int, out: Path) -> None:
        self._out, self._kind = out, tool[0] if tool else ""
        self._process = None
        if tool:
            kind, binary = tool
            argv = ([binary, "record", "--pid", str(pid), "-r", "250", "-f", "raw",
                     "--threads", "-o", str(out), "--nonblocking"] if kind == "py-spy" else
                    [binary, "record", "-e", "cpu-clock", "-F", "999", "-p", str(pid),
                     "-o", str(out), "-q", *(["-g"] if os.environ.get("SMB_PROFILE_CALLERS")
                                            else [])])
            self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # attached

    def stop(self) -> str:
        if self._process is None:
            return ""
        self._process.send_signal(signal.SIGINT)
        self._process.wait(30)
        if not self._out.exists():
            return f"({self._kind} wrote nothing)"
        if keep := os.environ.get("SMB_PROFILE_KEEP"):
            shutil.copy(self._out, Path(keep) / self._out.name)
        return hottest(self._out) if self._kind == "py-spy" else perf_top(self._out)


def perf_top(path: Path, top: int = 25) -> str:
    """perf's own-time table: share, shared object, symbol."""
    callers = bool(os.environ.get("SMB_PROFILE_CALLERS"))  # perf record -g: who called
    done = subprocess.run(["perf", "report", "-i", str(path), "--no-children", "--stdio",
                           "--sort", "dso,sym", "--percent-limit", "0.7",
                           *(["-G", "--call-graph=caller,0.5,2"] if callers else [])],
                          capture_output=True, text=True)
    rows = [line for line in done.stdout.splitlines() if line.strip() and line[0] != "#"]
    return "\n".join("    " + line.rstrip() for line in rows[:top * (8 if callers else 1)])


def hottest(path: Path, top: int = 18) -> str:
    """The functions with most samples: own (the leaf) and inclusive, per thread."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0].split(" (")[0][:40]] += count
        own[_short(frames[-1])] += count
        for frame in set(map(_short, frames[1:])):
            inclusive[frame] += count
    if not total:
        return "(no samples)"
    lines = [f"    {total} samples; threads: " + ", ".join(
        f"{name} {count / total:.0%}" for name, count in threads.most_common(4))]
    lines += ["    own time:"] + [f"      {count / total:6.1%}  {name}"
                                   for name, count in own.most_common(top)]
    lines += ["    inclusive:"] + [f"      {count / total:6.1%}  {name}"
                                    for name, count in inclusive.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``readinto (smbclient/_io.py:601)`` with the site-packages prefix cut."""
    for marker in ("site-packages/", "python3.11/", "/smbperf/", "/mosaic/"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            return head + "(" + tail.rpartition(marker)[2]
    return frame


# --- transfers ---------------------------------------------------------------------

def measure(label: str, action: Callable[[], Any], size: int, runs: int, cpu_of: Callable[[], Cpu],
            trace: Trace, spy: Callable[[str], Sampler], meter: Any = None,
            after: Callable[[], Any] = lambda: None) -> None:
    """``runs`` times ``action`` (then ``after``, untimed); the median run is shown,
    the profile of the last."""
    results = []
    if meter is not None:
        meter.reset()
    hot = ""
    for run in range(runs):
        trace.take()
        sampler = spy(f"{label}-{run}") if run == runs - 1 else None
        cpu = cpu_of()
        start = time.perf_counter()
        action()
        seconds = time.perf_counter() - start
        spent = cpu.spent()
        results.append((seconds, spent, trace.take()))
        if sampler:
            hot = sampler.stop()
        after()
    results.sort(key=lambda item: item[0])
    seconds, spent, records = results[len(results) // 2]
    rates = ", ".join(f"{size / r[0] / 1e6:.0f}" for r in results)
    faults = spent.pop("faults")
    cpu = ", ".join(f"{name} {value:.2f} s" for name, value in spent.items())
    cpu += f"; {faults / (size / MIB):,.0f} page faults per MiB"
    memory = "" if meter is None else \
        f"; RSS peak {mib(meter.peak()):.0f} MiB, after {mib(meter.rss()):.0f}"
    print(f"  {label}: {size / seconds / 1e6:.0f} MB/s (runs {rates}), {seconds:.2f} s; "
          f"CPU {cpu}{memory}")
    print(f"      {summary(records)}")
    if os.environ.get("SMB_PROFILE_ORDER"):  # the messages in the order sent, runs collapsed
        sent = [(c, w) for d, c, _, _, w in records if d == "sent"]
        for (command, where), group in itertools.groupby(sent):
            print(f"      {command} x{len(list(group))}  {where}")
    if hot:
        print(hot)
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        return serve(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes-mib", default="64,256")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--py-spy", default=None, metavar="PATH",
                        help="py-spy binary: sample the SMB-talking process per transfer")
    parser.add_argument("--perf", action="store_true",
                        help="perf record (cpu-clock) the SMB-talking process per transfer")
    parser.add_argument("--mount-option", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--mosaic-env", action="append", default=[], metavar="NAME=VALUE",
                        help="set in Mosaic's process only (repeatable)")
    parser.add_argument("--only", default="library,mosaic")
    parser.add_argument("--listing", type=int, default=0, metavar="N",
                        help="Mosaic lists a folder of N files (PROPFIND Depth 1, twice) "
                             "before streaming, as run_objectstores.py does")
    args = parser.parse_args(argv)
    import yaml

    spy_binary: tuple[str, str] | None = None
    if args.py_spy:
        spy_binary = ("py-spy", shutil.which(args.py_spy) or args.py_spy)
    elif args.perf:
        spy_binary = ("perf", shutil.which("perf") or "perf")
    sizes = [int(text) * MIB for text in args.sizes_mib.split(",")]
    options = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.mount_option)}
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="smbprof-") as scratch:
        store = SMB()
        store.start(stack)
        smbd = store.server._process.pid  # type: ignore[union-attr]
        store.put_small("write/", b"")
        if args.listing:
            store.populate("list", args.listing, BLOCK[:1024])
        for size in sizes:
            store.put(f"read/{size // MIB}.bin", Pattern(BLOCK, size))
        if "library" in args.only:
            trace = Trace()
            install(trace)
            print("library (smbprotocol in this process)")
            for size in sizes:
                mebi = size // MIB

                def spy(name: str) -> Sampler:
                    return Sampler(spy_binary, os.getpid(), Path(scratch) / f"lib-{name}.txt")

                measure(f"GET {mebi} MiB", lambda mebi=mebi: store.get(f"read/{mebi}.bin"), size,
                        args.runs, lambda: Cpu(None, smbd), trace, spy, OwnMemory())
                measure(f"PUT {mebi} MiB", lambda size=size: store.put("write/lib.bin",
                                                                       Pattern(BLOCK, size)),
                        size, args.runs, lambda: Cpu(None, smbd), trace, spy, OwnMemory(),
                        after=lambda: store.purge("write/lib.bin"))
        if "mosaic" in args.only:
            env = dict(item.split("=", 1) for item in args.mosaic_env)
            _mosaic(store, sizes, args.runs, Path(scratch), options, env, spy_binary, smbd,
                    args.listing)
    return 0


def _mosaic(store: SMB, sizes: list[int], runs: int, scratch: Path, options: dict[str, Any],
            env: dict[str, str], spy_binary: tuple[str, str] | None, smbd: int,
            listing: int = 0) -> None:
    work = scratch / "mosaic"
    work.mkdir()
    launch = mosaic_launch(store, work, env, options)
    trace_path = work / "smb.trace"
    argv = [sys.executable, "-m", "bench.smb_profile", "--serve", str(trace_path),
            *launch.argv[launch.argv.index("serve"):]]
    launch = launch.__class__(launch.name, argv, launch.env, launch.port, launch.prefix)
    print(f"mosaic (mount options {options or 'default'}, environment {env or 'as is'})")
    with serving(launch, work) as server, server.dav() as dav:
        pid = server.process.pid
        probe = RssProbe(pid)
        for _ in range(2 if listing else 0):
            status, _answer = dav.request("PROPFIND", f"{server.prefix}/list/", WINDOWS_PROPS,
                                          {"Depth": "1", **XML})
            if status != 207:
                raise RuntimeError(f"PROPFIND: {status}")
        print(f"  RSS before streaming {mib(probe.rss()):.0f} MiB")
        target = f"{server.prefix}/write/mosaic.bin"
        for size in sizes:
            mebi = size // MIB
            source = f"{server.prefix}/read/{mebi}.bin"

            def get(source: str = source, size: int = size) -> None:
                status, received = dav.get_stream(source)
                if status != 200 or received != size:
                    raise RuntimeError(f"GET: {status}, {received} bytes")

            def put(target: str = target, size: int = size) -> None:
                status = dav.put_stream(target, size, BLOCK)
                if status != 201:
                    raise RuntimeError(f"PUT: {status}")

            def spy(name: str) -> Sampler:
                return Sampler(spy_binary, pid, scratch / f"mosaic-{name}.txt")

            trace = Trace(trace_path)
            measure(f"GET {mebi} MiB", get, size, runs, lambda: Cpu(pid, smbd), trace, spy, probe)
            measure(f"PUT {mebi} MiB", put, size, runs, lambda: Cpu(pid, smbd), trace, spy, probe,
                    after=lambda: dav.request("DELETE", target))  # each PUT makes a new file
        probe.close()


if __name__ == "__main__":
    sys.exit(main())
