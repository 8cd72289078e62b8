"""The journal of a mount's moves, so one cut short is finished, never left half done.

An object store moves a file or folder by copying every object, then deleting
the sources. A process killed in between leaves both copies (or a part of the
destination). Before it starts, a move writes the list of its (source,
destination) pairs to a journal file under the data directory and holds an
exclusive ``flock`` on it while it runs; it removes the file when done. When
the mount is built again (a restart, another worker), every journal whose lock
is free belongs to a dead process: :meth:`MoveJournal.pending` hands it out,
and the mount finishes it (copies what is still at its source, deletes the
sources) before serving. Finishing is safe to repeat: a copy of an object still
at its source is the same copy again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Move:
    """One move: (source key, destination key, modification time to keep or None)."""

    pairs: list[tuple[str, str, float | None]]


class MoveJournal:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @contextmanager
    def recording(self, move: Move) -> Iterator[None]:
        """Journal ``move`` while the block runs; the record goes when it returns
        or raises (a raised move has rolled itself back); a killed one stays."""
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self._folder / f"{secrets.token_hex(8)}.json"
        with open(path, "w", encoding="utf-8") as record:
            fcntl.flock(record, fcntl.LOCK_EX)
            json.dump({"pairs": move.pairs}, record)
            record.flush()
            os.fsync(record.fileno())  # on disk before the first object is touched
            try:
                yield
            finally:
                path.unlink(missing_ok=True)

    def pending(self) -> Iterator[tuple[Path, Move]]:
        """Moves whose process died (their lock is free), each still locked by us
        while the caller finishes it; :meth:`done` removes it."""
        if not self._folder.is_dir():
            return
        for path in sorted(self._folder.glob("*.json")):
            try:
                record = open(path, encoding="utf-8")  # noqa: SIM115 (held across the yield)
            except FileNotFoundError:
                continue  # finished meanwhile
            with record:
                try:
                    fcntl.flock(record, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is still moving
                move = self._read(path, record.read())
                if move is not None:
                    yield path, move

    def _read(self, path: Path, text: str) -> Move | None:
        try:
            pairs = [(str(src), str(dst), None if mtime is None else float(mtime))
                     for src, dst, mtime in json.loads(text)["pairs"]]
        except (ValueError, KeyError, TypeError):
            # A record cut off while being written: its move never touched an object.
            log.warning("move journal %s is unreadable; set aside", path.name)
            path.rename(path.with_suffix(".unreadable"))
            return None
        return Move(pairs)

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)
