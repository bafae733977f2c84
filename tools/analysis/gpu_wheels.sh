#!/usr/bin/env bash
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
#
# The wheels that tools/analysis/gpu_check.py needs on a GPU machine that
# has torch, torchvision, numpy, scipy, matplotlib, opencv, pytest (a CUDA
# image such as the H200 machines' one) but no network and none of the
# OpenMMLab packages. Run it here, where pip reaches an index; it downloads
# into an ignored folder (default: .whl/ at the repository root), then
# prints the total size of what would travel (the repository's files plus
# the wheels) and fails if that is over the limit.
#
#   bash tools/analysis/gpu_wheels.sh [DEST]
#
# What travels: mmengine, mmdet, mmsegmentation at the versions pinned in
# requirements/constraints.txt; mmcv as mmcv-lite (the same release without
# compiled ops: a pure-Python wheel, nothing to build; gpu_check.py supplies
# RoIAlign / NMS / focal loss through tools.analysis.lib.ops_standin); and
# the few pure-Python or abi3 dependencies such an image lacks. All are
# fetched for CPython $GPU_PYTHON_VERSION (default 3.12) on manylinux x86-64,
# without dependencies (each is named here), one version of each.
#
# Environment: PYTHON (the Python whose pip downloads; default python3),
# GPU_PYTHON_VERSION (3.12), LIMIT_MIB (55: the device tool takes 64 MiB in
# all, repository included; the rest is headroom).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$ROOT/.whl}"
PYTHON="${PYTHON:-python3}"
GPU_PYTHON_VERSION="${GPU_PYTHON_VERSION:-3.12}"
LIMIT_MIB="${LIMIT_MIB:-55}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"

pin() {  # pin NAME: the version constraints.txt pins
    local v
    v="$(sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$CONSTRAINTS")"
    if [ -z "$v" ]; then
        echo "gpu_wheels: $1 is not pinned in $CONSTRAINTS" >&2
        exit 1
    fi
    echo "$v"
}

WHEELS=(
    "mmengine==$(pin mmengine)"
    "mmcv-lite==$(pin mmcv)"
    "mmdet==$(pin mmdet)"
    "mmsegmentation==$(pin mmsegmentation)"
    # mmengine / mmcv
    addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.9
    # mmdet (imported by mmdet.structures and its metrics)
    terminaltables==3.1.10 pycocotools==2.0.11 shapely==2.2.0
    # mmseg (mmseg.utils imports its tokenizer)
    prettytable==3.18.0 wcwidth==0.9.4 ftfy==6.3.1
)
PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 \
         manylinux2014 manylinux1; do
    PLATFORMS+=(--platform "${p}_x86_64")
done

mkdir -p "$DEST"
# one version of each: start from an empty folder of ours
find "$DEST" -maxdepth 1 -name '*.whl' -delete
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "$GPU_PYTHON_VERSION" --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "${WHEELS[@]}"

count="$(find "$DEST" -maxdepth 1 -name '*.whl' | wc -l)"
if [ "$count" -ne "${#WHEELS[@]}" ]; then
    echo "gpu_wheels: expected ${#WHEELS[@]} wheels in $DEST, found $count" >&2
    exit 1
fi

wheel_bytes="$(du -cb "$DEST"/*.whl | tail -n 1 | cut -f1)"
# what the device tool sends besides: tracked and untracked-not-ignored files
repo_bytes="$(cd "$ROOT" && git ls-files -z -co --exclude-standard |
    (cd "$ROOT" && xargs -0 -r du -cb 2>/dev/null || true) |
    awk '$2 == "total" { s += $1 } END { print s + 0 }')"
total=$((wheel_bytes + repo_bytes))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "gpu_wheels: ${count} wheels in $DEST: $(mib "$wheel_bytes")"
echo "gpu_wheels: repository files: $(mib "$repo_bytes"); total $(mib "$total") (limit ${LIMIT_MIB} MiB)"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "gpu_wheels: over the limit" >&2
    exit 1
fi
