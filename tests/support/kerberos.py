"""A Kerberos client for the tests: ``kinit`` against the Samba DC's KDC and SPNEGO
tokens for Mosaic's HTTP service principal (tests/support/samba_ad.py)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import gssapi
import pytest

from tests.support import samba_ad

#: the host of the DC's HTTP SPN (``HTTP/mosaic.corp.example.test``); no DNS: connect to
#: 127.0.0.1 and name it in Host
SERVICE_HOST = "mosaic.corp.example.test"


def private_credentials(corp: samba_ad.Domain, folder: Path,
                        monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``KRB5_CONFIG`` (the DC's realm) and a credential cache in ``folder``, set for this
    process (its GSSAPI calls) and returned for its children (kinit, curl)."""
    env = {"KRB5_CONFIG": str(corp.krb5_conf), "KRB5CCNAME": f"FILE:{folder / 'ccache'}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def kinit(account: samba_ad.Account, env: dict[str, str]) -> None:
    """A ticket-granting ticket for ``account`` in the cache ``env`` names
    (``KRB5_CONFIG`` and ``KRB5CCNAME``)."""
    done = subprocess.run(["kinit", account.upn.split("@")[0] + "@CORP.EXAMPLE.TEST"],
                          input=account.password + "\n", capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def negotiate_header() -> str:
    """A fresh SPNEGO token for the service, from the credential cache kinit filled
    (this process's ``KRB5CCNAME``)."""
    target = gssapi.Name(f"HTTP@{SERVICE_HOST}", gssapi.NameType.hostbased_service)
    context = gssapi.SecurityContext(name=target, usage="initiate",
                                     mech=gssapi.Mechanism.from_sasl_name("SPNEGO"))
    return "Negotiate " + base64.b64encode(context.step()).decode()
