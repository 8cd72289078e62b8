"""``azure_files``: an Azure file share over SMB 3.

Azure Files speaks SMB: this provider is the ``smb`` provider with Azure's
defaults, nothing of its own. Its options map onto :class:`smb.Options`: the
storage account signs in as ``AZURE\\<account>`` with its key as password, to
``<account>.file.core.windows.net`` on port 445, SMB 3.0 or later, every
message encrypted and signed (Azure refuses unencrypted SMB from outside its
region, and a key must never cross the network in clear). No setting can lower
those: an SMB 2.x dialect or an unencrypted session is not an option here.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from mosaic.core.capabilities import BuildContext
from mosaic.providers import smb

CAPABILITIES = smb.CAPABILITIES
#: the domain Azure Files expects before the account name (NTLM)
AZURE_DOMAIN = "AZURE"
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_SMB = smb.Options.model_fields


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account: str = Field(description="Storage account name (3-24 lowercase letters and digits)")
    account_key: SecretStr = Field(description="The storage account's key (base64, as the "
                                               "portal shows it)")
    share: str = Field(min_length=1, description="File share name")
    path: str = Field("", description="Folder of the share served as the mount's root; "
                                      "`{user}` is replaced by the signed-in user")
    endpoint: str | None = Field(
        None, description="Host name of the file service (default "
                          "`<account>.file.core.windows.net`; another for sovereign clouds "
                          "or a private endpoint)")
    port: int = Field(445, ge=1, le=65535, description="SMB port (Azure: 445 only)")
    min_dialect: Literal["3.0", "3.0.2", "3.1.1"] = Field(
        "3.0", description="Lowest SMB dialect accepted (Azure Files needs SMB 3 for "
                           "encryption; 2.x is not accepted)")
    create: bool = _SMB["create"]
    connect_timeout_s: float = _SMB["connect_timeout_s"]
    timeout_s: float = _SMB["timeout_s"]
    retry_after_failure_s: float = _SMB["retry_after_failure_s"]
    io_block_size: int = _SMB["io_block_size"]
    listing_cache_seconds: float = _SMB["listing_cache_seconds"]

    @field_validator("account")
    @classmethod
    def _account_name(cls, value: str) -> str:
        if not _ACCOUNT_NAME.fullmatch(value):
            raise ValueError("a storage account name is 3-24 lowercase letters and digits")
        return value

    def smb_options(self) -> smb.Options:
        """The same mount as :mod:`smb` options, with Azure's fixed settings."""
        tunables = ("create", "connect_timeout_s", "timeout_s", "retry_after_failure_s",
                    "io_block_size", "listing_cache_seconds")
        return smb.Options.model_validate({
            "host": self.endpoint or f"{self.account}.file.core.windows.net",
            "port": self.port, "share": self.share, "path": self.path,
            "domain": AZURE_DOMAIN,
            "credentials": {"kind": "service_account", "username": self.account,
                            "password": self.account_key},
            "encrypt": True, "require_signing": True, "min_dialect": self.min_dialect,
            **{name: getattr(self, name) for name in tunables},
        })


def build(options: Options, context: BuildContext) -> smb.SMBFileSystem:
    return smb.build(options.smb_options(), context, kind="azure_files")
