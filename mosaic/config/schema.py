"""The one config schema: defaults, validation and docs come from here.

Every model forbids unknown keys. Secret values are ``SecretStr`` and may be
given inline, as ``${ENV_VAR}``, or through a sibling ``<key>_file`` path; the
loader resolves both before validation (see ``mosaic.config.loader``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from mosaic import providers

TENANT_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"
USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Access = Literal["none", "read", "write"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLS(Strict):
    cert: Path = Field(description="PEM certificate chain")
    key: Path = Field(description="PEM private key")


class AuthSettings(Strict):
    cache_seconds: float = Field(60, ge=0, description="How long a verified login is remembered")
    max_failures: int = Field(5, ge=1, description="Failed logins before throttling starts")
    failure_window_seconds: float = Field(300, gt=0)
    lockout_seconds: float = Field(60, ge=0, description="Delay imposed once throttled")


class Server(Strict):
    listen: str = Field("127.0.0.1:8080", description="host:port to bind")
    data_dir: Path = Field(Path("mosaic-data"), description="Locks, properties, default storage")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL for locks and properties; default SQLite in data_dir"
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=64,
        description="Processes sharing the port (SO_REUSEPORT); default one per core",
    )
    threads: int = Field(32, ge=1, le=1024, description="Request threads per process")
    tls: TLS | None = None
    block_size: int = Field(262144, ge=4096, description="GET/PUT streaming block size")
    auth: AuthSettings = AuthSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ProviderSpec(Strict):
    """``type`` names a provider; the other keys are that provider's options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    @model_validator(mode="after")
    def _validate_options(self) -> ProviderSpec:
        try:
            module = providers.load(self.type)
        except providers.ProviderUnavailable as exc:
            raise ValueError(str(exc)) from None
        module.Options.model_validate(self.model_extra or {})
        return self

    def options(self) -> BaseModel:
        return providers.load(self.type).Options.model_validate(self.model_extra or {})


class Mount(Strict):
    provider: ProviderSpec
    read_only: bool = False


class User(Strict):
    password_hash: SecretStr = Field(description="argon2 hash from `mosaic hash-password`")
    groups: list[str] = []
    display_name: str | None = None
    enabled: bool = True

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("$argon2"):
            raise ValueError("expected an argon2 hash (run `mosaic hash-password`), not a password")
        return value


VirtualPath = Annotated[str, Field(pattern=r"^/")]


class Tenant(Strict):
    domains: list[str] = Field([], description="Login domains: user@domain")
    netbios: list[str] = Field([], description="NetBIOS names: DOMAIN\\user")
    hosts: list[str] = Field([], description="Host names that select this tenant")
    root: ProviderSpec
    mounts: dict[VirtualPath, Mount] = {}
    users: dict[Annotated[str, Field(pattern=USER_NAME)], User] = {}
    groups: list[str] = []
    default_access: Access = Field(
        "write", description="Access of a tenant user where no permission rule applies"
    )
    permissions: dict[VirtualPath, dict[str, Access]] = Field(
        {},
        description="path -> {user | @group | '*' -> none|read|write}, inherited downward",
    )

    @field_validator("mounts", "permissions")
    @classmethod
    def _normalised_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            if path != "/" and (path.endswith("/") or "//" in path or "/../" in path + "/"
                                or "/./" in path + "/"):
                raise ValueError(f"path {path!r} must be normalised (no trailing /, //, . or ..)")
        return value

    @field_validator("mounts")
    @classmethod
    def _mount_paths(cls, value: dict[str, Mount]) -> dict[str, Mount]:
        if "/" in value:
            raise ValueError("'/' is the tenant root: set it with `root`, not in mounts")
        return value

    @model_validator(mode="after")
    def _references(self) -> Tenant:
        known_groups = set(self.groups)
        for name, user in self.users.items():
            for group in user.groups:
                if group not in known_groups:
                    raise ValueError(f"user {name!r} is in undeclared group {group!r}")
        for path, rules in self.permissions.items():
            for principal in rules:
                if principal.startswith("@") and principal[1:] not in known_groups:
                    raise ValueError(f"permissions[{path!r}] names undeclared group {principal!r}")
                if principal not in ("*",) and not principal.startswith("@") \
                        and principal not in self.users:
                    raise ValueError(f"permissions[{path!r}] names unknown user {principal!r}")
        return self


class Config(Strict):
    server: Server = Server()
    tenants: dict[Annotated[str, Field(pattern=TENANT_ID)], Tenant]

    @model_validator(mode="after")
    def _unique_login_names(self) -> Config:
        for attr in ("domains", "netbios", "hosts"):
            owner: dict[str, str] = {}
            for tenant_id, tenant in self.tenants.items():
                for name in getattr(tenant, attr):
                    other = owner.setdefault(name.lower(), tenant_id)
                    if other != tenant_id:
                        raise ValueError(f"{attr} {name!r} claimed by tenants {other!r} and "
                                         f"{tenant_id!r}")
        return self


def secret_fields(model: type[BaseModel]) -> set[str]:
    """Names of the fields whose values are secrets (they accept ``<name>_file``)."""
    return {name for name, f in model.model_fields.items() if f.annotation is SecretStr
            or f.annotation == SecretStr | None}


__all__ = ["Access", "Config", "Mount", "ProviderSpec", "Server", "Tenant", "User"]
