#!/usr/bin/env bash
# One-command set-up of the fcvit_mm development environment.
#
#   bash tools/install.sh            # creates .venv (if missing) and installs
#   VENV=/some/env bash tools/install.sh
#   STACK=onedl bash tools/install.sh  # the onedl-* packages (.venv-onedl)
#
# VENV may be relative: it is taken relative to the directory the script is
# started from (`make` passes the one it was given, relative to the
# repository root). What it does, idempotently:
#   1. creates the virtual environment;
#   2. installs torch/torchvision at the versions of requirements/constraints.txt;
#   3. installs mmcv with its compiled ops: from a wheel cached under
#      $FCVIT_MM_CACHE (default ~/.cache/fcvit_mm), or, the first time on a
#      machine, by building mmcv's PyPI source (C++ standard raised to C++20,
#      which torch >= 2.10 headers need; CUDA ops when torch sees a GPU and
#      nvcc exists) and caching the wheel;
#   4. installs mmengine, mmdet, mmsegmentation, mmpretrain and the test tools
#      (with requirements/deploy.txt and openvino.txt: onnx, onnxruntime,
#      openvino, for the deploy tests);
#   5. installs this package in editable mode.
# Every command's output goes to a log file ($FCVIT_MM_CACHE/logs/); a failed
# step ends the script with the step, the command and the log's last lines.
# A user who already has torch + mmcv can skip all this: `pip install -e .`.
#
# STACK picks the OpenMMLab packages: `openmmlab` (the default: mmcv,
# mmengine, mmdet, mmsegmentation, mmpretrain; requirements/constraints.txt)
# or `onedl`, their maintained continuation under other distribution names
# and the same import names (onedl-mmcv, built from its source as mmcv is,
# onedl-mmengine, onedl-mmdetection, onedl-mmsegmentation, onedl-mmpretrain;
# requirements/constraints-onedl.txt, default environment .venv-onedl).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${STACK:-openmmlab}"
case "$STACK" in
    openmmlab)
        SUFFIX=""
        MMCV_DIST=mmcv
        LIB_DISTS=(mmengine mmdet mmsegmentation mmpretrain) ;;
    onedl)
        SUFFIX="-onedl"
        MMCV_DIST=onedl-mmcv
        LIB_DISTS=(onedl-mmengine onedl-mmdetection onedl-mmsegmentation
                   onedl-mmpretrain) ;;
    *)
        echo "[install] unknown STACK '$STACK': use openmmlab (the default) or onedl" >&2
        exit 2 ;;
esac
# A relative VENV is relative to the caller's working directory; make it
# absolute before any cd (the mmcv build runs inside its unpacked source).
VENV="$(realpath -m "${VENV:-$ROOT/.venv$SUFFIX}")"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
CACHE="$(realpath -m "${FCVIT_MM_CACHE:-$HOME/.cache/fcvit_mm}")"
CONSTRAINTS="$ROOT/requirements/constraints$SUFFIX.txt"
RUNTIME="requirements/runtime$SUFFIX.txt"

log() { printf '[install] %s\n' "$*"; }

mkdir -p "$CACHE/logs"
LOG="$(mktemp "$CACHE/logs/install-$(date +%Y%m%d-%H%M%S)-XXXX.log")"
STEP="start"
CMD=""

on_error() {
    local status=$1
    trap - ERR
    {
        echo "[install] FAILED (exit status $status) at step: $STEP"
        [ -n "$CMD" ] && echo "[install] command: $CMD"
        echo "[install] full log: $LOG"
        echo "[install] last lines of the log:"
        tail -n 25 "$LOG" | sed 's/^/[install]   | /'
    } >&2
    exit "$status"
}
trap 'on_error $?' ERR

step() { STEP="$*"; CMD=""; log "$*"; echo "=== $* ===" >>"$LOG"; }

run() {  # run CMD...: the command's output goes to the log
    CMD="$*"
    echo "+ $CMD" >>"$LOG"
    "$@" >>"$LOG" 2>&1
    CMD=""
}

pin() {  # pin NAME -> the version pinned in constraints.txt
    sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"
}

if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtual environment $VENV"
    run "$PYTHON" -m venv "$VENV"
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

wheel_ok() {  # wheel_ok FILE: is FILE a complete zip archive?
    "$PY" -m zipfile -t "$1" >/dev/null 2>&1
}

requirements_changed() {  # a requirement file newer than the last install?
    local f
    for f in "$RUNTIME" "$CONSTRAINTS" requirements/tests.txt \
        requirements/deploy.txt requirements/openvino.txt setup.py; do
        [ "$f" -nt "$VENV/.fcvit_mm_installed" ] && return 0
    done
    return 1
}
ready() {  # every pin installed and everything importable: say so, in one
    local dist args=()  # interpreter start (torch and the libraries once)
    for dist in torch torchvision "$MMCV_DIST" "${LIB_DISTS[@]}"; do
        args+=("$dist==$(pin "$dist")")
    done
    "$PY" - "$STACK" "${args[@]}" <<'EOF'
import sys
from importlib.metadata import version
for pinned in sys.argv[2:]:
    dist, want = pinned.split('==')
    if version(dist).split('+')[0] != want:
        sys.exit(f'{dist} {version(dist)} is installed, not {want}')
import mmcv, mmcv.ops, mmdet, mmseg, mmpretrain, fcvit_mm
import pytest, xdist, hypothesis, onnxruntime, openvino  # noqa: F401
print('[install] ready (stack: %s): mmcv' % sys.argv[1], mmcv.__version__, 'mmdet', mmdet.__version__,
      'mmseg', mmseg.__version__, 'mmpretrain', mmpretrain.__version__)
EOF
}
finish() {  # the ready line; nothing failed, so the log is not needed
    tail -n 1 "$LOG"
    rm -f "$LOG"
}

