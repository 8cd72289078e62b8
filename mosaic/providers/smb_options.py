"""The options of an ``smb`` mount (and, mapped from its own, of ``azure_files``).

One pydantic model: defaults, validation and the docs of every key. A mount is
named by ``host``, ``share`` and ``path`` or by one ``unc`` path (a DFS
namespace path works either way); credentials are a sub-model whose ``kind`` says
whose they are: one service account for everybody, or each signed-in directory
user's own (``pass_through``, also given as that one word).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    field_validator,
    model_validator,
)

from mosaic.core import paths
from mosaic.core.errors import InvalidPathError
from mosaic.core.names import windows_name_problem

MIB = 1024 * 1024
#: a server that failed (unreachable, account refused) is not asked again before this
RETRY_AFTER_FAILURE_S = 5.0
DIALECTS = {"2.0.2": 0x0202, "2.1": 0x0210, "3.0": 0x0300, "3.0.2": 0x0302, "3.1.1": 0x0311}


class ServiceAccount(BaseModel):
    """One account of the file server for every user of the mount."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The default kind: configs written before pass_through existed keep their meaning.
    kind: Literal["service_account"] = Field(
        "service_account", description="Whose credentials: `service_account`, this one account")
    username: str = Field(min_length=1, description="Account name on the file server")
    password: SecretStr = Field(description="Its password")


PASS_THROUGH = "pass_through"


class PassThrough(BaseModel):
    """Each signed-in Active Directory user's own account and password, so that the
    file server's ACLs apply to them as on the LAN. Users without a password to pass
    (local users, Kerberos sign-ins) are refused the mount (403)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["pass_through"] = Field(
        description="`pass_through` (`credentials: pass_through` says the same)")
    domain: str | None = Field(
        None, min_length=1, description="Domain the file server is told the accounts belong "
        "to (default: the signed-in account's NetBIOS domain, e.g. `CORP`)")


def _credentials(value: Any) -> ServiceAccount | PassThrough:
    """``kind`` picks the model (none: a service account, as before pass_through existed);
    the one word ``pass_through`` is short for ``{kind: pass_through}``. Validated here,
    not as a pydantic union, so that an error's location is the key in the YAML
    (``credentials.password``), not a union member's name."""
    if isinstance(value, ServiceAccount | PassThrough):
        return value
    if value == PASS_THROUGH:
        value = {"kind": PASS_THROUGH}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping (a service account) or {PASS_THROUGH}")
    kind = value.get("kind", "service_account")
    if kind not in CREDENTIAL_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected {' or '.join(CREDENTIAL_KINDS)}")
    return CREDENTIAL_KINDS[kind].model_validate(value)


CREDENTIAL_KINDS: dict[str, type[ServiceAccount | PassThrough]] = {
    "service_account": ServiceAccount, PASS_THROUGH: PassThrough}
Credentials = Annotated[ServiceAccount | PassThrough, PlainValidator(_credentials),
                        PlainSerializer(lambda value: value.model_dump())]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    unc: str | None = Field(
        None, description="The mount's root as one UNC path, `\\\\server\\share\\folder` "
                          "(or `//server/share/folder`), e.g. a DFS namespace path "
                          "`\\\\corp.example\\dfs\\projects`; instead of `host`, `share` "
                          "and `path`")
    host: str = Field(min_length=1, description="File server or DFS namespace (domain or "
                                                "server name): host name or IP address")
    port: int = Field(445, ge=1, le=65535, description="SMB port")
    share: str = Field(min_length=1, description="Share name")
    path: str = Field("", description="Folder of the share served as the mount's root; "
                                      "`{user}` is replaced by the signed-in user")
    domain: str | None = Field(None, description="Windows domain (workgroup) of the service "
                                                 "account")
    credentials: Credentials = Field(
        description="How Mosaic signs in to the file server: a `service_account`, or "
        "`pass_through` (each Active Directory user as themselves)")
    encrypt: bool = Field(False, description="Require SMB 3 encryption of all traffic")
    min_dialect: Literal["2.0.2", "2.1", "3.0", "3.0.2", "3.1.1"] = Field(
        "2.1", description="Lowest SMB dialect accepted from the server")
    require_signing: bool = Field(
        True, description="Require signed messages (SMB 3.1.1 needs it for tree connects)")
    connect_timeout_s: float = Field(10.0, gt=0, description="Seconds to connect and sign in")
    timeout_s: float = Field(
        30.0, ge=1, le=600,
        description="Seconds a silent file server has to answer a keep-alive before its "
                    "connection is given up (its requests fail with 503, no worker waits on)")
    io_block_size: int = Field(
        2 * MIB, ge=MIB, le=4 * MIB,
        description="Bytes per read and write request (1-4 MiB); a download reads one block "
                    "ahead and an upload has two out, so a transfer holds a few blocks and "
                    "smbprotocol's copies of them")
    retry_after_failure_s: float = Field(
        RETRY_AFTER_FAILURE_S, gt=0, le=300,
        description="Seconds a file server that failed (unreachable, account refused) is "
                    "left alone before the next try")
    create: bool = Field(True, description="Create `path` on the share when it is missing "
                                           "(a user's home on first use)")
    listing_cache_seconds: float = Field(
        2.0, ge=0, le=3600,
        description="How long a listing is reused; changes made through Mosaic show at once, "
                    "changes made on the file server by others after this long (0: no cache)")
    change_notify_folders: int = Field(
        64, ge=0, le=1024,
        description="Folders listed last that are watched for outside changes (SMB2 "
                    "CHANGE_NOTIFY): a change drops their cached listing within about a "
                    "second (0: off; changes then show after `listing_cache_seconds`)")
    change_notify_idle_s: float = Field(
        600.0, gt=0, le=86400,
        description="Seconds a watched folder stays watched without being listed")

    @model_validator(mode="before")
    @classmethod
    def _from_unc(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("unc") is None:
            return data
        given = [key for key in ("host", "share", "path") if key in data]
        if given:
            raise ValueError(f"`unc` names the server, share and path: remove {given[0]!r}")
        unc = data["unc"]
        if not isinstance(unc, str):
            raise ValueError("`unc` must be a string")
        names = unc.replace("/", "\\")
        if not names.startswith("\\\\"):
            raise ValueError("`unc` must start with \\\\server\\share (or //server/share)")
        host, _, rest = names[2:].partition("\\")
        share, _, path = rest.partition("\\")
        return {**data, "host": host, "share": share, "path": path.replace("\\", "/")}

    @model_validator(mode="after")
    def _one_domain(self) -> Options:
        if self.domain is not None and self.signs_in_as_user:
            raise ValueError("`domain` is the service account's; with pass_through, set "
                             "`credentials: {kind: pass_through, domain: ...}`")
        return self

    @property
    def signs_in_as_user(self) -> bool:
        """Each user reaches the file server as themselves (see mosaic.core.capabilities)."""
        return isinstance(self.credentials, PassThrough)

    @field_validator("host", "share")
    @classmethod
    def _one_component(cls, value: str) -> str:
        if any(c in value for c in "/\\\x00") or value != value.strip():
            raise ValueError("must be a single name without slashes")
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        try:
            normal = paths.normalize(value)  # refuses "..", NUL and backslashes
        except InvalidPathError as exc:  # an OSError: pydantic would let it out as a crash
            raise ValueError(exc.strerror) from None
        for part in filter(None, normal.split("/")):
            problem = windows_name_problem(part)
            if problem:
                raise ValueError(problem)
        return normal
