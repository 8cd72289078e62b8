"""Fill a freshly provisioned Samba AD domain with the tests' directory content.

Run by tests/support/samba_ad.py as ``/usr/bin/python3 samba_ad_populate.py < spec.json``
(Samba's Python bindings exist only for Debian's own interpreter, never for the
venv), once per provisioning, while the DC is not running: it opens sam.ldb
directly, as samba-tool does. The JSON spec (``samba_ad_build.populate_input``)
gives the password policy, an OU, groups (with their nesting), users (with the
state each one is in), the share folders with the one group that may read each,
and the principal whose keytab to export. Everything in one process: ~0.5 s,
where one samba-tool call per step would take ~10 s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import ldb
from samba import enable_net_export_keytab
from samba.auth import system_session
from samba.auth_util import system_session_unix
from samba.net import Net
from samba.ntacls import setntacl
from samba.param import LoadParm
from samba.samba3 import param as s3param
from samba.samdb import SamDB

#: AD's "never" for an interval (samba.netcmd.common.NEVER_TIMESTAMP): lockout
#: duration "until an administrator unlocks", password age "never expires"
NEVER = -0x8000000000000000
TICKS_PER_MINUTE = 60 * 10**7
UF_ACCOUNTDISABLE = 0x2
#: a FILETIME in the past (2020-01-01): accountExpires of an expired account
LONG_AGO = 132223104000000000
#: read and execute (list a folder, read a file): FILE_GENERIC_READ | FILE_EXECUTE
READ = "0x1200a9"


def replace(db: SamDB, dn: ldb.Dn | str, **values: str | bytes) -> None:
    message = ldb.Message(ldb.Dn(db, str(dn)))
    for name, value in values.items():
        attribute = name.replace("_", "-")
        message[attribute] = ldb.MessageElement(value, ldb.FLAG_MOD_REPLACE, attribute)
    db.modify(message)


def find_dn(db: SamDB, name: str) -> ldb.Dn:
    found = db.search(db.domain_dn(), ldb.SCOPE_SUBTREE,
                      f"(sAMAccountName={ldb.binary_encode(name)})", attrs=[])
    return found[0].dn


def sid_of(db: SamDB, name: str) -> str:
    found = db.search(db.domain_dn(), ldb.SCOPE_SUBTREE,
                      f"(sAMAccountName={ldb.binary_encode(name)})", attrs=["objectSid"])
    return str(db.schema_format_value("objectSid", found[0]["objectSid"][0]), "ascii")


def set_policy(db: SamDB, policy: dict[str, int]) -> None:
    """As ``samba-tool domain passwordsettings set``: minutes become negative ticks."""
    replace(db, db.domain_dn(), maxPwdAge=str(NEVER),
            lockoutThreshold=str(policy["lockout_threshold"]),
            lockoutDuration=str(-policy["lockout_duration_min"] * TICKS_PER_MINUTE),
            lockOutObservationWindow=str(-policy["reset_lockout_after_min"] * TICKS_PER_MINUTE))


def add_groups(db: SamDB, groups: list[dict[str, Any]]) -> None:
    for group in groups:
        db.newgroup(group["name"], groupou=group.get("ou"))
    for group in groups:
        for parent in group["member_of"]:
            db.add_remove_group_members(parent, [group["name"]])


def add_user(db: SamDB, user: dict[str, Any]) -> None:
    db.newuser(user["user"], user["password"], givenname=user["given_name"],
               surname=user["surname"], userou=user.get("ou"))
    for group in user["member_of"]:
        db.add_remove_group_members(group, [user["user"]])
    dn = find_dn(db, user["user"])
    if user.get("spn"):
        replace(db, dn, servicePrincipalName=user["spn"])
    if user.get("enctypes"):
        replace(db, dn, msDS_SupportedEncryptionTypes=str(user["enctypes"]))
    if user.get("description"):
        replace(db, dn, description=user["description"])
    set_state(db, dn, user.get("state"))


def set_state(db: SamDB, dn: ldb.Dn, state: str | None) -> None:
    """Put an account into the state whose bind fails with one AD sub-code."""
    if state is None:
        return
    if state == "disabled":  # 533
        db.disable_account(f"(distinguishedName={dn})")
    elif state == "must_change":  # 773
        replace(db, dn, pwdLastSet="0")
    elif state == "expired":  # 701
        replace(db, dn, accountExpires=str(LONG_AGO))
    elif state == "no_logon_hours":  # 530: 168 hour bits, all zero
        replace(db, dn, logonHours=bytes(21))
    elif state == "locked":  # 775: see lock_for_good
        replace(db, dn, lockoutTime="1")
    else:
        raise ValueError(f"unknown account state {state!r}")


def lock_for_good(db: SamDB, locked: list[str], policy: dict[str, int]) -> None:
    """A fine-grained password policy (PSO) whose lockout lasts until an administrator
    unlocks applies to the locked accounts only: their lockoutTime (written directly)
    keeps them locked however old it is, while the domain's own lockout stays short."""
    if not locked:
        return
    dn = f"CN=mosaic-locked,CN=Password Settings Container,CN=System,{db.domain_dn()}"
    db.add({
        "dn": dn, "objectClass": "msDS-PasswordSettings",
        "msDS-PasswordSettingsPrecedence": "1",
        "msDS-PasswordReversibleEncryptionEnabled": "FALSE",
        "msDS-PasswordHistoryLength": "24", "msDS-PasswordComplexityEnabled": "TRUE",
        "msDS-MinimumPasswordLength": "7", "msDS-MinimumPasswordAge": "0",
        "msDS-MaximumPasswordAge": str(NEVER),
        "msDS-LockoutThreshold": str(policy["lockout_threshold"]),
        "msDS-LockoutObservationWindow": str(-policy["reset_lockout_after_min"]
                                             * TICKS_PER_MINUTE),
        "msDS-LockoutDuration": str(NEVER),
        "msDS-PSOAppliesTo": [str(find_dn(db, user)) for user in locked],
    })


