#!/usr/bin/env bash
# Set up (once: the toolkit and JupyterLab, no test tools) and open the course in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh lab
exec .venv/bin/jupyter lab --notebook-dir=lessons "$@"
