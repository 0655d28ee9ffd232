#!/usr/bin/env bash
# Build the course website into _build/html with Jupyter Book 2: the README as the landing page, every lesson with
# its outputs from a real execution, the teaching guide and a page per CLI command (book/build.py says how).
#   bash scripts/site.sh                   lessons executed in full mode (about 17 minutes on 2 cores the first time)
#   CFCOURSE_FAST=1 bash scripts/site.sh   fast mode, as CI builds it
# Executed lessons are kept in _build/executed/MODE: a rebuild executes only the lessons that changed (a change to
# the cfcourse package executes them all). Extra arguments go to book/build.py, e.g. --no-execute or --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh site
export TQDM_DISABLE=1
exec .venv/bin/python book/build.py "$@"
