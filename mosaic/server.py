"""Serving: cheroot on one port, one process or N workers sharing it.

With ``server.workers > 1`` the parent starts N processes that each bind the
same address with SO_REUSEPORT (the kernel spreads connections); locks live in
the database, so a lock taken through one worker is honoured by the others.
The parent forwards SIGHUP (reload) and SIGTERM/SIGINT (stop) and restarts a
worker that dies.
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
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from mosaic import logs
from mosaic.config.holder import ConfigHolder
from mosaic.config.schema import Config
from mosaic.front import admission

log = logging.getLogger(__name__)

# One thread serves one in-flight request; a file server needs a deep backlog.
REQUEST_QUEUE_SIZE = 256
CONNECTION_TIMEOUT = 60


def make_server(holder: ConfigHolder, reuse_port: bool) -> wsgi.Server:
    # Imported here: the supervisor never serves, so it stays small (~30 MiB
    # instead of the whole application's ~65 MiB).
    from mosaic.app import build_app
    from mosaic.front.request import FrontServer

    settings = holder.current.server
    server = FrontServer(
        (settings.host, settings.port),
        build_app(holder),
        numthreads=settings.threads,
        server_name="Mosaic",
        request_queue_size=REQUEST_QUEUE_SIZE,
        timeout=CONNECTION_TIMEOUT,
        reuse_port=reuse_port,
        limits=lambda: holder.current.server.limits,
    )
    server.keep_alive_conn_limit = max(10, settings.threads * 4)
    if settings.tls:
        server.ssl_adapter = _tls_adapter(settings.tls.cert, settings.tls.key)
    admission.install(server, holder)  # a client address's share of the threads
    return server


def _tls_adapter(cert: Path, key: Path) -> BuiltinSSLAdapter:
    adapter = BuiltinSSLAdapter(str(cert), str(key))
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    return adapter


def serve_in_process(holder: ConfigHolder, reuse_port: bool = False,
                     ready: threading.Event | None = None) -> None:
    """Run one server until SIGTERM/SIGINT (or ``stop()`` from another thread)."""
    server = make_server(holder, reuse_port)
    holder.watch()
    # stop() joins the serving loop: run it beside the handler, not inside it.
    _on_signal((signal.SIGTERM, signal.SIGINT),
               lambda *_: threading.Thread(target=server.stop, daemon=True).start())
    server.prepare()
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


def _on_signal(signals: tuple[int, ...], handler: Any) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            signal.signal(sig, handler)


def _worker_main(config_path: str | None, config: Config) -> None:
    logs.configure(config)  # a worker sets its own up, whatever the parent did
    holder = ConfigHolder(Path(config_path) if config_path else None, config)
    serve_in_process(holder, reuse_port=True)


class Supervisor:
    """Keeps ``workers`` processes serving; forwards reload and stop signals."""

    def __init__(self, config_path: Path | None, config: Config) -> None:
        self._path = str(config_path) if config_path else None
        self._config = config
        # fork: the supervisor is lean and has started no threads, and forked
        # workers need no re-import nor multiprocessing's resource tracker.
        self._context = multiprocessing.get_context("fork")
        self._workers: list[Any] = []
        self._stopping = False

    def _spawn(self) -> Any:
        process = self._context.Process(target=_worker_main, args=(self._path, self._config),
                                        daemon=False)
        process.start()
        return process

    def run(self) -> None:
        _on_signal((signal.SIGTERM, signal.SIGINT), self._stop)
        _on_signal((signal.SIGHUP,), self._forward_hup)
        self._workers = [self._spawn() for _ in range(self._config.server.workers)]
        log.info("%d workers listening on %s", len(self._workers), self._config.server.listen)
        while not self._stopping:
            time.sleep(0.5)
            for index, process in enumerate(self._workers):
                if not process.is_alive() and not self._stopping:
                    log.warning("worker %s exited (%s); restarting", process.pid,
                                process.exitcode)
                    self._workers[index] = self._spawn()
        for process in self._workers:
            process.join(timeout=10)

    def _forward_hup(self, *_: Any) -> None:
        for process in self._workers:
            if process.pid:
                _send(process.pid, signal.SIGHUP)

    def _stop(self, *_: Any) -> None:
        self._stopping = True
        for process in self._workers:
            if process.is_alive():
                process.terminate()


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


#: glibc's M_MMAP_THRESHOLD, and the size from which buffers get their own mapping
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024


def return_big_buffers_to_the_system() -> None:
    """Make glibc give transfer buffers (object-store parts, read blocks: MiBs
    each) their own mappings, returned to the system when freed. Left to
    itself glibc raises that threshold after the first big free and then
    serves parts from per-thread arenas it never shrinks: a worker's RSS
    climbed by ~100 MiB per large transfer and stayed (measured, bench/)."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own policy
        ctypes.CDLL(libc_name).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def serve(config_path: Path | None, config: Config) -> None:
    return_big_buffers_to_the_system()  # before forking: every worker inherits it
    if config.server.workers == 1:
        serve_in_process(ConfigHolder(config_path, config))
    else:
        Supervisor(config_path, config).run()
