"""Streaming transfers of one object: streamed reads, streamed or parallel-part writes.

Each keeps memory bounded whatever the object's size: a reader holds at most
``ahead`` chunks, a streamed writer ``capacity`` bytes, a parted writer
``transfers`` parts in flight plus the one being filled.
"""

from __future__ import annotations

import errno
import io
import queue
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from mosaic.core.errors import FileTooLargeError

OpenStream = Callable[[int], Iterator[bytes]]  # start -> the object's bytes from there on

_END = object()  # the pump's last item: the stream is exhausted


class StreamedReader(io.RawIOBase):
    """A seekable reader of one object of known ``size`` over streamed GETs.

    One request streams the object from the read position to its end; a
    thread pulls it ``ahead`` chunks in front of the client, so the store's
    and the client's connections are busy at the same time. A seek elsewhere
    (a ranged GET, a client resuming) closes that stream and opens another
    at the new position. A store re-reads an object for each ranged request
    (moto, Azurite): one stream is both its cheapest and fastest read.
    """

    def __init__(self, open_stream: OpenStream, size: int, ahead: int) -> None:
        super().__init__()
        self._open_stream, self._size, self._ahead = open_stream, size, max(1, ahead)
        self._pos = 0
        self._pump: _Pump | None = None
        self._buffer, self._offset = b"", 0  # the chunk being handed out, and where

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        if base + offset != self._pos:
            self._stop_pump()
            self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes, fewer only at the end of the object."""
        if size is None or size < 0:
            size = max(0, self._size - self._pos)
        pieces = []
        while size > 0 and self._pos < self._size:
            piece = self._next_piece(size)
            if not piece:
                raise OSError(errno.EIO, f"the object ended at {self._pos} of {self._size} bytes")
            pieces.append(piece)
            size -= len(piece)
            self._pos += len(piece)
        return b"".join(pieces) if len(pieces) != 1 else pieces[0]

    def readall(self) -> bytes:
        return self.read(-1)

    def _next_piece(self, size: int) -> bytes:
        if self._offset >= len(self._buffer):
            if self._pump is None:
                self._pump = _Pump(self._open_stream, self._pos, self._ahead)
            self._buffer, self._offset = self._pump.next_chunk(), 0
        piece = self._buffer[self._offset:self._offset + size]
        self._offset += len(piece)
        return piece

    def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.stop()
            self._pump = None
        self._buffer, self._offset = b"", 0

    def close(self) -> None:
        if not self.closed:
            self._stop_pump()
        super().close()


class _Pump:
    """A thread moving one stream's chunks into a queue ``ahead`` chunks deep.

    The thread alone touches the stream (a generator must not be closed from
    another thread while it runs) and closes it when done or stopped.
    """

    def __init__(self, open_stream: OpenStream, start: int, ahead: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(ahead)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(open_stream, start),
                                        name="mosaic-read", daemon=True)
        self._thread.start()

    def _run(self, open_stream: OpenStream, start: int) -> None:
        try:
            chunks = open_stream(start)
            try:
                for chunk in chunks:
                    # stopped: the put may have gone through only because stop()
                    # emptied the queue; the stream is not read any further
                    if not self._put(chunk) or self._stopped.is_set():
                        return
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            self._put(_END)
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)

    def _put(self, item: Any) -> bool:
        """Queue ``item`` unless the reader went away; False once stopped."""
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def next_chunk(self) -> bytes:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # a read past the end sees the end again
            return b""
        if isinstance(item, BaseException):
            self._queue.put(item)
            raise item
        return item

    def stop(self) -> None:
        self._stopped.set()
        with suppress(queue.Empty):  # free a thread blocked on a full queue at once
            while True:
                self._queue.get_nowait()


class PartedUpload(ABC):
    """One object uploaded in numbered parts (multipart upload, staged blocks,
    segments), published by :meth:`finish`; a store supplies these four calls."""

    #: False: parts are sent one at a time and in order (a resumable session)
    concurrent: bool = True

    #: the largest object :meth:`put_stream` takes (0: this store cannot stream one)
    stream_limit: int = 0
    #: the most parts one object may have (0: no limit)
    max_parts: int = 0
    #: False: more parts still publish (Swift nests manifests); ``max_parts``
    #: then only sizes the parts of an upload of known size
    max_parts_is_hard: bool = True

    @abstractmethod
    def put_whole(self, data: bytes) -> None:
        """The object fits one part: store it with one request (this publishes it)."""

    def put_stream(self, body: BodyPipe, length: int) -> None:
        """Store the object with one request whose ``length`` bytes are read from
        ``body`` as they are sent; never retried (they cannot be read twice). The
        store publishes it on the last byte; a body that fails first leaves nothing."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream a whole object")

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
        limit = self._upload.max_parts
        if limit and number > limit and self._upload.max_parts_is_hard:
            # Refused before it is sent: the store would refuse the part or the
            # publishing anyway, after the client sent all of it.
            raise FileTooLargeError("", f"more than {limit:,} parts of "
                                    f"{self._part_size >> 20} MiB (part_size_mib)")
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


