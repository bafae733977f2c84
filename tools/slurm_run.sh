#!/usr/bin/env bash
# What slurm_train.sh and slurm_test.sh share: one srun of a tool.
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   slurm_run.sh PARTITION JOB_NAME TOOL.py [tool args]
# SRUN_ARGS is split on white space into extra srun options.
set -euo pipefail  # called by the dist_*/slurm_* wrappers, which check usage
PARTITION=$1
JOB_NAME=$2
TOOL=$3
shift 3
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
    "$PYTHON" -u "$DIR/$TOOL" "$@"
