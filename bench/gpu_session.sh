#!/usr/bin/env bash
# Issue 20's GPU measurement as one prepared command, so a session with a GPU spends its minutes measuring.
#
#   1. here, on any machine with espeak-ng, flite and the project's venv (about 30 s):
#        bash bench/gpu_session.sh prepare
#      -> bench/.speech/batches.pt (ignored by git): 32 generated clips for the bf16-vs-fp32 loss curves
#   2. on the GPU machine (the device tool: carry ["bench/.speech"], timeout_s 600):
#        bash bench/gpu_session.sh measure
#      -> bench/results/train_throughput.json and train_throughput.log, also copied to $OUT when that is set
#
# `measure` gives bench/train_throughput.py a budget (BUDGET_SECONDS, default 500): sections that would not fit
# in what is left are skipped and named in the result; the result file is rewritten after every section, and a
# hard stop (timeout) 60 s after the budget still leaves it and the log in $OUT. Uses python3 (the GPU image's
# Python with torch and transformers) unless PYTHON is set.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

case "${1:-}" in
  prepare)
    "${PYTHON:-.venv/bin/python}" bench/loss_curves.py prepare
    ;;
  measure)
    budget="${BUDGET_SECONDS:-500}"
    result="${RESULT:-bench/results/train_throughput.json}"  # a dry run elsewhere: DEVICE=cpu RESULT=/tmp/x.json
    mkdir -p "$(dirname "$result")"
    log="${result%.json}.log"
    [ -f bench/.speech/batches.pt ] || echo "gpu_session: no bench/.speech/batches.pt (run 'bash bench/gpu_session.sh prepare' and carry bench/.speech): the loss curves will be skipped" | tee "$log"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
    timeout --signal=INT --kill-after=10 "$((budget + 60))" "${PYTHON:-python3}" bench/train_throughput.py \
      --device "${DEVICE:-cuda}" --budget-seconds "$budget" --output "$result" 2>&1 | tee -a "$log"
    code=${PIPESTATUS[0]}
    if [ -n "${OUT:-}" ]; then cp "$result" "$log" "$OUT"/ 2>/dev/null; fi
    echo "gpu_session: exit $code; result $result${OUT:+ (and in \$OUT)}"
    exit "$code"
    ;;
  *)
    echo "usage: bash bench/gpu_session.sh prepare|measure (see the comments at its top)" >&2
    exit 2
    ;;
esac
