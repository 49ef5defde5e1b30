#!/bin/sh
# Entrypoint of every whisper-k8s image (`docker run IMAGE CMD...`; Kubernetes pods of the chart set their own
# command, which does the same two things inline, so the chart also works with other images).
# 1. The Ascend CANN environment (compiler, runtime and HCCL libraries), when the image has the toolkit.
# 2. NODE_RANK for the training code, from the training operator's PET_NODE_RANK (torchrun itself reads the
#    PET_* variables; the operator also sets MASTER_ADDR, MASTER_PORT and RANK).
set -e
if [ -f /usr/local/Ascend/ascend-toolkit/set_env.sh ]; then
  # shellcheck disable=SC1091
  . /usr/local/Ascend/ascend-toolkit/set_env.sh
fi
export NODE_RANK="${NODE_RANK:-${PET_NODE_RANK:-0}}"
exec "$@"
