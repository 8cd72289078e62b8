"""The running config, swapped atomically on reload.

``ConfigHolder.current`` is one immutable :class:`Config`; a reload builds a
new one and replaces the reference, so a request that has read ``current``
keeps a consistent view until it ends. A config that fails to load is logged
problem by problem and the running one stays.

Reloads are triggered by SIGHUP and by a change of the file or of a secret
file it names (``<key>_file``): a thread compares their status (inode, size,
times) every :data:`POLL_SECONDS`. Polling, not directory events: watching
the config's folder woke the worker for every write of a log file or of a
SQLite database kept in that folder (at debug level each wake-up logged a line
into the watched folder: a ~1 MB/s loop), and the status of a few files costs
microseconds. A replaced file (an editor's write-and-rename, a Kubernetes
ConfigMap's symlink swap) changes the status too. Signals and changes only
drop a token into a queue; that one thread debounces and reloads, so a burst
becomes one reload and the signal handler does nothing that could deadlock.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr

from mosaic.config.loader import ConfigError, load_config
from mosaic.config.schema import Config, ProviderSpec

log = logging.getLogger(__name__)

Listener = Callable[[Config], None]
DEBOUNCE_SECONDS = 0.3
#: How often the watched files' status is compared.
POLL_SECONDS = 1.0
REDACTED = "***"
_STOP = object()
#: server settings read once at start-up: a reload records them but cannot apply them
RESTART_ONLY = ("listen", "workers", "threads", "tls", "data_dir", "database_url",
                "access_log")
#: What tells one version of a file from another (None: missing or unreadable).
Signature = tuple[int, int, int, int, int] | None
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s]*@")


class ConfigHolder:
    """Holds the current config and reloads it from ``path`` on demand or on change."""

    def __init__(self, path: Path | None, initial: Config,
                 debounce_seconds: float = DEBOUNCE_SECONDS, *,
                 secret_files: Iterable[Path] = (), poll_seconds: float = POLL_SECONDS) -> None:
        """``secret_files``: those the initial config was read with (see load_config)."""
        self.path = Path(path).absolute() if path is not None else None
        self._current = initial
        self._debounce = debounce_seconds
        self._poll = poll_seconds
        self._watched = self._files_to_watch(secret_files)
        self._seen: dict[Path, Signature] = {}
        self._listeners: list[Listener] = []
        self._reload_lock = threading.Lock()
        # SimpleQueue.put is reentrant: safe to call from a signal handler.
        self._triggers: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._previous_sighup: Any = None
        self._sighup_installed = False

    @property
    def current(self) -> Config:
        return self._current

    def on_change(self, callback: Listener) -> None:
        """Call ``callback(new_config)`` after every reload that changed the config."""
        self._listeners.append(callback)

    def reload(self) -> bool:
        """Load the file; swap and notify on success, keep the running config on failure."""
        if self.path is None:
            log.info("running on the embedded default: no config file to reload")
            return False
        with self._reload_lock:  # ordered: listeners never see an older config last
            files: set[Path] = set()
            try:
                new = load_config(self.path, read_files=files)
            except ConfigError as exc:
                # Keep watching the old files too: the fix may come in either.
                self._watched |= self._files_to_watch(files)
                for problem in exc.problems:
                    log.error("config reload: %s", problem)
                log.error("config reload: %d problem(s), keeping the running config",
                          len(exc.problems))
                return False
            self._watched = self._files_to_watch(files)
            if new == self._current:
                log.info("config reload: %s unchanged", self.path)
                return True
            old, self._current = self._current, new
            log.info("config reloaded from %s", self.path)
            _warn_restart_only(old, new)
            log.debug("config now:\n%s", redacted_dump(new))
            self._notify(new)
        return True

    def _notify(self, config: Config) -> None:
        for listener in list(self._listeners):
            try:
                listener(config)
            except Exception:  # one broken listener must not starve the others
                log.exception("config change listener %r failed", listener)

    def _files_to_watch(self, secret_files: Iterable[Path]) -> frozenset[Path]:
        if self.path is None:
            return frozenset()
        return frozenset({self.path, *(Path(f).absolute() for f in secret_files)})

    def watch(self) -> None:
        """Reload on changes of the watched files and on SIGHUP until :meth:`stop`."""
        if self._worker is not None:
            return
        self._seen = _signatures(self._watched)
        self._worker = threading.Thread(target=self._run, name="mosaic-config-reload",
                                        daemon=True)
        self._worker.start()
        if threading.current_thread() is threading.main_thread():
            self._previous_sighup = signal.signal(signal.SIGHUP, self._on_sighup)
            self._sighup_installed = True

    def trigger(self) -> None:
        """Ask for a (debounced) reload; safe from any thread and from signal handlers."""
        self._triggers.put(True)

    def _on_sighup(self, _signum: int, _frame: Any) -> None:
        self.trigger()

    def stop(self) -> None:
        """Stop watching; restore the previous SIGHUP handler."""
        if self._sighup_installed and threading.current_thread() is threading.main_thread():
            # None means the old handler was not set from Python: fall back to the default.
            signal.signal(signal.SIGHUP, self._previous_sighup or signal.SIG_DFL)
            self._sighup_installed = False
        if self._worker is not None:
            self._triggers.put(_STOP)
            self._worker.join(timeout=5)
            self._worker = None

    def _run(self) -> None:
        while self._next_trigger() is not _STOP:
            seen = self._quiet()
            if seen is None:
                return
            try:
                self.reload()
            except Exception:  # the watcher must survive any reload failure
                log.exception("config reload failed")
            # The status from before the load: a change made while loading
            # shows as a change at the next poll. Files named for the first
            # time start from their current status.
            self._seen = {path: seen[path] if path in seen else _signature(path)
                          for path in self._watched}

    def _next_trigger(self) -> object:
        """Wait for a signal's token or a change of a watched file."""
        while True:
            try:
                return self._triggers.get(timeout=self._poll)
            except queue.Empty:
                if self.path is not None and _signatures(self._watched) != self._seen:
                    return True

    def _quiet(self) -> dict[Path, Signature] | None:
        """Wait until neither tokens nor file changes came for the debounce
        time; the files' status then, or None on stop."""
        seen = _signatures(self._watched)
        while True:
            try:
                token = self._triggers.get(timeout=self._debounce)
            except queue.Empty:
                now = _signatures(self._watched)
                if now == seen:
                    return seen
                seen = now
                continue
            if token is _STOP:
                return None


def _signatures(paths: Iterable[Path]) -> dict[Path, Signature]:
    return {path: _signature(path) for path in paths}


def _signature(path: Path) -> Signature:
    try:
        st = os.stat(path)  # follows links: a swapped link target is a change
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _warn_restart_only(old: Config, new: Config) -> None:
    for name in RESTART_ONLY:
        if getattr(old.server, name) != getattr(new.server, name):
            log.warning("config reload: server.%s changed; it takes effect after a restart",
                        name)


def redacted_dump(config: BaseModel) -> str:
    """YAML of ``config`` with every secret, and any password in a URL, as ``***``."""
    return yaml.safe_dump(_redacted(config), sort_keys=False, allow_unicode=True)


def _redacted(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, ProviderSpec):
        # The raw extras are not typed; the provider's Options know its secrets.
        return {"type": value.type, **_redacted(value.options())}
    if isinstance(value, BaseModel):
        return {name: _redacted(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<head>:{REDACTED}@", value)
    return value
