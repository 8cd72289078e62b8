"""``credentials: pass_through`` in the config, and the password's wrapper.

Where check-config accepts pass_through (a mount of a tenant with an Active
Directory domain) and where it refuses it, at the line and key; the service
account form keeps working beside it. No server here: tests/test_pass_through.py
runs it against the Samba AD DC.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from mosaic.config.holder import redacted_dump
from mosaic.config.loader import ConfigError, Problem, load_config
from mosaic.core.capabilities import BuildContext
from mosaic.core.credentials import Secret, SignedInAccount
from mosaic.providers.smb_options import PassThrough, ServiceAccount

PASSWORD = "Copper-Kettle-41!"
DIRECTORY = """\
    active_directory:
      - {name: corp.example.test, netbios: CORP, urls: ["ldaps://dc1.corp.example.test"]}
"""


def config_yaml(credentials: str, directory: str = DIRECTORY, extra: str = "") -> str:
    """A tenant with an smb mount /pt: its provider at line 6, its credentials at line 7."""
    return ("tenants:\n  acme:\n    root: {type: memory}\n"
            "    mounts:\n"
            "      /pt:\n"
            "        provider:\n"
            f"          credentials: {credentials}\n"
            "          type: smb\n          host: fs1.corp.example.test\n          share: pt\n"
            f"{extra}{directory}")


def load(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "mosaic.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("credentials", [
    "pass_through", "{kind: pass_through}", "{kind: pass_through, domain: CORP}"])
def test_pass_through_is_accepted_on_a_tenant_with_a_directory(tmp_path: Path,
                                                               credentials: str) -> None:
    path = tmp_path / "mosaic.yaml"
    path.write_text(config_yaml(credentials))
    options = load_config(path).tenants["acme"].mounts["/pt"].provider.options()
    assert isinstance(options.credentials, PassThrough)  # type: ignore[attr-defined]
    assert options.signs_in_as_user  # type: ignore[attr-defined]
    assert "pass_through" in redacted_dump(load_config(path))


def test_a_tenant_without_a_directory_is_refused_naming_the_mount(tmp_path: Path) -> None:
    text = config_yaml("pass_through", directory="")
    path = tmp_path / "mosaic.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "mosaic", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert (f"{path}:7:24: tenants.acme.mounts./pt.provider.credentials: mount /pt: "
            "credentials pass_through signs each user in to the file server with their own "
            "Active Directory account, and this tenant has no active_directory domain"
            ) in done.stdout + done.stderr


def test_the_tenant_root_cannot_pass_through(tmp_path: Path) -> None:
    text = ("tenants:\n  acme:\n"
            "    root: {type: smb, host: fs1, share: pt, credentials: pass_through}\n"
            f"{DIRECTORY}")
    [problem] = load(tmp_path, text)
    assert (problem.line, problem.key) == (3, "tenants.acme.root.credentials")
    assert "local users could not list the tenant" in problem.message


@pytest.mark.parametrize(("credentials", "extra", "line", "key", "message"), [
    ("pass_through", "          domain: CORP\n", 7, "tenants.acme.mounts./pt.provider",
     "`domain` is the service account's; with pass_through, set `credentials: "
     "{kind: pass_through, domain: ...}`"),
    ("{kind: pass_thru}", "", 7, "tenants.acme.mounts./pt.provider.credentials",
     "unknown kind 'pass_thru'; expected service_account or pass_through"),
    ("passthrough", "", 7, "tenants.acme.mounts./pt.provider.credentials",
     "expected a mapping (a service account) or pass_through"),
    ("{kind: pass_through, username: svc}", "", 7,
     "tenants.acme.mounts./pt.provider.credentials.username",
     "unknown key 'username'; expected one of: domain, kind"),
])
def test_pass_through_mistakes_are_named_at_their_line(tmp_path: Path, credentials: str,
                                                      extra: str, line: int, key: str,
                                                      message: str) -> None:
    [problem] = load(tmp_path, config_yaml(credentials, extra=extra))
    assert (problem.line, problem.key, problem.message) == (line, key, message)


def test_a_service_account_still_reads_its_password_file(tmp_path: Path) -> None:
    (tmp_path / "fs1.secret").write_text(PASSWORD + "\n")
    path = tmp_path / "mosaic.yaml"
    path.write_text(config_yaml("{username: svc, password_file: fs1.secret}", directory=""))
    options = load_config(path).tenants["acme"].mounts["/pt"].provider.options()
    credentials = options.credentials  # type: ignore[attr-defined]
    assert isinstance(credentials, ServiceAccount)
    assert credentials.password.get_secret_value() == PASSWORD
    assert not options.signs_in_as_user  # type: ignore[attr-defined]
    problems = load(tmp_path, config_yaml("{username: svc, pasword: x}", directory=""))
    assert [p.message for p in problems] == [
        "missing required key 'password'", "unknown key 'pasword' (did you mean 'password'?); "
        "expected one of: kind, password, password_file, username"]


# -- the password in memory ---------------------------------------------------------------

def test_a_secret_never_shows_its_value() -> None:
    secret = Secret(PASSWORD)
    account = SignedInAccount("CORP", "alice", secret)
    context = BuildContext("acme", "/pt", Path("/tmp"), None, account)
    for text in (repr(secret), str(secret), f"{secret}", repr(account), repr(context),
                 str(context)):
        assert PASSWORD not in text and "***" in text
    assert "CORP\\alice" in repr(account)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(secret)
    assert secret.reveal() == PASSWORD
    assert secret != Secret(PASSWORD)  # compared by identity: no equality oracle


def test_a_tag_tells_passwords_apart_under_its_key_only() -> None:
    key, other_key = b"k" * 32, b"o" * 32
    assert Secret(PASSWORD).tag(key) == Secret(PASSWORD).tag(key)
    assert Secret(PASSWORD).tag(key) != Secret(PASSWORD + "x").tag(key)
    assert Secret(PASSWORD).tag(key) != Secret(PASSWORD).tag(other_key)
    assert PASSWORD.encode() not in Secret(PASSWORD).tag(key)
