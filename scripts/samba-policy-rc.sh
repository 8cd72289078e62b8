#!/usr/bin/env bash
# Before Debian's samba packages are installed: keep them from starting the system's
# smbd, nmbd, samba (AD DC) and winbind. nmbd would broadcast on the real network;
# the tests start their own smbd on loopback (tests/support/samba.py).
# An existing /usr/sbin/policy-rc.d (a container's "exit 101") is left as it is.
set -euo pipefail
policy=/usr/sbin/policy-rc.d
[ -e "$policy" ] && exit 0
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_root tee "$policy" >/dev/null <<'POLICY'
#!/bin/sh
# Installed by mosaic's scripts/samba-policy-rc.sh: Samba's services never start by themselves.
for arg in "$@"; do
  case "$arg" in
    smbd|nmbd|samba|samba-ad-dc|winbind|samba-dcerpcd) exit 101 ;;
  esac
done
exit 0
POLICY
as_root chmod 755 "$policy"
