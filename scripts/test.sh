#!/usr/bin/env bash
# Set up (once, with the test tools), then run every unit test and every lesson (in fast mode) with no network.
# Tests run on one worker per CPU (pytest-xdist); each notebook and each test module stays whole on one worker, and
# lessons 08-10 run in order on one worker (tests/conftest.py groups them and hands out the lessons first, hence
# --no-loadscope-reorder). The 15 slowest tests are listed at the end.
# The full run (no arguments) also builds the website from the lessons just executed and opens it in a browser:
# nbval's executions and those of the lessons with a widget, which tests/test_browser.py runs whole in JupyterLab
# instead of nbval, are kept in the site's execution cache (CFCOURSE_SITE_CACHE=1), and tests/test_site.py then
# runs alone, building the site without executing any lesson again (CFCOURSE_SITE_NO_EXECUTE=1).
# Extra arguments go to pytest instead: `bash scripts/test.sh -k metrics`, or `-n 0` for one process.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"  # run again inside the namespaces below
cd "$(dirname "$0")/.."
if [ "${CFCOURSE_TEST_INSIDE:-0}" != 1 ]; then
    bash scripts/setup.sh test
    # Where we may create namespaces (root on Linux), run with no network at all but loopback, and in a mount
    # namespace of the tests' own, where the session's data folder becomes a read-only mount (tests/conftest.py),
    # as a class's shared data folder may be: every test and lesson shows it writes its runs elsewhere.
    export CFCOURSE_TEST_INSIDE=1
    if command -v unshare >/dev/null && unshare --net --mount true 2>/dev/null; then
        echo "running the tests with networking off (a network namespace with loopback only) and a read-only data folder"
        export CFCOURSE_TEST_MOUNTNS=1
        exec unshare --net --mount sh -c 'ip link set lo up 2>/dev/null || true; exec bash "$@"' sh "$self" "$@"
    fi
    if command -v unshare >/dev/null && unshare --net true 2>/dev/null; then
        echo "running the tests with networking off (a network namespace with loopback only)"
        exec unshare --net sh -c 'ip link set lo up 2>/dev/null || true; exec bash "$@"' sh "$self" "$@"
    fi
fi
export CFCOURSE_FAST=1 CFCOURSE_OFFLINE=1 TQDM_DISABLE=1 MPLBACKEND=Agg
# Each worker and each lesson's kernel gets one thread unless it chooses otherwise: threads beyond the free CPUs spin.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
workers="${CFCOURSE_TEST_WORKERS:-$(.venv/bin/python -c 'import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())')}"
cmd=(.venv/bin/python -m pytest --nbval-lax --nbval-current-env -n "$workers" --dist loadgroup
     --no-loadscope-reorder --durations=15
     tests lessons)
if [ $# -gt 0 ]; then
    exec "${cmd[@]}" "$@"
fi
export CFCOURSE_SITE_CACHE=1 CFCOURSE_BROWSER_LESSONS=1
"${cmd[@]}" --ignore=tests/test_site.py
echo "the website, built from the executions above and opened in a browser (tests/test_site.py):"
CFCOURSE_SITE_NO_EXECUTE=1 exec .venv/bin/python -m pytest -n 0 --durations=5 tests/test_site.py
