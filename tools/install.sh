#!/usr/bin/env bash
# One-command set-up of the fcvit_mm development environment.
#
#   bash tools/install.sh            # creates .venv (if missing) and installs
#   VENV=/some/env bash tools/install.sh
#
# What it does, idempotently:
#   1. creates the virtual environment;
#   2. installs torch/torchvision at the versions of requirements/constraints.txt;
#   3. installs mmcv with its compiled ops: from a wheel cached under
#      $FCVIT_MM_CACHE (default ~/.cache/fcvit_mm), or, the first time on a
#      machine, by building mmcv's PyPI source (C++ standard raised to C++20,
#      which torch >= 2.10 headers need) and caching the wheel;
#   4. installs mmengine, mmdet, mmsegmentation, mmpretrain and the test tools;
#   5. installs this package in editable mode.
# A user who already has torch + mmcv can skip all this: `pip install -e .`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A relative VENV is relative to the caller's working directory; make it
# absolute before any cd (the mmcv build runs inside its unpacked source).
VENV="$(realpath -m "${VENV:-$ROOT/.venv}")"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
CACHE="${FCVIT_MM_CACHE:-$HOME/.cache/fcvit_mm}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"

pin() {  # pin NAME -> the version pinned in constraints.txt
    sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"
}

log() { printf '[install] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
export PIP_DISABLE_PIP_VERSION_CHECK=1

have() {  # have DIST VERSION: is DIST==VERSION installed in the venv?
    "$PY" - "$1" "$2" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version(sys.argv[1]).split('+')[0] == sys.argv[2] else 1)
EOF
}

# --- 1. torch -------------------------------------------------
if ! have torch "$(pin torch)" || ! have torchvision "$(pin torchvision)"; then
    log "installing torch $(pin torch), torchvision $(pin torchvision)"
    "${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==$(pin torch)" \
        "torchvision==$(pin torchvision)" numpy
fi

# --- 2. mmcv with ops, built once per machine ---------------------------------
MMCV_VERSION="$(pin mmcv)"
if ! have mmcv "$MMCV_VERSION" || ! "$PY" -c 'import mmcv.ops' 2>/dev/null; then
    TAG="$("$PY" - <<'EOF'
import sys, shutil, torch
cuda = torch.cuda.is_available() and shutil.which('nvcc') is not None
print(f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.split('+')[0]}-"
      + (f"cu{torch.version.cuda}" if cuda else "cpu"))
EOF
)"
    WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION-$TAG"
    WHEEL="$(ls "$WHEEL_DIR"/mmcv-*.whl 2>/dev/null | head -n 1 || true)"
    if [ -z "$WHEEL" ]; then
        log "building mmcv $MMCV_VERSION with ops ($TAG); takes about 10 minutes once per machine"
        "${PIP[@]}" install -q -c "$CONSTRAINTS" setuptools wheel ninja packaging
        BUILD="$(mktemp -d)"
        trap 'rm -rf "$BUILD"' EXIT
        "${PIP[@]}" download -q --no-deps --no-binary :all: -d "$BUILD" "mmcv==$MMCV_VERSION"
        tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
        SRC="$BUILD/mmcv-$MMCV_VERSION"
        # torch >= 2.10 headers use C++20 features; mmcv 2.1.0 asks for C++17.
        sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
        grep -q -- '-std=c++20' "$SRC/setup.py"
        (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$BUILD/dist" .)
        mkdir -p "$WHEEL_DIR"
        cp "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR/"
        WHEEL="$(ls "$WHEEL_DIR"/mmcv-*.whl | head -n 1)"
        log "cached $WHEEL"
    fi
    log "installing $WHEEL"
    "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-deps --force-reinstall "$WHEEL"
    "${PIP[@]}" install -q -c "$CONSTRAINTS" addict yapf opencv-python
fi

# --- 3. the OpenMMLab libraries, test tools, this package ---------------------
if ! have mmdet "$(pin mmdet)" || ! have mmsegmentation "$(pin mmsegmentation)" \
    || ! have mmpretrain "$(pin mmpretrain)" || ! have mmengine "$(pin mmengine)" \
    || ! "$PY" -c 'import fcvit_mm, pytest, hypothesis' 2>/dev/null \
    || [ requirements/runtime.txt -nt "$VENV/.fcvit_mm_installed" ] \
    || [ requirements/tests.txt -nt "$VENV/.fcvit_mm_installed" ] \
    || [ setup.py -nt "$VENV/.fcvit_mm_installed" ]; then
    log "installing OpenMMLab libraries and test tools"
    "${PIP[@]}" install -q -c "$CONSTRAINTS" -r requirements/runtime.txt -r requirements/tests.txt
    "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-deps --no-build-isolation -e .
    touch "$VENV/.fcvit_mm_installed"
fi
"$PY" -c 'import mmcv.ops, mmdet, mmseg, mmpretrain, fcvit_mm; print("[install] ready: mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmseg", mmseg.__version__, "mmpretrain", mmpretrain.__version__)'
