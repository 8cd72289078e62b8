"""The embedded default used by ``mosaic serve`` without ``--config``.

One tenant ``default`` stored under ``<data_dir>/tenants/default`` and one user
``admin`` (group ``admins``). The admin password is made up on first start and
returned once so the CLI can print it; only its argon2 hash is kept, in
``<data_dir>/admin.hash`` (mode 0600). Later starts reuse the hash and return
no password.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from mosaic.config.loader import ConfigError, Problem
from mosaic.config.schema import Config
from mosaic.core.passwords import hash_password

log = logging.getLogger(__name__)

TENANT = "default"
ADMIN = "admin"
ADMIN_GROUP = "admins"
HASH_FILE = "admin.hash"
PASSWORD_BYTES = 12  # secrets.token_urlsafe(12): 16 characters, 96 bits


def default_config(data_dir: Path, listen: str | None = None) -> tuple[Config, str | None]:
    """The default config over ``data_dir``, and the admin password if it was just made."""
    data_dir = Path(data_dir).absolute()  # a later chdir must not move the storage
    password_hash, password = _admin_hash(data_dir)
    server: dict[str, object] = {"data_dir": str(data_dir)}
    if listen is not None:
        server["listen"] = listen
    raw = {
        "server": server,
        "tenants": {TENANT: {
            "root": {"type": "local", "root": str(data_dir / "tenants" / TENANT)},
            "groups": [ADMIN_GROUP],
            "users": {ADMIN: {"password_hash": password_hash, "groups": [ADMIN_GROUP]}},
        }},
    }
    try:
        return Config.model_validate(raw), password
    except ValidationError as exc:  # only a bad --listen or a corrupt hash file get here
        raise ConfigError([_problem(data_dir, error) for error in exc.errors()]) from None


def _problem(data_dir: Path, error: ErrorDetails) -> Problem:
    key = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"])
    if key.endswith("password_hash"):
        message += f" (delete {data_dir / HASH_FILE} to make a new admin password)"
    return Problem("<embedded default>", 0, 0, key, message)


def _admin_hash(data_dir: Path) -> tuple[str, str | None]:
    """The stored admin hash, or a new one plus its password on first start."""
    hash_path = data_dir / HASH_FILE
    if not hash_path.exists():
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        password_hash = hash_password(password)
        if _store_new(hash_path, password_hash):
            return password_hash, password
    _tighten(hash_path)
    return hash_path.read_text(encoding="utf-8").strip(), None


def _store_new(hash_path: Path, password_hash: str) -> bool:
    """Publish the hash atomically; False if another process got there first."""
    hash_path.parent.mkdir(parents=True, exist_ok=True)
    temp = hash_path.with_name(f".{HASH_FILE}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password_hash + "\n")
        # link() fails if the name exists: of two first starts only one wins,
        # and nobody ever reads a half-written file.
        os.link(temp, hash_path)
        return True
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)


def _tighten(hash_path: Path) -> None:
    mode = stat.S_IMODE(hash_path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o): setting 0600", hash_path, mode)
        hash_path.chmod(0o600)
