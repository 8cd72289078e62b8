#!/usr/bin/env bash
# Install everything the tests need (Debian packages, Python packages) and run
# the whole suite. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_EXTRAS=test scripts/bootstrap.sh litmus davfs2 rclone cadaver
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
