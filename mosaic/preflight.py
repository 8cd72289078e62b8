"""What ``serve`` needs from the machine, checked before anything forks.

A worker that finds its certificate missing or its address taken can only die
and be restarted, again and again. So ``check-config`` and ``serve`` both check
here first, and each problem is one line naming the config key at fault:
``server.tls.cert: cannot read /etc/mosaic/cert.pem: No such file or directory``.

:func:`check` must not disturb a running server (``check-config`` runs it
beside one): it creates nothing and binds only an ephemeral port (is the host
an address of this machine?). ``serve`` then goes further: it binds the real
port, once, in the process that hands the socket to its workers
(:func:`bind`), and creates ``data_dir`` (:func:`make_data_dir`).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import tempfile
from pathlib import Path

from cheroot import wsgi

from mosaic.config.schema import TLS, Config, Server

#: Backlog of the listening socket: a file server takes bursts of connections.
LISTEN_BACKLOG = 256

_BIND_ERRORS = {
    errno.EADDRINUSE: "address in use (another server is listening there)",
    errno.EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "not an address of this machine",
}


class StartupError(Exception):
    """One reason the server cannot start; ``key`` is the config key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def check(config: Config) -> list[StartupError]:
    """Every start-up problem of ``config`` that can be found without serving
    or changing anything (``serve`` then binds and calls :func:`make_data_dir`)."""
    server = config.server
    problems = [*_tls_problems(server.tls), *_listen_problems(server)]
    data_dir = data_dir_problem(Path(server.data_dir))
    return [*problems, *([data_dir] if data_dir else []), *_sign_in_problems(config)]


def _sign_in_problems(config: Config) -> list[StartupError]:
    """Directory CA files and Kerberos keytabs: a login would fail on each, for hours,
    with only a log line to tell why."""
    problems = []
    for tenant_id, tenant in config.tenants.items():
        for index, domain in enumerate(tenant.active_directory):
            if domain.ca_file is not None:
                key = f"tenants.{tenant_id}.active_directory.{index}.ca_file"
                problems.append(_unreadable(key, domain.ca_file) or _ca_problem(key,
                                                                                domain.ca_file))
        if tenant.kerberos is not None:
            key = f"tenants.{tenant_id}.kerberos.keytab"
            problems.append(_unreadable(key, tenant.kerberos.keytab))
    return [problem for problem in problems if problem]


def _ca_problem(key: str, path: Path) -> StartupError | None:
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError):
        return StartupError(key, f"{path} holds no PEM certificate")
    return None


# -- TLS --------------------------------------------------------------------------


def _tls_problems(tls: TLS | None) -> list[StartupError]:
    if tls is None:
        return []
    unreadable = [problem for problem in (_unreadable("server.tls.cert", tls.cert),
                                          _unreadable("server.tls.key", tls.key)) if problem]
    if unreadable:
        return unreadable
    problem = _pair_problem(tls)
    return [problem] if problem else []


def _unreadable(key: str, path: Path) -> StartupError | None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        return StartupError(key, f"cannot read {path}: {exc.strerror}")
    return None


def _pair_problem(tls: TLS) -> StartupError | None:
    """Load the pair as the server will; say which file is wrong."""
    context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_verify_locations(cafile=str(tls.cert))
    except (ssl.SSLError, ValueError):
        return StartupError("server.tls.cert", f"{tls.cert} holds no PEM certificate")
    try:
        # A password prompt would block every worker on a terminal nobody reads.
        context.load_cert_chain(str(tls.cert), str(tls.key), password=_no_password)
    except (ssl.SSLError, ValueError) as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            return StartupError("server.tls.key", f"{tls.key} does not match server.tls.cert")
        return StartupError("server.tls.key",
                            f"{tls.key} holds no unencrypted PEM private key")
    return None


def _no_password() -> bytes:
    raise ValueError("encrypted private keys are not supported")


# -- data_dir ---------------------------------------------------------------------


def data_dir_problem(path: Path) -> StartupError | None:
    """Why ``path`` cannot be (made) a writable directory, or None."""
    try:
        _could_write(path)
    except OSError as exc:
        return _data_dir_error(path, exc)
    return None


def make_data_dir(server: Server) -> None:
    """Create ``data_dir`` and prove it writable; StartupError if it is not."""
    path = Path(server.data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _prove_writable(path)
    except OSError as exc:
        raise _data_dir_error(path, exc) from None


def _data_dir_error(path: Path, exc: OSError) -> StartupError:
    return StartupError("server.data_dir", f"{path}: {exc.strerror or exc}")


def _prove_writable(path: Path) -> None:
    # access() says yes to root on a read-only mount's files; a real write does not.
    with tempfile.TemporaryFile(dir=path, prefix=".~mosaic-probe-"):
        pass


def _could_write(path: Path) -> None:
    """Whether ``path`` is, or could be created as, a writable directory."""
    existing = path
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: mkdir would fail
            raise OSError(errno.ENOENT, "dangling symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        what = "is not a directory" if existing == path else f"{existing} is not a directory"
        raise OSError(errno.ENOTDIR, what)
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" ({existing} cannot be written)"
        raise OSError(errno.EACCES, f"not writable{where}")


# -- listen -----------------------------------------------------------------------


def _listen_problems(server: Server) -> list[StartupError]:
    try:
        addresses = _addresses(server.host, server.port)
        # Port 0: is the host ours? The real port may well be taken by the
        # running server whose config is being checked.
        _bind_any(addresses, port=0).close()
    except StartupError as problem:
        return [problem]
    return []


def bind(server: Server) -> socket.socket:
    """The listening socket of ``server.listen``: bound once, no SO_REUSEPORT.

    Only the processes this one forks share it, so a second instance on the
    same address fails here instead of splitting the clients with the first.
    """
    sock = _bind_any(_addresses(server.host, server.port), port=None)
    sock.listen(LISTEN_BACKLOG)
    return sock


def _addresses(host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "invalid host name"
        raise StartupError("server.listen", f"cannot resolve host {host!r}: {reason}") \
            from None
    return [(family, address) for family, _type, _proto, _name, address in infos]


def _bind_any(addresses: list[tuple[int, tuple[object, ...]]],
              port: int | None) -> socket.socket:
    """Bind the first address that takes it (``port`` None: the configured one)."""
    failure: StartupError | None = None
    for family, address in addresses:
        target = address if port is None else (address[0], port, *address[2:])
        try:
            return _bound(family, target)
        except OSError as exc:
            reason = _BIND_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))
            failure = failure or StartupError("server.listen", f"{_shown(address)}: {reason}")
    assert failure is not None  # getaddrinfo never answers an empty list
    raise failure


def _bound(family: int, address: tuple[object, ...]) -> socket.socket:
    # cheroot's own preparation: SO_REUSEADDR (restarts beside TIME_WAIT),
    # TCP_NODELAY (else ~44 ms per response), IPv6 dual stack for "::".
    sock = wsgi.Server.prepare_socket(address, family, socket.SOCK_STREAM, 0, nodelay=True,
                                      ssl_adapter=None, reuse_port=False)
    try:
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _shown(address: tuple[object, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
