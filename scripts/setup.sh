#!/usr/bin/env bash
# Create .venv in the repository, install cfcourse at the versions in constraints.txt, and cache the data.
#   bash scripts/setup.sh        what a learner needs: the toolkit and JupyterLab (scripts/lab.sh runs this)
#   bash scripts/setup.sh test   that and the test tools (scripts/test.sh runs this)
#   bash scripts/setup.sh site   that and the website's tools (scripts/site.sh runs this; the test tools include them)
# Safe to run again: it installs only when pyproject.toml, constraints.txt or the choice changed.
# On Linux without a CUDA GPU it tries PyTorch's CPU-only wheels first (about 0.2 GB to download instead of about
# 3 GB, and far less disk), and falls back to PyPI's default wheels where their index is out of reach;
# CFCOURSE_TORCH=default skips the try.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-lab}" in
    lab) extras="lab" ;;
    test) extras="lab,test" ;;
    site) extras="lab,site" ;;
    *) echo "usage: bash scripts/setup.sh [lab|test|site]" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "cfcourse needs Python 3.11 or newer; set PYTHON=/path/to/python3.11 and run again" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
hash="$("$PYTHON" -c 'import hashlib; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in ("pyproject.toml", "constraints.txt"))).hexdigest())')"

installed() {  # is .venv installed for these extras (or for the test extras, which include them)?
    [ "$(cat ".venv/.cfcourse-$1" 2>/dev/null)" = "$hash" ]
}

has_cuda_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'
}

try_cpu_torch() {  # the tested torch and torchvision, as CPU-only builds; no harm done when out of reach
    local torch vision
    torch="$(sed -n 's/^torch==//p' constraints.txt)"
    vision="$(sed -n 's/^torchvision==//p' constraints.txt)"
    if .venv/bin/python -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$torch')" 2>/dev/null; then
        return 0  # the tested torch is already here (CPU or CUDA build): keep it
    fi
    echo "no CUDA GPU: trying PyTorch's CPU-only wheels (download.pytorch.org)"
    if "${pip[@]}" install --quiet --timeout 20 --retries 1 -c constraints.txt \
            --extra-index-url https://download.pytorch.org/whl/cpu "torch==$torch+cpu" "torchvision==$vision+cpu" \
            > .venv/cpu-torch.log 2>&1; then
        echo "installed the CPU-only PyTorch $torch"
    else
        echo "PyTorch's CPU-only wheels are out of reach (pip's words: .venv/cpu-torch.log); installing PyPI's" \
             "default PyTorch wheels instead (they bundle CUDA: about 3 GB to download, 5 GB on disk)"
    fi
}

if ! installed "$extras" && ! installed "lab,test"; then
    echo "installing cfcourse and its dependencies into .venv (the first time takes a few minutes)"
    "${pip[@]}" install --quiet -c constraints.txt pip setuptools
    if [ "$(uname -s)" = Linux ] && [ "${CFCOURSE_TORCH:-auto}" != default ] && ! has_cuda_gpu; then
        try_cpu_torch
    fi
    "${pip[@]}" install --quiet -c constraints.txt -e ".[$extras]"
    rm -f .venv/.cfcourse-*
    echo "$hash" > ".venv/.cfcourse-$extras"
fi
.venv/bin/python -m cfcourse fetch
