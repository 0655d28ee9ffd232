#!/usr/bin/env bash
# Set up (once), then run every unit test and every lesson (in fast mode) with no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CFCOURSE_FAST=1 CFCOURSE_OFFLINE=1 TQDM_DISABLE=1 MPLBACKEND=Agg
cmd=(.venv/bin/python -m pytest --nbval-lax --nbval-current-env tests lessons "$@")
# Where we may create a network namespace (root on Linux), run with no network at all but loopback.
if command -v unshare >/dev/null && unshare --net true 2>/dev/null; then
    echo "running the tests with networking off (a network namespace with loopback only)"
    exec unshare --net sh -c 'ip link set lo up 2>/dev/null || true; exec "$@"' sh "${cmd[@]}"
fi
exec "${cmd[@]}"
