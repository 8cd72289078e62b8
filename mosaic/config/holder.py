"""The running config, swapped atomically on reload.

``ConfigHolder.current`` is one immutable :class:`Config`; a reload builds a
new one and replaces the reference, so a request that has read ``current``
keeps a consistent view until it ends. A config that fails to load is logged
problem by problem and the running one stays.

Reloads are triggered by edits of the file (watchdog on its directory, so an
editor's write-to-temp-and-rename counts) and by SIGHUP. Both only drop a token
into a queue; one worker thread debounces the tokens and reloads, so a burst
of events becomes one reload and the signal handler does nothing that could
deadlock.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from mosaic.config.loader import ConfigError, load_config
from mosaic.config.schema import Config, ProviderSpec

log = logging.getLogger(__name__)

Listener = Callable[[Config], None]
DEBOUNCE_SECONDS = 0.3
REDACTED = "***"
_STOP = object()
#: server settings read once at start-up: a reload records them but cannot apply them
RESTART_ONLY = ("listen", "workers", "threads", "tls", "data_dir", "database_url",
                "access_log")
_FILE_EVENTS = frozenset({"modified", "created", "moved", "closed"})
_FILE_EVENT_TYPES = (FileModifiedEvent, FileCreatedEvent, FileMovedEvent, FileClosedEvent)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s]*@")


class ConfigHolder:
    """Holds the current config and reloads it from ``path`` on demand or on change."""

    def __init__(self, path: Path | None, initial: Config,
                 debounce_seconds: float = DEBOUNCE_SECONDS) -> None:
        self.path = Path(path).absolute() if path is not None else None
        self._current = initial
        self._debounce = debounce_seconds
        self._listeners: list[Listener] = []
        self._reload_lock = threading.Lock()
        # SimpleQueue.put is reentrant: safe to call from a signal handler.
        self._triggers: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._observer: Any = None
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
            try:
                new = load_config(self.path)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("config reload: %s", problem)
                log.error("config reload: %d problem(s), keeping the running config",
                          len(exc.problems))
                return False
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

    def watch(self) -> None:
        """Reload on edits of the file and on SIGHUP until :meth:`stop`."""
        if self._worker is not None:
            return
        self._worker = threading.Thread(target=self._run, name="mosaic-config-reload",
                                        daemon=True)
        self._worker.start()
        if self.path is not None:
            self._observer = Observer()
            # Only the kernel events that can change the file: without the filter
            # every open/read in the folder (data next to the config) wakes us.
            self._observer.schedule(_FileEvents(self.path, self.trigger), str(self.path.parent),
                                    event_filter=list(_FILE_EVENT_TYPES))
            self._observer.daemon = True
            self._observer.start()
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
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self._worker is not None:
            self._triggers.put(_STOP)
            self._worker.join(timeout=5)
            self._worker = None

    def _run(self) -> None:
        while self._triggers.get() is not _STOP:
            if not self._quiet():
                return
            try:
                self.reload()
            except Exception:  # the watcher must survive any reload failure
                log.exception("config reload failed")

    def _quiet(self) -> bool:
        """Wait until no trigger came for the debounce time; False on stop."""
        while True:
            try:
                token = self._triggers.get(timeout=self._debounce)
            except queue.Empty:
                return True
            if token is _STOP:
                return False


def _warn_restart_only(old: Config, new: Config) -> None:
    for name in RESTART_ONLY:
        if getattr(old.server, name) != getattr(new.server, name):
            log.warning("config reload: server.%s changed; it takes effect after a restart",
                        name)


class _FileEvents(FileSystemEventHandler):
    """Calls ``trigger`` for writes, creations and renames onto one file."""

    def __init__(self, path: Path, trigger: Callable[[], None]) -> None:
        self._path = os.path.normpath(path)
        self._trigger = trigger

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _FILE_EVENTS or event.is_directory:
            return
        touched = (event.src_path, getattr(event, "dest_path", "") or "")
        if any(os.path.normpath(os.fsdecode(p)) == self._path for p in touched if p):
            self._trigger()


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
