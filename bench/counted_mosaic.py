"""``mosaic serve`` that counts the HTTP requests its process sends to storage.

Run as ``python -m bench.counted_mosaic COUNTER_FILE serve --config FILE``.
The count lives in an 8-byte file mapped into memory, so the benchmark reads
it (:func:`read_count`) from its own process without asking the server
anything. Every object-store SDK sends through aiohttp (s3fs, adlfs, gcsfs)
or urllib3 (boto3, and python-swiftclient and the sync Azure and Google SDKs
through requests), so patching those two counts every backend call,
paginated listings page by page, whatever the store; SMB messages are counted
where smbprotocol hands them to its socket. With ``workers: 1``
Mosaic serves in this very process. The benchmark counts the libraries'
own requests in its own process the same way.
"""

from __future__ import annotations

import mmap
import struct
import sys
import threading
from pathlib import Path
from typing import Any

_FORMAT = "<q"


class Counter:
    """A request count shared through a mapped file."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(bytes(struct.calcsize(_FORMAT)))
        with path.open("r+b") as file:
            self._map = mmap.mmap(file.fileno(), struct.calcsize(_FORMAT))
        self._lock = threading.Lock()  # requests come from many threads
        self._count = 0
        self.path = path

    def bump(self) -> None:
        with self._lock:
            self._count += 1
            self._map[:] = struct.pack(_FORMAT, self._count)


    def value(self) -> int:
        return self._count


def read_count(path: Path) -> int:
    """The count so far (writes to a shared mapping are visible to read())."""
    return int(struct.unpack(_FORMAT, path.read_bytes())[0])


def install(counter: Counter) -> None:
    """Count every request sent by an aiohttp session or a urllib3 pool."""
    import aiohttp
    import urllib3.connectionpool

    sent_async = aiohttp.ClientSession._request

    async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.bump()
        return await sent_async(self, *args, **kwargs)

    pool = urllib3.connectionpool.HTTPConnectionPool
    sent = pool.urlopen

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.bump()  # a retry calls urlopen again: it is counted, as it is sent
        return sent(self, *args, **kwargs)

    aiohttp.ClientSession._request = counted_async  # type: ignore[method-assign]
    pool.urlopen = counted  # type: ignore[method-assign]
    _count_smb(counter)


def _count_smb(counter: Counter) -> None:
    """Every SMB message (or compound of them) sent: one round trip each."""
    try:
        from smbprotocol.transport import Tcp
    except ImportError:  # no smb extra installed: nothing to count
        return
    send = Tcp.send

    def counted(self: Any, header: Any) -> None:
        counter.bump()
        send(self, header)

    Tcp.send = counted  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    install(Counter(Path(argv[0])))
    from mosaic.cli import main as mosaic_main

    return mosaic_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