def make_share(db: SamDB, lp: LoadParm, share: dict[str, Any]) -> None:
    """The share's folders, each readable by one group only: NT ACLs as
    ``samba-tool ntacl set --use-s3fs`` writes them (the NT ACL in an xattr, the
    matching POSIX ACL on the file, SIDs mapped to ids through idmap.ldb)."""
    domain_sid = str(db.get_domain_sid())
    s3param.get_context().load(lp.configfile)  # smbd's own view of the shares
    root = Path(share["path"])
    root.mkdir(parents=True, exist_ok=True)

    def protect(path: Path, sddl: str) -> None:
        setntacl(lp, str(path), sddl, domain_sid, system_session_unix(),
                 use_ntvfs=False, service=share["name"])

    # everyone signed in lists the top; nothing below inherits from it
    protect(root, "O:BAG:DUD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;" + READ + ";;;AU)")
    for folder, spec in share["folders"].items():
        group = sid_of(db, spec["group"])
        (root / folder).mkdir()
        protect(root / folder,
                f"O:BAG:DUD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;{READ};;;{group})")
        for name, content in spec["files"].items():
            (root / folder / name).write_text(content)
            protect(root / folder / name,
                    f"O:BAG:DUD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;{READ};;;{group})")


def export_keytab(lp: LoadParm, path: str, principal: str) -> None:
    enable_net_export_keytab()
    Net(None, lp).export_keytab(keytab=path, principal=principal)


def main() -> None:
    spec = json.load(sys.stdin)
    lp = LoadParm()
    lp.load(spec["conf"])
    db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
    set_policy(db, spec["policy"])
    for ou in spec["ous"]:
        db.create_ou(f"{ou},{db.domain_dn()}")
    add_groups(db, spec["groups"])
    for user in spec["users"]:
        add_user(db, user)
    lock_for_good(db, [u["user"] for u in spec["users"] if u.get("state") == "locked"],
                  spec["policy"])
    if spec.get("share"):
        make_share(db, lp, spec["share"])
    if spec.get("keytab"):
        export_keytab(lp, spec["keytab"]["path"], spec["keytab"]["principal"])


if __name__ == "__main__":
    main()
