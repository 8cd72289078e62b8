"""Logging of ``mosaic serve``: levels, format and redaction, set up in one place.

Mosaic's own loggers (``mosaic.*``) log at ``server.log_level``. Every other
library logs warnings and errors only unless ``server.log_levels`` names it:
botocore's debug output holds access key ids and endpoint URLs, the Azure SDK
logs every request's headers at INFO and swiftclient every request as a curl
line. What still gets through is masked by :class:`RedactingFormatter`: every
secret of the running config, the password of any ``scheme://user:pass@`` URL
and the value of credential headers (Authorization, X-Auth-Token, ...) become
``***``, in the message, an exception's traceback and stack.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, SecretStr

from mosaic.config.schema import Config, ProviderSpec

MASK = "***"
FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
OWN_LOGGER = "mosaic"
#: the least a library logs unless the config names it
LIBRARY_LEVEL = logging.WARNING
#: shorter secrets are not masked: "abc" would mask every word containing it
MIN_SECRET_LENGTH = 4
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s]*@")
#: headers whose value is a credential (a token the store handed out, not in the config)
_CREDENTIAL_HEADER = re.compile(
    r"(?P<head>\b(?:Authorization|Proxy-Authorization|X-Auth-Token|X-Storage-Token|"
    r"X-Subject-Token|X-Auth-Key|X-Storage-Pass|x-ms-copy-source-authorization)"
    r"['\"]?\s*[:=]\s*b?['\"]?)[^'\"\r\n,}]+", re.IGNORECASE)  # b'...': a bytes repr


class RedactingFormatter(logging.Formatter):
    """Formats a record, then masks known secrets and URL passwords in the whole text."""

    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self._secrets: re.Pattern[str] | None = None

    def remember(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH},
                        key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, values))) if values else None

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))

    def mask(self, text: str) -> str:
        text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
        text = _CREDENTIAL_HEADER.sub(rf"\g<head>{MASK}", text)
        return self._secrets.sub(MASK, text) if self._secrets else text


_formatter = RedactingFormatter()
#: loggers given a level by the config, reset when a reload no longer names them
_named: set[str] = set()


def configure(config: Config) -> None:
    """Route every log record to stderr through the redacting formatter, at the
    levels ``config.server`` asks for. Safe to call again (a forked worker, a reload)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    apply_levels(config)
    remember_secrets(config)


def apply_levels(config: Config) -> None:
    server = config.server
    own = logging.getLevelName(server.log_level.upper())
    # The root's level is what every unnamed library inherits.
    logging.getLogger().setLevel(max(own, LIBRARY_LEVEL))
    logging.getLogger(OWN_LOGGER).setLevel(own)
    for name in _named - server.log_levels.keys():
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in server.log_levels.items():
        logging.getLogger(name).setLevel(level.upper())
    _named.clear()
    _named.update(server.log_levels)


def remember_secrets(config: Config) -> None:
    _formatter.remember(secret_values(config))


def on_reload(config: Config) -> None:
    """A reloaded config may bring new secrets and levels (listener of ConfigHolder)."""
    if _formatter in (h.formatter for h in logging.getLogger().handlers):
        apply_levels(config)
        remember_secrets(config)


def secret_values(value: Any) -> Iterator[str]:
    """Every secret in ``value``: SecretStr fields, provider options included."""
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, ProviderSpec):
        # The raw extras are untyped; the provider's Options know its secrets.
        yield from secret_values(value.options())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secret_values(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from secret_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from secret_values(item)


def in_words(exc: BaseException) -> str:
    """An error as one log line: its type and the first line of its message
    (SQLAlchemy's and others' messages go on for lines, with links)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
