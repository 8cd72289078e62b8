"""Serving: cheroot on one port, one process or N workers sharing it.

The starting process checks what serving needs (:mod:`mosaic.preflight`),
creates the database schema and binds the port, once and without
SO_REUSEPORT, before any worker exists: a second instance on the same address
fails at once with "address in use" instead of splitting the clients with the
first. With ``server.workers > 1`` it then becomes a supervisor whose forked
workers inherit that one socket (locks live in the database, so a lock taken
through one worker is honoured by the others). It forwards SIGHUP (reload) and
SIGTERM/SIGINT (stop) and restarts a worker that dies, unless workers keep
dying before they serve: then it stops with their error. Workers die with the
supervisor (PR_SET_PDEATHSIG), so a killed one leaves nobody serving.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from mosaic import logs, preflight
from mosaic.config.holder import ConfigHolder
from mosaic.config.schema import Config
from mosaic.front import admission
from mosaic.front.request import FrontServer
from mosaic.preflight import StartupError

log = logging.getLogger(__name__)

# One thread serves one in-flight request; a file server needs a deep backlog.
REQUEST_QUEUE_SIZE = preflight.LISTEN_BACKLOG
CONNECTION_TIMEOUT = 60
#: Workers in a row that die before serving, after which the supervisor gives up.
MAX_START_FAILURES = 3
#: Exit status of a worker that could not start, and of a supervisor that gave up.
START_FAILED = 3
_READY = "ready"
_PR_SET_PDEATHSIG = 1


class _Server(FrontServer):
    """The front end's server (mosaic.front.request), serving a socket bound
    before it when it is handed one."""

    listener: socket.socket | None = None

    def bind(self, family: int, type: int, proto: int = 0) -> socket.socket:
        if self.listener is None:
            return super().bind(family, type, proto)
        self.socket = self.listener
        self.bind_addr = self.resolve_real_bind_addr(self.listener)
        return self.listener


def make_server(holder: ConfigHolder, listener: socket.socket | None = None) -> wsgi.Server:
    """A server for the live config; on ``listener`` if given, else it binds itself."""
    # Imported here: only serving processes build the application.
    from mosaic.app import build_app

    settings = holder.current.server
    server = _Server(
        (settings.host, settings.port),
        build_app(holder),
        numthreads=settings.threads,
        server_name="Mosaic",
        request_queue_size=REQUEST_QUEUE_SIZE,
        timeout=CONNECTION_TIMEOUT,
        limits=lambda: holder.current.server.limits,
    )
    server.listener = listener
    server.keep_alive_conn_limit = max(10, settings.threads * 4)
    if settings.tls:
        server.ssl_adapter = _tls_adapter(settings.tls.cert, settings.tls.key)
    admission.install(server, holder)  # a client address's share of the threads
    return server


def _tls_adapter(cert: Path, key: Path) -> BuiltinSSLAdapter:
    adapter = BuiltinSSLAdapter(str(cert), str(key))
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    return adapter


def claim(config: Config, listener: socket.socket | None = None) -> socket.socket:
    """What serving needs, before any worker exists: the checks of
    :mod:`mosaic.preflight`, the database schema and the bound port (``listener``
    if the caller bound it already).

    Raises the first :class:`StartupError`.
    """
    problems = preflight.check(config)
    if problems:
        raise problems[0]
    # Bound before anything is created: a second instance changes nothing.
    listener = listener or preflight.bind(config.server)
    try:
        preflight.make_data_dir(config.server)
        _prepare_database(config)
    except BaseException:
        listener.close()
        raise
    return listener


def _prepare_database(config: Config) -> None:
    # Made here, once: workers creating a fresh SQLite database together raced
    # on "PRAGMA journal_mode=WAL" and one died with "database is locked".
    from sqlalchemy.exc import SQLAlchemyError

    from mosaic.dav.store import database_url, prepare_database

    key = "server.database_url" if config.server.database_url else "server.data_dir"
    try:
        prepare_database(database_url(config.server))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StartupError(key, f"cannot open the database: {reason}") from None


def start_serving(holder: ConfigHolder, listener: socket.socket | None = None) -> wsgi.Server:
    """Build and prepare the server (raises if it cannot); watch the config."""
    server = make_server(holder, listener)
    server.prepare()
    if listener is not None:
        # Non-blocking accept: all workers wake for a connection and one wins;
        # with cheroot's 1 s timeout the others would block in accept() for up
        # to a second while their own keep-alive clients wait.
        server.socket.settimeout(0)
    holder.watch()
    return server


def run_server(server: wsgi.Server, holder: ConfigHolder,
               ready: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop()`` from another thread)."""
    # stop() joins the serving loop: run it beside the handler, not inside it.
    _on_signal((signal.SIGTERM, signal.SIGINT),
               lambda *_: threading.Thread(target=server.stop, daemon=True).start())
    # Everything loaded so far lives as long as the process: keep it out of
    # the collector's full passes, which a 10,000-entry listing triggers and
    # which otherwise walk every module, schema and class again (tens of ms).
    gc.freeze()
    if ready is not None:
        ready.set()
    log.info("listening on %s", holder.current.server.listen)
    try:
        server.serve()
    finally:
        holder.stop()


