"""The uploads in flight on a local root, so that a killed process's are swept
at the mount's next start instead of filling the disk for a day.

An upload writes a hidden temp file next to its target and renames it into
place when complete. A process killed meanwhile leaves the temp file behind
(80 MiB, 8 GiB: whatever had arrived). Walking the whole tree at every mount's
start to find them would be too slow, so each upload leaves a marker here
naming its temp file, and holds an exclusive ``flock`` on the temp file for as
long as it is open. The kernel drops a lock with the process holding it: at
the next start, a marker whose temp file can be locked belongs to a dead
upload, and the file goes; one still locked is a live upload of another worker
or instance, and stays.

The register is a folder under the data directory, one per root (a digest of
its real path), holding one small file per upload: named after the temp file,
containing its path relative to the root.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


class UploadRegister:
    def __init__(self, data_dir: Path, root: str) -> None:
        digest = hashlib.sha256(os.fsencode(os.path.realpath(root))).hexdigest()[:32]
        self._folder = Path(data_dir) / "uploads" / digest

    def add(self, temp_rel: str) -> Path | None:
        """Record the temp file ``temp_rel`` (relative to the root); its marker.

        None if the register cannot be written: the upload itself must not
        fail for it (the day-old sweep of listings still finds the file).
        """
        marker = self._folder / os.path.basename(temp_rel)
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            marker.write_bytes(os.fsencode(temp_rel))
        except OSError:
            return None
        return marker

    @staticmethod
    def remove(marker: Path | None) -> None:
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink()

    def entries(self) -> Iterator[tuple[Path, str]]:
        """(marker, temp file relative to the root) of every recorded upload."""
        try:
            markers = list(self._folder.iterdir())
        except OSError:  # no upload ever recorded
            return
        for marker in markers:
            with contextlib.suppress(OSError):
                yield marker, os.fsdecode(marker.read_bytes())


def lock_for_writing(fd: int) -> None:
    """Mark the temp file ``fd`` as written by a live process (until it is closed)."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh O_EXCL file: never contended


def remove_if_abandoned(dir_fd: int, name: str) -> bool:
    """Unlink temp file ``name`` unless a live upload holds its lock; True when
    it is gone (removed now, or already)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return True  # published or discarded meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # By name: had the upload been published, its file would have another
        # name by now, never this one.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return True
    finally:
        os.close(fd)
