#!/usr/bin/env bash
# Shared by run.sh and test.sh: Debian packages, then a virtualenv in .venv.
# Usage: bootstrap.sh [extra-apt-packages...]  (MOSAIC_EXTRAS selects setup.cfg extras,
# MOSAIC_EDITABLE=1 installs the checkout in place)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in python3 python3-venv python3-pip "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# Tests run against the checkout (editable); a plain run installs a copy.
# (Not PIP_*: pip reads every PIP_<OPTION> variable as an option of its own.)
.venv/bin/python -m pip install -q ${MOSAIC_EDITABLE:+-e} ".${MOSAIC_EXTRAS:+[$MOSAIC_EXTRAS]}"
