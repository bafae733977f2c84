#!/usr/bin/env bash
# Training on a SLURM cluster:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# SRUN_ARGS is split on white space into extra srun options.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
read -r -a SRUN_EXTRA <<< "${SRUN_ARGS:-}"
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}
export PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}"

set -x
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_EXTRA[@]+"${SRUN_EXTRA[@]}"} \
    "$PYTHON" -u "$DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher="slurm" "$@"
