#!/usr/bin/env bash
# What dist_train.sh and dist_test.sh share: one torchrun of a tool.
#   dist_run.sh TOOL.py GPUS [tool args]
# Environment: NNODES (1), NODE_RANK (0), PORT (29500), MASTER_ADDR (127.0.0.1).
# Without a GPU it runs GPUS CPU processes (gloo backend).
set -euo pipefail  # called by the dist_*/slurm_* wrappers, which check usage
TOOL=$1
GPUS=$2
shift 2
DIR="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}"
# dist_launch.py: torchrun, with a short message for a user error
exec "${PYTHON:-python}" "$DIR/dist_launch.py" \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$GPUS" \
    --master_port="${PORT:-29500}" \
    "$DIR/$TOOL" "$@"