def serve_in_process(holder: ConfigHolder, listener: socket.socket | None = None,
                     ready: threading.Event | None = None) -> None:
    run_server(start_serving(holder, listener), holder, ready)


def _on_signal(signals: tuple[int, ...], handler: Any) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            signal.signal(sig, handler)


def _die_with(supervisor_pid: int) -> None:
    """Have the kernel kill this worker when the supervisor dies, even by SIGKILL.

    SIGKILL, not SIGTERM: a supervisor that stops normally has already asked
    its workers to finish; this is for the one that was killed or crashed, and
    then certainty beats grace (a worker stuck in a lock would otherwise keep
    the port). Uploads cut short are swept at their mount's next start.
    """
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no prctl
        # The process's own symbols: find_library() would run ldconfig per worker.
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os._exit(0)


def _forget_supervisor_signals() -> None:
    """Drop the handlers fork copied from the supervisor (they act on its workers).

    Until the worker serves and installs its own: SIGTERM ends it at once; a
    terminal's Ctrl-C (SIGINT, sent to all) is left to the supervisor, which
    then stops its workers; a reload (SIGHUP) before serving has nothing to do.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _worker_main(holder: ConfigHolder, listener: socket.socket, supervisor_pid: int,
                 reports: Connection) -> None:
    _forget_supervisor_signals()
    _die_with(supervisor_pid)
    config = holder.current
    logs.configure(config)  # a worker sets its own up, whatever the parent did
    try:
        server = start_serving(holder, listener)
    except Exception as exc:  # any start-up failure: one line, no traceback
        reason = describe(exc)
        log.error("worker could not start: %s", reason)
        log.debug("worker start-up failure", exc_info=True)
        reports.send(reason)
        _exit_now(START_FAILED)
    reports.send(_READY)
    reports.close()
    run_server(server, holder)


def _exit_now(status: int) -> NoReturn:
    """Exit without waiting for threads: when prepare() fails to start its
    request threads (a thread or memory limit), those it did start are in no
    list cheroot keeps, wait for work for ever, and a normal exit waits for them."""
    logging.shutdown()  # flushes the handlers
    os._exit(status)


def describe(exc: BaseException) -> str:
    """One line saying what went wrong (type and first line of the message)."""
    return str(exc) if isinstance(exc, StartupError) else logs.in_words(exc)


@dataclass
class _Worker:
    process: Any
    reports: Connection
    ready: bool = False
    error: str | None = None

    def read_reports(self) -> bool:
        """Take what the worker said; True when it has just become ready."""
        became_ready = False
        with contextlib.suppress(EOFError, OSError):
            while self.reports.poll():
                message = self.reports.recv()
                if message == _READY:
                    became_ready = not self.ready
                    self.ready = True
                else:
                    self.error = str(message)
        return became_ready


class Supervisor:
    """Keeps ``workers`` processes serving one socket; forwards reload and stop
    signals; stops when workers keep failing before they serve."""

    def __init__(self, holder: ConfigHolder, listener: socket.socket) -> None:
        # Not watching yet: each worker watches (and reloads) on its own.
        self._holder = holder
        self._config = holder.current
        self._listener = listener
        # fork: the supervisor is lean and has started no threads, and forked
        # workers need no re-import nor multiprocessing's resource tracker.
        self._context = multiprocessing.get_context("fork")
        self._workers: list[_Worker] = []
        self._stopping = False
        self._start_failures = 0
        self.failure: str | None = None

    def _spawn(self) -> _Worker:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main, daemon=False,
            args=(self._holder, self._listener, os.getpid(), writer))
        process.start()
        writer.close()  # the worker's end: later workers must not inherit it
        return _Worker(process, reader)

    def run(self) -> int:
        """Supervise until stopped; the exit status (non-zero if it gave up)."""
        _on_signal((signal.SIGTERM, signal.SIGINT), self._stop)
        _on_signal((signal.SIGHUP,), self._forward_hup)
        self._workers = [self._spawn() for _ in range(self._config.server.workers)]
        log.info("%d workers listening on %s", len(self._workers), self._config.server.listen)
        while not self._stopping:
            time.sleep(0.2)
            for index, worker in enumerate(self._workers):
                if not self._stopping:
                    self._workers[index] = self._check(worker)
        for worker in self._workers:
            worker.process.join(timeout=10)
        if self.failure is None:
            return 0
        # Last, after the workers' own lines: the one line that says why.
        log.error("stopping: %d workers in a row failed to start: %s", self._start_failures,
                  self.failure)
        return START_FAILED

    def _check(self, worker: _Worker) -> _Worker:
        """The worker itself while it lives, else its replacement (or none: stop)."""
        if worker.read_reports():
            self._start_failures = 0
        if worker.process.is_alive():
            return worker
        worker.read_reports()  # it may have said "ready" just before dying
        worker.reports.close()
        if worker.ready:
            log.warning("worker %s exited (%s); restarting", worker.process.pid,
                        worker.process.exitcode)
            return self._spawn()
        self._start_failures += 1
        reason = worker.error or f"exit status {worker.process.exitcode}"
        if self._start_failures >= MAX_START_FAILURES:
            self.failure = reason
            self._stop()
            return worker
        log.warning("worker %s failed to start (%s); restarting", worker.process.pid, reason)
        return self._spawn()

    def _forward_hup(self, *_: Any) -> None:
        for worker in self._workers:
            if worker.process.pid:
                _send(worker.process.pid, signal.SIGHUP)

    def _stop(self, *_: Any) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.terminate()


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# glibc's mallopt() parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MIB = 1024 * 1024
#: Buffers from this size get mappings of their own, returned to the system when
#: freed: object-store parts (5 MiB and up). Smaller ones come from the heap and are
#: reused - SMB messages (an ``io_block_size`` of up to 4 MiB plus headers) above all.
MMAP_THRESHOLD = 5 * _MIB
#: Free memory the heap keeps at its top for the next buffers: smbprotocol's copies
#: of the messages a transfer has in flight (2 MiB each by default).
TRIM_THRESHOLD = 16 * _MIB
#: One heap (glibc arena) for every thread: glibc would make one per thread up to 8
#: per core, each keeping TRIM_THRESHOLD free (with two, a 10,000-entry listing left
#: RSS 11 MiB higher). The GIL serialises nearly every allocation anyway.
ARENA_MAX = 1


def return_big_buffers_to_the_system() -> None:
    """Make glibc give transfer buffers of object-store parts their own mappings,
    returned to the system when freed, and keep at most a bounded reserve for the
    rest. Left to itself glibc raises its mapping threshold after the first big
    free and then serves parts from per-thread arenas it never shrinks: a worker's
    RSS climbed by ~100 MiB per large transfer and stayed (measured, bench/). A
    mapping for every buffer from 1 MiB was the other extreme for SMB: smbprotocol
    copies each 4 MiB message about nine times, and each copy was a fresh mapping
    faulted in page by page (2,300 page faults per MiB read, two thirds of the
    process's CPU; bench/smb_profile.py)."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own policy
        libc = ctypes.CDLL(libc_name)
        for parameter, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                 (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                                 (_M_ARENA_MAX, ARENA_MAX)):
            libc.mallopt(parameter, value)


def serve(holder: ConfigHolder, listener: socket.socket) -> int:
    """Serve ``holder``'s config on ``listener`` (from :func:`claim`) until
    stopped; the exit status."""
    return_big_buffers_to_the_system()  # before forking: every worker inherits it
    if holder.current.server.workers > 1:
        return Supervisor(holder, listener).run()
    try:
        server = start_serving(holder, listener)
    except Exception as exc:  # one line, no traceback; nobody would restart us
        log.error("could not start: %s", describe(exc))
        log.debug("start-up failure", exc_info=True)
        _exit_now(START_FAILED)
    run_server(server, holder)
    return 0