class BodyPipe:
    """The body of one streamed request: what the client sends, read by the
    thread sending the request, at most ``capacity`` bytes waiting between them.

    Not seekable and without ``tell``: an HTTP library that wants to rewind it
    for a retry fails instead of sending a short or doubled body.
    """

    def __init__(self, length: int, capacity: int) -> None:
        self._length, self._capacity = length, max(1, capacity)
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # into the first chunk
        self._waiting = 0  # bytes put and not yet read
        self._taken = 0  # bytes read
        self._failure: BaseException | None = None  # the writer gave up: reads raise it
        self._closed = False  # the reader is done: puts fail
        self._changed = threading.Condition()

    def __len__(self) -> int:  # HTTP libraries take the Content-Length from it
        return self._length

    def put(self, data: bytes) -> None:
        """Queue ``data``, waiting while the pipe is full; BrokenPipeError once
        the request ended."""
        with self._changed:
            while self._waiting >= self._capacity and not self._closed:
                self._changed.wait()
            if self._closed:
                raise BrokenPipeError(errno.EPIPE, "the request to the store ended")
            self._chunks.append(data)
            self._waiting += len(data)
            self._changed.notify_all()

    def fail(self, exc: BaseException) -> None:
        """The body will not be complete: the reader raises ``exc``, which cuts
        the request off before its last byte."""
        with self._changed:
            self._failure = exc
            self._changed.notify_all()

    def read(self, size: int = -1) -> bytes:
        with self._changed:
            while self._failure is None and not self._chunks and self._taken < self._length:
                self._changed.wait()
            if self._failure is not None:
                raise self._failure
            if not self._chunks:
                return b""
            piece = self._take(size)
            self._changed.notify_all()
            return piece

    def _take(self, size: int) -> bytes:
        chunk = self._chunks[0]
        left = len(chunk) - self._offset
        if 0 <= size < left:
            piece = chunk[self._offset:self._offset + size]
            self._offset += size
        else:  # the rest of the chunk, uncopied where it is all of it
            piece = chunk[self._offset:] if self._offset else chunk
            self._chunks.popleft()
            self._offset = 0
        self._waiting -= len(piece)
        self._taken += len(piece)
        return piece

    def close(self) -> None:
        """The request is over: drop what waits, fail the writer's next put."""
        with self._changed:
            self._closed = True
            self._chunks.clear()
            self._waiting = 0
            self._changed.notify_all()


class StreamedWriter:
    """The client's upload, of announced size, as the body of one request.

    Memory holds ``capacity`` bytes whatever the size, and the store sees one
    request instead of parts (the fastest write where the client, not the
    store, sets the pace). The store publishes the object on its last byte:
    fewer bytes than announced fail :meth:`commit`, and :meth:`discard`
    before the last byte cuts the request off, leaving the previous version.
    """

    #: how long discard() waits for the cut-off request to end
    DISCARD_WAIT_S = 60.0

    def __init__(self, upload: PartedUpload, length: int, capacity: int) -> None:
        self._upload, self._length = upload, length
        self._pipe = BodyPipe(length, capacity)
        self._error: BaseException | None = None
        self._position = 0
        self._done = False
        self._sender = threading.Thread(target=self._send, name="mosaic-put", daemon=True)
        self._sender.start()

    def _send(self) -> None:
        try:
            self._upload.put_stream(self._pipe, self._length)
        except BaseException as exc:  # raised to the writer by its next call
            self._error = exc
        finally:
            self._pipe.close()

    def write(self, data: bytes) -> int:
        if self._position + len(data) > self._length:
            raise OSError(errno.EFBIG, f"more than the {self._length} bytes announced")
        try:
            self._pipe.put(bytes(data))
        except BrokenPipeError:
            self._sender.join()
            raise self._error or OSError(errno.EIO, "the store ended the upload early") from None
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:  # bytes go out as the request takes them
        return None

    def close(self) -> None:  # the caller decides between commit() and discard()
        return None

    def commit(self) -> None:
        if self._done:
            return
        if self._position != self._length:
            self.discard()
            raise OSError(errno.EIO, f"{self._position} of the {self._length} bytes "
                                     "announced were written")
        self._sender.join()
        self._done = True
        if self._error is not None:
            raise self._error

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        self._pipe.fail(OSError(errno.ECANCELED, "upload discarded"))
        self._sender.join(self.DISCARD_WAIT_S)
