#!/usr/bin/env bash
# Set up (once) and open the course in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/jupyter lab --notebook-dir=lessons "$@"
