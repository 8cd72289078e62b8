"""What Active Directory's bind refusals mean.

AD answers every refused simple bind with ``invalidCredentials`` and hides the
reason in the diagnostic message, ``... AcceptSecurityContext error, data 775,
...``: the hex code after ``data`` is a Windows error number. The client only
ever sees 401; the admin reading the log needs the reason.
"""

from __future__ import annotations

import re

_DATA_CODE = re.compile(r"\bdata ([0-9a-fA-F]{3,8})\b")

#: sub-code -> what it means, as a log line says it
REASONS = {
    "525": "no such user",
    "52e": "wrong password (or no such user)",
    "530": "outside the account's logon hours",
    "531": "not allowed from this workstation",
    "532": "password expired",
    "533": "account disabled",
    "568": "too many security ids (group memberships)",
    "701": "account expired",
    "773": "password must be changed at next logon",
    "775": "account locked out",
}


def bind_refusal(message: str | None) -> tuple[str, str]:
    """(code, reason in words) for a refused bind's diagnostic message."""
    found = _DATA_CODE.search(message or "")
    if found is None:
        return "", "credentials refused"
    code = found.group(1).lower().lstrip("0") or "0"
    return code, REASONS.get(code, f"credentials refused (AD code {code})")


def is_wrong_password(code: str) -> bool:
    """Codes that count against the account's bad-password counter."""
    return code in ("52e", "")
