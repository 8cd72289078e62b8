"""cheroot's WSGI gateway, closing the connection after a refused request body.

When an application answers before reading the body (a PUT refused for its
announced size, say), cheroot first reads and drops the rest of a
Content-Length body, all of it, so a client announcing 10 GiB over a quota
uploads 10 GiB for nothing; the rest of a chunked body it leaves on the
connection, to be read as the next request. An error answer that leaves body
unread closes the connection instead: nothing more is read from it.
"""

from __future__ import annotations

from typing import Any

from cheroot import wsgi


def _body_unread(rfile: Any) -> bool:
    if hasattr(rfile, "remaining"):  # Content-Length
        return bool(rfile.remaining)
    return not getattr(rfile, "closed", True)  # chunked: until its last chunk


class RefusedBodyGateway(wsgi.Gateway_10):
    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        write = super().start_response(status, headers, exc_info)
        if int(status[:3]) >= 400 and _body_unread(self.req.rfile):
            self.req.close_connection = True
        return write
