"""Streaming transfers of one object: parallel ranged reads, parallel parts.

Object stores answer one request at a few hundred MB/s at best; several in
flight multiply that. Both classes keep memory bounded whatever the object's
size: a reader holds at most ``ahead`` blocks, a writer at most ``transfers``
parts in flight plus the one being filled.
"""

from __future__ import annotations

import io
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any

ReadRange = Callable[[int, int], bytes]  # (start, end) -> bytes [start, end)


class ParallelReader(io.RawIOBase):
    """A seekable reader of one object of known ``size`` over ranged reads.

    A sequential run fetches ``block`` bytes at a time and, from its second
    block on, keeps up to ``ahead`` blocks in flight. The first fetch of a run
    is one block only, so a client reading a small range of a big file costs
    one request. A seek outside the fetched window starts a new run.
    """

    def __init__(self, read_range: ReadRange, size: int, block: int, ahead: int) -> None:
        super().__init__()
        self._read_range, self._size = read_range, size
        self._block, self._ahead = block, max(1, ahead)
        self._pos = 0
        self._next = 0  # where the next fetch of this run starts
        self._window: deque[tuple[int, int, Future[bytes]]] = deque()
        self._pool: ThreadPoolExecutor | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        position = base + offset
        if position < 0:
            raise OSError(22, "negative seek position")
        while self._window and self._window[0][1] <= position:
            self._window.popleft()[2].cancel()
        if not self._window or position < self._window[0][0]:
            self._drop_window()
            self._next = position
        self._pos = position
        return position

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes, fewer only at the end of the object."""
        if size is None or size < 0:
            return self.readall()
        pieces = []
        while size > 0 and self._pos < self._size:
            piece = self._read_in_block(size)
            pieces.append(piece)
            size -= len(piece)
        return b"".join(pieces) if len(pieces) != 1 else pieces[0]

    def _read_in_block(self, size: int) -> bytes:
        if not self._window:
            self._next = self._pos
            self._fetch(1)  # a new run: one block until it proves sequential
        start, end, future = self._window[0]
        data = future.result()
        chunk = data[self._pos - start:self._pos - start + size]
        self._pos += len(chunk)
        if self._pos >= end:
            self._window.popleft()
            self._fetch(self._ahead)
        return chunk

    def readall(self) -> bytes:
        return b"".join(iter(lambda: self.read(self._block), b""))

    def _fetch(self, depth: int) -> None:
        while len(self._window) < depth and self._next < self._size:
            start, end = self._next, min(self._next + self._block, self._size)
            self._window.append((start, end, self._submit(start, end)))
            self._next = end

    def _submit(self, start: int, end: int) -> Future[bytes]:
        if self._ahead == 1 or end - start >= self._size:  # nothing to overlap with
            future: Future[bytes] = Future()
            try:
                future.set_result(self._read_range(start, end))
            except BaseException as exc:
                future.set_exception(exc)
            return future
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._ahead, thread_name_prefix="mosaic-read")
        return self._pool.submit(self._read_range, start, end)

    def _drop_window(self) -> None:
        while self._window:
            self._window.popleft()[2].cancel()

    def close(self) -> None:
        if not self.closed:
            self._drop_window()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()


class PartedUpload(ABC):
    """One object uploaded in numbered parts (multipart upload, staged blocks,
    segments), published by :meth:`finish`; a store supplies these four calls."""

    #: False: parts are sent one at a time and in order (a resumable session)
    concurrent: bool = True

    @abstractmethod
    def put_whole(self, data: bytes) -> None:
        """The object fits one part: store it with one request (this publishes it)."""

    @abstractmethod
    def send_part(self, number: int, data: bytes) -> Any:
        """Send part ``number`` (1, 2, ...); may run on several threads at once.
        Returns what :meth:`finish` and :meth:`abort` need of it."""

    @abstractmethod
    def finish(self, tokens: list[Any]) -> None:
        """Publish the parts whose tokens are given, in part order."""

    @abstractmethod
    def abort(self, tokens: list[Any]) -> None:
        """Drop everything sent (``tokens`` of the parts that arrived); idempotent."""


class ParallelWriter:
    """Fills parts of ``part_size`` and sends up to ``transfers`` at once.

    A writer that gets ahead of the network blocks (memory stays bounded). A
    part that failed fails the next ``write`` or the ``commit``; nothing is
    visible before ``commit``, and ``discard`` drops every part sent.
    """

    def __init__(self, upload: PartedUpload, part_size: int, transfers: int) -> None:
        self._upload, self._part_size = upload, part_size
        self._transfers = max(1, transfers) if upload.concurrent else 1
        self._slots = threading.BoundedSemaphore(self._transfers)
        self._chunks: list[bytes] = []  # the part being filled, as the client sent it
        self._filled = 0
        self._position = 0
        self._parts: list[Future[Any]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._done = False

    def write(self, data: bytes) -> int:
        self._raise_failed_part()
        data = bytes(data)
        self._position += len(data)
        while self._filled + len(data) >= self._part_size:
            cut = self._part_size - self._filled
            self._chunks.append(data[:cut])
            data = data[cut:]
            self._send_filled()
        if data:
            self._chunks.append(data)
            self._filled += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:  # parts go out when full, not on flush
        return None

    def close(self) -> None:  # the caller decides between commit() and discard()
        return None

    def _take_chunks(self) -> bytes:
        """The part being filled as one buffer (its only copy; the pieces go)."""
        chunks, self._chunks, self._filled = self._chunks, [], 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _send_filled(self) -> None:
        number = len(self._parts) + 1
        if self._transfers == 1:
            future: Future[Any] = Future()
            self._parts.append(future)
            future.set_result(self._upload.send_part(number, self._take_chunks()))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._transfers, thread_name_prefix="mosaic-part")
        # Wait for a free slot before joining the part: memory holds at most
        # `transfers` parts in flight plus the one being filled.
        self._slots.acquire()
        self._parts.append(self._pool.submit(self._send_in_slot, number, self._take_chunks()))

    def _send_in_slot(self, number: int, chunk: bytes) -> Any:
        try:
            return self._upload.send_part(number, chunk)
        finally:
            self._slots.release()

    def _raise_failed_part(self) -> None:
        for future in self._parts:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def commit(self) -> None:
        if self._done:
            return
        if not self._parts:
            self._upload.put_whole(self._take_chunks())
        else:
            if self._filled:
                self._send_filled()
            self._upload.finish([future.result() for future in self._parts])
        self._done = True
        self._release()

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        tokens = []
        for future in self._parts:
            future.cancel()
            with suppress(BaseException):
                tokens.append(future.result())  # waits: no part may land after abort
        self._release()
        if self._parts:
            self._upload.abort(tokens)

    def _release(self) -> None:
        self._chunks, self._filled = [], 0
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
