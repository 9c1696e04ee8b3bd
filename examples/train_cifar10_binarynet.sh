#!/usr/bin/env bash
# BinaryNet on CIFAR-10 (Courbariaux et al. 2016, arXiv:1602.02830; paper: 89.85 % test
# accuracy, seed 002: 88.6 %). Model `binarynet` (2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-
# 2x1024FC-10, every weight binary, BatchNorm after every layer), hparams set `binarynet`:
# squared hinge, Adam 1e-3 -> 3e-7 decayed per epoch, batch 50, 500 epochs, Glorot LR scale,
# latent weights clipped to [-1, 1], 45k/5k train/validation split.
#
# Needs a CUDA GPU. The run proceeds in resumable steps of at most STEP (default 9m) so it
# fits machines that grant 10-minute slots; every step checkpoints atomically and the next
# one continues exactly where it stopped. Re-running this script continues the same run.
#
#   XNORKIT_DATA=../shared/datasets examples/train_cifar10_binarynet.sh
#   ONE_STEP=1 examples/train_cifar10_binarynet.sh      # a single <=10-minute step, then exit
#
# Environment: STEP (default 9m), RUN_DIR (the run directory, default runs/<name>),
# DEVICE (default cuda), ONE_STEP (1: run one step and exit); extra arguments are passed to
# `xnorkit train`.
set -euo pipefail
STEP=${STEP:-9m}
RUN_DIR=${RUN_DIR:-runs/binarynet-cifar10-binarynet}
DEVICE=${DEVICE:-cuda}
XNORKIT=${XNORKIT:-xnorkit}
ARGS=(binarynet --dataset cifar10 --hparams-set binarynet --device "$DEVICE"
      --run-dir "$RUN_DIR" --time-limit "$STEP" --resume --no-progress "$@")

finished() {
  [[ -f "$RUN_DIR/metrics.json" ]] && python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["finished"] else 1)' "$RUN_DIR/metrics.json"
}

while true; do
  $XNORKIT train "${ARGS[@]}"
  if finished; then echo "run finished: $RUN_DIR/metrics.json"; break; fi
  if [[ "${ONE_STEP:-0}" == 1 ]]; then echo "step done; run the script again to continue"; break; fi
done
