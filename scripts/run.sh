#!/usr/bin/env bash
# Install Mosaic and run it on its embedded default: local disk under
# ./mosaic-data, SQLite, tenant "default", user "admin" (password printed once).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/mosaic serve "$@"
