"""Provider registry: provider name -> module, imported on first use.

Adding a backend is one module in this package plus one line in ``REGISTRY``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: name -> (module path, pip extra that brings its library or None)
REGISTRY: dict[str, tuple[str, str | None]] = {
    "local": ("mosaic.providers.local", None),
    "memory": ("mosaic.providers.memory", None),
    "s3": ("mosaic.providers.s3", "s3"),
    "gcs": ("mosaic.providers.gcs", "gcs"),
    "swift": ("mosaic.providers.swift", "swift"),
    "rackspace": ("mosaic.providers.rackspace", "swift"),
    "azure_blob": ("mosaic.providers.azure_blob", "azure"),
    "smb": ("mosaic.providers.smb", "smb"),
    "azure_files": ("mosaic.providers.azure_files", "smb"),
}


class ProviderUnavailable(LookupError):
    """Unknown provider, or its library is not installed."""


def load(name: str) -> ModuleType:
    try:
        module_path, extra = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ProviderUnavailable(f"unknown provider {name!r} (known: {known})") from None
    try:
        return importlib.import_module(module_path)
    except ImportError as exc:
        hint = f"pip install 'mosaic-fileserver[{extra}]'" if extra else "reinstall mosaic"
        raise ProviderUnavailable(
            f"provider {name!r} needs a library that is not installed ({exc.name}): {hint}"
        ) from exc
