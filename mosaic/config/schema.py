"""The one config schema: defaults, validation and docs come from here.

Every model forbids unknown keys. Secret values are ``SecretStr`` and may be
given inline, as ``${ENV_VAR}``, or through a sibling ``<key>_file`` path; the
loader resolves both before validation (see ``mosaic.config.loader``).

Validators that find several problems raise them together as one
``ValidationError`` whose locations point at the offending key, so the loader
can report each at its own file line.
"""

from __future__ import annotations

import os
import posixpath
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError, core_schema

from mosaic import providers
from mosaic.config.directory import ActiveDirectory, Kerberos
from mosaic.core.paths import match_key

TENANT_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"
USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Access = Literal["none", "read", "write"]
LogLevel = Literal["debug", "info", "warning", "error"]
#: a dotted Python logger name such as botocore or azure.core.pipeline
LoggerName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]
Loc = tuple[str | int, ...]
_KNOWN_ERRORS = frozenset(typing.get_args(core_schema.ErrorType))


def _problem(loc: Loc, message: str) -> InitErrorDetails:
    # The input is never echoed: it may be a secret.
    return InitErrorDetails(type=PydanticCustomError("config", message), loc=loc, input=None)


def _raise_all(title: str, problems: list[InitErrorDetails]) -> None:
    """Raise every problem at once, each at its own location."""
    if problems:
        raise ValidationError.from_exception_data(title, problems)


def _as_init(error: ErrorDetails) -> InitErrorDetails:
    kind = error["type"]
    details = InitErrorDetails(
        type=kind if kind in _KNOWN_ERRORS else PydanticCustomError(kind, error["msg"]),
        loc=error["loc"], input=error["input"])
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


def _validate_and_check(handler: ValidatorFunctionWrapHandler, data: Any,
                        problems: list[InitErrorDetails]) -> Any:
    """Validate ``data`` and raise its errors together with ``problems``.

    Cross-reference checks run on the raw data so they are reported even when
    some field is invalid too: the user sees every problem in one go.
    """
    try:
        result = handler(data)
    except ValidationError as exc:
        _raise_all(exc.title, [*map(_as_init, exc.errors()), *problems])
        raise
    _raise_all(type(result).__name__, problems)
    return result


def _get(obj: Any, key: str) -> Any:
    """A member of raw (dict) or validated (model) data, None if absent."""
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _strings(value: Any) -> list[tuple[int, str]]:
    return [(i, v) for i, v in enumerate(value) if isinstance(v, str)] \
        if isinstance(value, list) else []


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class Strict(BaseModel):
    # hide_input_in_errors: a ValidationError printed anywhere must not show secrets.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class TLS(Strict):
    cert: Path = Field(description="PEM certificate chain")
    key: Path = Field(description="PEM private key")


class AuthSettings(Strict):
    """Login caching and smart lockout (see docs/security.md).

    Failures lock a (user, client address) pair and a client address, never a
    user everywhere: the right password from an address without failures is
    always accepted. A user's failures across all addresses only slow down
    the addresses that fail.
    """

    cache_seconds: float = Field(60, ge=0, description="How long a verified login is remembered")
    refusal_cache_seconds: float = Field(
        600, ge=0, description="How long a refused user-and-password pair is remembered: a "
        "client retrying a stale password is refused without asking argon2 or the directory "
        "again, so it counts once against the lockout (Mosaic's and Active Directory's)")
    max_failures: int = Field(
        5, ge=1, description="Failed logins of one user from one client address that lock "
                             "that user at that address")
    address_max_failures: int = Field(
        20, ge=1, description="Failed logins from one client address, whatever the user, "
                              "that lock that address")
    failure_window_seconds: float = Field(
        300, gt=0, description="Window in which failed logins are counted"
    )
    lockout_seconds: float = Field(
        60, ge=0, description="How long a locked user-and-address or address is refused")
    user_slowdown_after: int = Field(
        10, ge=1, description="Failed logins of one user from all addresses after which the "
                              "attempts for that user from addresses that failed are delayed")
    slowdown_seconds: float = Field(
        1, ge=0, le=10, description="The delay of such an attempt (it holds a request thread)")
    max_slowed_logins: int = Field(
        4, ge=0, description="Delayed attempts waiting at once per worker; beyond, an attempt "
                             "that would wait is refused at once")
    pass_through_idle_seconds: float = Field(
        300, ge=1, le=86400, description="How long a user's own connections to file servers "
        "(smb mounts with `credentials: pass_through`) stay open after their last request "
        "(a transfer still running keeps them): then they are logged off and closed, and "
        "their password is forgotten; the next request signs in again")


