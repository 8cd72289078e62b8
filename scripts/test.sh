#!/usr/bin/env bash
# Install everything the tests need (Debian packages, Python packages) and run
# the whole suite. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# postgresql: only for its initdb/pg_ctl. The tests use a server on 127.0.0.1:5432 if it
# takes a trust login (CI), else start a throwaway one of their own (tests/support/postgres.py);
# this script never starts or reconfigures the system cluster.
# swift*, memcached: the single-node Swift the tests start under a temp dir (tests/support/swift.py).
# nodejs npm: Azurite (package.json), the Azure Blob emulator. Only where no node is installed:
# NodeSource's nodejs bundles npm and conflicts with Debian's npm package.
# samba smbclient: the standalone smbd the SMB tests start under a temp dir
# (tests/support/samba.py); the policy keeps Debian from starting the system's.
# samba-ad-dc samba-ad-provision krb5-user ldap-utils winbind: the Active Directory DCs
# the directory tests provision and start under a temp dir (tests/support/samba_ad.py).
# curl: a real client of several tests. build-essential python3-dev libkrb5-dev: python-gssapi
# (Kerberos sign-on) has no Linux wheels and builds against MIT krb5.
scripts/samba-policy-rc.sh
command -v npm >/dev/null || node_packages="nodejs npm"
MOSAIC_EXTRAS=test MOSAIC_EDITABLE=1 scripts/bootstrap.sh litmus davfs2 rclone cadaver postgresql \
  swift swift-proxy swift-object swift-container swift-account memcached \
  samba smbclient samba-ad-dc samba-ad-provision krb5-user ldap-utils winbind \
  build-essential python3-dev libkrb5-dev curl \
  ${node_packages:-}
# node_modules/ as package-lock.json pins it (skipped when already installed from this lock)
[ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