# --- nothing to do (the common case): one check ------------------------------
if ! requirements_changed && ready >>"$LOG" 2>&1; then
    finish
    exit 0
fi

# --- 1. torch -------------------------------------------------
if ! have torch "$(pin torch)" || ! have torchvision "$(pin torchvision)"; then
    step "installing torch $(pin torch), torchvision $(pin torchvision)"
    run "${PIP[@]}" install -c "$CONSTRAINTS" "torch==$(pin torch)" \
        "torchvision==$(pin torchvision)" numpy
fi

# --- 2. mmcv with ops, built once per machine ---------------------------------
MMCV_FILE="${MMCV_DIST//-/_}"  # the name in its sdist and wheel files
build_mmcv() {  # build_mmcv VERSION WHEEL_DIR: build and cache the wheel
    local version=$1 wheel_dir=$2 build src tmp
    step "building $MMCV_DIST $version with ops; takes about 10 minutes once per machine (log: $LOG)"
    build="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand now: $build is local
    trap "rm -rf '$build'" EXIT
    STEP="downloading the $MMCV_DIST $version source"
    run "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation \
        -d "$build" "$MMCV_DIST==$version"
    STEP="installing mmcv's build tools"
    run "${PIP[@]}" install -c "$CONSTRAINTS" setuptools wheel ninja packaging
    tar -xzf "$build/$MMCV_FILE-$version.tar.gz" -C "$build"
    src="$build/$MMCV_FILE-$version"
    # torch >= 2.10 headers use C++20 features; mmcv's setup.py asks for C++17.
    STEP="patching $MMCV_DIST's setup.py for C++20"
    run sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    run grep -q -- '-std=c++20' "$src/setup.py"
    STEP="compiling $MMCV_DIST $version (MMCV_WITH_OPS=1)"
    cd "$src"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        run "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$build/dist" .
    cd "$ROOT"
    # into the cache atomically: a kill or a full disk leaves no partial wheel
    STEP="caching the $MMCV_DIST wheel in $wheel_dir"
    mkdir -p "$wheel_dir"
    for whl in "$build"/dist/"$MMCV_FILE"-*.whl; do
        tmp="$(mktemp "$wheel_dir/.partial-XXXXXX")"
        run cp "$whl" "$tmp"
        run mv -f "$tmp" "$wheel_dir/$(basename "$whl")"
    done
}

MMCV_VERSION="$(pin "$MMCV_DIST")"
if ! have "$MMCV_DIST" "$MMCV_VERSION" || ! "$PY" -c 'import mmcv.ops' 2>/dev/null; then
    TAG="$("$PY" - <<'EOF'
import sys, shutil, torch
cuda = torch.cuda.is_available() and shutil.which('nvcc') is not None
print(f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.split('+')[0]}-"
      + (f"cu{torch.version.cuda}" if cuda else "cpu"))
EOF
)"
    WHEEL_DIR="$CACHE/$MMCV_DIST-$MMCV_VERSION-$TAG"
    rm -f "$WHEEL_DIR"/.partial-*  # left by a killed earlier run
    WHEEL=""
    for whl in "$WHEEL_DIR"/"$MMCV_FILE"-*.whl; do
        [ -e "$whl" ] || continue
        if wheel_ok "$whl"; then
            WHEEL="$whl"
            break
        fi
        log "cached wheel $whl is damaged; removing it and building again"
        rm -f "$whl"
    done
    if [ -z "$WHEEL" ]; then
        build_mmcv "$MMCV_VERSION" "$WHEEL_DIR"
        WHEEL="$(find "$WHEEL_DIR" -maxdepth 1 -name "$MMCV_FILE-*.whl" | head -n 1)"
        log "cached $WHEEL"
    fi
    step "installing $WHEEL"
    run "${PIP[@]}" install -c "$CONSTRAINTS" --no-deps --force-reinstall "$WHEEL"
    run "${PIP[@]}" install -c "$CONSTRAINTS" addict yapf opencv-python
fi

# --- 3. the OpenMMLab libraries, test tools, this package ---------------------
if requirements_changed || ! ready >/dev/null 2>&1; then
    step "installing the OpenMMLab libraries ($STACK) and test tools"
    run "${PIP[@]}" install -c "$CONSTRAINTS" -r "$RUNTIME" \
        -r requirements/tests.txt
    step "installing fcvit_mm (editable)"
    run "${PIP[@]}" install -c "$CONSTRAINTS" --no-deps --no-build-isolation -e .
    touch "$VENV/.fcvit_mm_installed"
fi
STEP="checking the environment"
CMD="$PY - (every pin installed; mmcv.ops, mmdet, mmseg, mmpretrain, fcvit_mm and the test tools import)"
ready >>"$LOG" 2>&1
finish
