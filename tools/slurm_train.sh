#!/usr/bin/env bash
# Training on a SLURM cluster:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/slurm_run.sh" "$1" "$2" train.py "$3" \
    --work-dir="$4" --launcher="slurm" "${@:5}"