class FairShare(Strict):
    """Concurrent requests one tenant or one client address may hold in a worker.

    A request holds one of the worker's ``threads`` from its first byte to
    its last (a slow client holds it for as long as it is slow). Beyond its
    share, a tenant or address is served only while more than
    ``spare_threads`` threads would stay free; otherwise it is answered 503
    with Retry-After at once.
    """

    per_tenant: int | None = Field(
        None, ge=0,
        description="Requests one tenant may have in flight per worker; "
                    "default half of `threads`, 0 for no limit")
    per_address: int | None = Field(
        None, ge=0,
        description="Requests (authenticated or not) one client address may have in flight "
                    "per worker; default a quarter of `threads`, 0 for no limit (behind a "
                    "reverse proxy every client has the proxy's address)")
    spare_threads: int | None = Field(
        None, ge=0,
        description="Threads kept for the others: beyond its share a tenant or address is "
                    "served only while more than this many stay free; default a quarter of "
                    "`threads`")
    retry_after_seconds: int = Field(
        2, ge=1, le=3600, description="Retry-After of the 503 answered to the one over its share")

    def tenant_limit(self, threads: int) -> int:
        return max(1, threads // 2) if self.per_tenant is None else self.per_tenant

    def address_limit(self, threads: int) -> int:
        return max(1, threads // 4) if self.per_address is None else self.per_address

    def room_to_spare(self, threads: int, busy: int) -> bool:
        """Whether ``busy`` threads in use (this request's included) leave enough free."""
        spare = threads // 4 if self.spare_threads is None else self.spare_threads
        return busy <= threads - spare


class Limits(Strict):
    """What one request may send, and how slowly, before the WebDAV application
    sees it. A request beyond a limit is refused with the status named (before
    authentication, its body unread) and its connection closed."""

    max_request_line_bytes: int = Field(
        16384, ge=256, le=1048576,
        description="Longest request line (method, target, version); longer: 414")
    max_head_bytes: int = Field(
        65536, ge=1024, le=16777216,
        description="Largest request head (request line and header fields); larger: 431")
    max_header_fields: int = Field(
        100, ge=8, le=10000, description="Most header fields in one request; more: 431")
    max_xml_body_bytes: int = Field(
        4194304, ge=4096,
        description="Largest body of any method but PUT (PROPFIND, PROPPATCH and LOCK bodies "
                    "are parsed in memory); larger: 413, refused before it is read. PUT "
                    "bodies stream to storage and have no limit here")
    head_timeout_seconds: float = Field(
        20, gt=0, description="Time a client has to send a whole request head; slower: 408")
    body_idle_timeout_seconds: float = Field(
        30, gt=0, description="Longest silence while a request body arrives; longer: 408 "
                              "and the upload is discarded")
    body_min_bytes_per_second: int = Field(
        500, ge=0, description="Slowest average rate of a request body once "
                               "`body_rate_grace_seconds` have passed; slower: 408 and the "
                               "upload is discarded. 0: no minimum")
    body_rate_grace_seconds: float = Field(
        20, ge=0, description="Time a request body may take before its average rate counts")


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
        description="Processes sharing one listening socket; default one per core",
    )
    threads: int = Field(32, ge=1, le=1024, description="Request threads per process")
    tls: TLS | None = Field(
        None, description="Serve HTTPS with this certificate; plain HTTP if unset"
    )
    block_size: int = Field(262144, ge=4096, description="GET/PUT streaming block size in bytes")
    auth: AuthSettings = Field(AuthSettings(), description="Login caching and throttling")
    fair_share: FairShare = Field(
        FairShare(), description="Limits that keep one tenant or one client address from "
                                 "starving the others")
    limits: Limits = Field(Limits(), description="Limits and timeouts on request heads and bodies")
    log_level: LogLevel = Field(
        "info", description="Minimum level of Mosaic's own log records (to stderr). A mount "
        "whose store goes down is logged once (warning) and once when it is back (info), "
        "by each worker process that meets it"
    )
    log_levels: dict[LoggerName, LogLevel] = Field(
        {}, description="Levels of named loggers, e.g. {botocore: debug}: a library not "
        "named here logs at warning, or at log_level if that is higher (their debug and "
        "info output carries request headers and key ids; secrets are masked in any case)"
    )
    access_log: str | None = Field(
        None, min_length=1, description="One JSON line per request to this file, or to "
        "stderr if \"-\"; off if unset. Keys: time (ISO 8601, UTC), remote, tenant, "
        "user (\"-\" before login), method, path, status, bytes (body bytes sent), "
        "duration_ms. Takes effect at start-up"
    )

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
    type: str = Field(description="Provider name, e.g. local or memory")

    @model_validator(mode="after")
    def _validate_options(self) -> ProviderSpec:
        try:
            module = providers.load(self.type)
        except providers.ProviderUnavailable as exc:
            _raise_all("ProviderSpec", [_problem(("type",), str(exc))])
        # The options' own ValidationError propagates with locations relative
        # to this mapping, so a typo is reported at its own line.
        module.Options.model_validate(self.model_extra or {})
        return self

    def options(self) -> BaseModel:
        return providers.load(self.type).Options.model_validate(self.model_extra or {})

    def signs_in_as_user(self) -> bool:
        """Whether the backend is reached as the signed-in user, with their own account
        (an options property, see mosaic.core.capabilities)."""
        return bool(getattr(self.options(), "signs_in_as_user", False))

    def __repr_args__(self) -> Any:
        # The raw extras may hold secrets; the validated options mask them.
        yield "type", self.type
        yield from self.options().__repr_args__()


class Mount(Strict):
    provider: ProviderSpec = Field(description="Storage behind this mount: `type` plus options")
    read_only: bool = Field(False, description="Refuse every write below this mount")
    quota: ByteSize | None = Field(
        None, description="Most this mount may hold, in bytes or as a size (`50 GiB`, `500MB`): "
        "a write beyond it is refused with 507, and clients show the rest as free space. "
        "On a per-user ({user}) mount it is each user's quota"
    )


class User(Strict):
    password_hash: SecretStr = Field(description="argon2 hash from `mosaic hash-password`")
    groups: list[str] = Field([], description="Groups of the tenant this user belongs to")
    display_name: str | None = Field(None, description="Name shown in clients")
    enabled: bool = Field(True, description="A disabled user cannot log in")

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("$argon2"):
            raise ValueError("expected an argon2 hash (run `mosaic hash-password`), not a password")
        return value


def _normalised(path: str) -> str:
    # Matches mosaic.core.paths: no NUL or backslash, no ., .., //, trailing /.
    if "\x00" in path or "\\" in path:
        raise ValueError("path must not contain a NUL or a backslash")
    if path != "/" and (path.startswith("//") or posixpath.normpath(path) != path):
        raise ValueError(f"path must be normalised: expected {posixpath.normpath(path)!r}")
    return path


def _not_root(path: str) -> str:
    if path == "/":
        raise ValueError("'/' is the tenant root: set it with `root`, not in mounts")
    return path


VirtualPath = Annotated[str, Field(pattern=r"^/"), AfterValidator(_normalised)]
MountPath = Annotated[VirtualPath, AfterValidator(_not_root)]


class Tenant(Strict):
    domains: list[str] = Field([], description="Login domains: user@domain")
    netbios: list[str] = Field([], description="NetBIOS names: DOMAIN\\user")
    hosts: list[str] = Field([], description="Host names that select this tenant")
    root: ProviderSpec = Field(description="Storage of the tenant's '/': `type` plus options")
    mounts: dict[MountPath, Mount] = Field(
        {}, description="Virtual path -> storage mounted there, e.g. /projects"
    )
    users: dict[Annotated[str, Field(pattern=USER_NAME)], User] = Field(
        {}, description="User name -> account"
    )
    groups: list[str] = Field([], description="Group names users and permissions may refer to")
    active_directory: list[ActiveDirectory] = Field(
        [], description="Active Directory domains whose accounts sign in beside the local "
        "users; bare logins go to the first. Permission rules name their users and groups "
        "`DOMAIN\\user`, `@DOMAIN\\group` or `@group` (any of the tenant's domains)")
    kerberos: Kerberos | None = Field(
        None, description="Single sign-on with Kerberos tickets (HTTP Negotiate) of the "
        "active_directory domains; needs a domain with a `service_account`, which reads the "
        "signed-in account's groups. The tenant is the one `hosts` selects")
    default_access: Access = Field(
        "write", description="Access of a tenant user where no permission rule applies"
    )
    permissions: dict[VirtualPath, dict[str, Access]] = Field(
        {},
        description="path -> {user | @group | '*' -> none|read|write}, inherited downward",
    )
    quota: ByteSize | None = Field(
        None, description="Most the tenant may hold in its root and all its mounts together "
        "(bytes or a size such as `1 TiB`); a write beyond it is refused with 507. A per-user "
        "mount counts the writing user's folder only"
    )
    quota_recount_seconds: float = Field(
        300, gt=0, description="Where a quota applies, how long a mount's counted usage is "
        "reused. Counting walks the whole mount (every object of a bucket), so it is not done "
        "per request; between counts, writes and deletes made through this server process "
        "move the figure exactly, while changes by other worker processes or other tools show "
        "up at the next count (a quota can be overshot by them until then)"
    )

    @field_validator("mounts", "permissions")
    @classmethod
    def _distinct_paths(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        # The VFS matches paths case-insensitively (NFC, casefold): two
        # spellings of one path would make one of the entries unreachable.
        seen: dict[str, str] = {}
        problems = []
        for path in value:
            other = seen.setdefault(match_key(path), path)
            if other != path:
                problems.append(_problem((path, "[key]"), f"same path as {other!r} "
                                         "(paths are compared case-insensitively)"))
        _raise_all(info.field_name, problems)
        return value

    @model_validator(mode="after")
    def _kerberos_can_look_accounts_up(self) -> Tenant:
        if self.kerberos and not any(d.service_account for d in self.active_directory):
            raise ValueError("kerberos needs an active_directory domain with a service_account "
                             "(a ticket carries no groups; the service account reads them)")
        return self

    @model_validator(mode="after")
    def _pass_through_needs_a_directory(self) -> Tenant:
        """A mount reached as each signed-in user needs users with a directory account and
        a password; the root must serve local users too (the break-glass admin)."""
        problems = []
        if self.root.signs_in_as_user():
            problems.append(_problem(("root", "credentials"), "the tenant root cannot pass "
                                     "each user's own credentials through (local users could "
                                     "not list the tenant): mount the share at a path instead"))
        for path, mount in self.mounts.items():
            if mount.provider.signs_in_as_user() and not self.active_directory:
                problems.append(_problem(
                    ("mounts", path, "provider", "credentials"),
                    f"mount {path}: credentials pass_through signs each user in to the file "
                    "server with their own Active Directory account, and this tenant has no "
                    "active_directory domain"))
        _raise_all("Tenant", problems)
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _references(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        problems = _reference_problems(data) if isinstance(data, dict) else []
        return _validate_and_check(handler, data, problems)


def _reference_problems(tenant: dict[str, Any]) -> list[InitErrorDetails]:
    """Users' groups and permission principals must be declared in the tenant.

    A directory's users and groups cannot be checked offline: with Active
    Directory domains, ``@group`` and ``DOMAIN\\name`` of a listed domain pass
    (``mosaic ad-check`` asks the domain).
    """
    groups = {group for _, group in _strings(tenant.get("groups"))}
    users = _mapping(tenant.get("users"))
    domains = _directory_names(tenant)
    problems = [_problem(("users", name, "groups", index), f"undeclared group {group!r}")
                for name, user in users.items()
                for index, group in _strings(_get(user, "groups")) if group not in groups]
    for path, rules in _mapping(tenant.get("permissions")).items():
        for principal in _mapping(rules):
            loc = ("permissions", path, principal, "[key]")
            if isinstance(principal, str) and principal != "*":
                message = _principal_problem(principal, groups, users, domains)
                if message:
                    problems.append(_problem(loc, message))
    return problems


def _directory_names(tenant: dict[str, Any]) -> set[str]:
    """The NetBIOS names (folded) of the tenant's directory domains."""
    return {domain["netbios"].lower() for domain in _list(tenant.get("active_directory"))
            if isinstance(domain, dict) and isinstance(domain.get("netbios"), str)}


def _principal_problem(principal: str, groups: set[str], users: dict[Any, Any],
                       domains: set[str]) -> str | None:
    is_group = principal.startswith("@")
    name = principal[1:] if is_group else principal
    qualifier, backslash, _ = name.partition("\\")
    if backslash:
        if qualifier.lower() in domains:
            return None
        listed = ", ".join(sorted(domains)) or "none"
        return (f"{principal!r} names the domain {qualifier!r}, which is not one of the "
                f"tenant's active_directory domains (netbios: {listed})")
    if is_group and (name in groups or domains):
        return None
    if is_group:
        return f"undeclared group {name!r}"
    if name in users:
        return None
    hint = " (a directory user is named DOMAIN\\user)" if domains else ""
    return f"unknown user {principal!r}; expected a user name, @group or '*'{hint}"


class Config(Strict):
    server: Server = Field(Server(), description="Process-wide settings")
    tenants: dict[Annotated[str, Field(pattern=TENANT_ID)], Tenant] = Field(
        description="Tenant id -> tenant; ids are lower-case letters, digits and '-'"
    )

    @model_validator(mode="wrap")
    @classmethod
    def _unique_login_names(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        problems = _login_name_problems(data) if isinstance(data, dict) else []
        return _validate_and_check(handler, data, problems)


def _login_name_problems(config: dict[str, Any]) -> list[InitErrorDetails]:
    """A login domain, NetBIOS name or host must select one tenant only."""
    problems = []
    for attr in ("domains", "netbios", "hosts"):
        owner: dict[str, Any] = {}
        for tenant_id, tenant in _mapping(config.get("tenants")).items():
            for index, name in _strings(_get(tenant, attr)):
                other = owner.setdefault(name.lower(), tenant_id)
                if other != tenant_id:
                    problems.append(_problem(("tenants", tenant_id, attr, index),
                                             f"{name!r} is already claimed by tenant {other!r}"))
    return problems


def secret_fields(model: type[BaseModel]) -> set[str]:
    """Names of the fields whose values are secrets (they accept ``<name>_file``)."""
    return {name for name, f in model.model_fields.items() if f.annotation is SecretStr
            or f.annotation == SecretStr | None}


__all__ = ["Access", "Config", "Limits", "Mount", "ProviderSpec", "Server", "Tenant", "User"]
