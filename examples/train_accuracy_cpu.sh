#!/usr/bin/env bash
# The CPU accuracy runs of benchmarks/accuracy.md: MNIST binarynet_mlp, MNIST bnn_mnist_cnn,
# Fashion-MNIST bnn_mnist_cnn (the default size and 1.5x wider), each with its registered
# hyperparameter set, 2 threads.
#
#   XNORKIT_DATA=../shared/datasets examples/train_accuracy_cpu.sh [mlp|cnn|fashion|fashion_wide|all]
#
# Each run writes its directory under $LOG_DIR (default runs/accuracy) and a copy of its
# metrics.json and console log under benchmarks/results/accuracy/. Runs are resumable:
# re-running after an interruption continues the interrupted run (--resume).
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_DIR=${LOG_DIR:-runs/accuracy}
OUT=${OUT:-benchmarks/results/accuracy}
THREADS=${THREADS:-2}
XNORKIT=${XNORKIT:-xnorkit}
mkdir -p "$OUT" "$LOG_DIR"

run() {  # name model dataset set
  local name=$1 model=$2 dataset=$3 set=$4
  local run_dir="$LOG_DIR/$name"
  echo "== $name: $XNORKIT train $model --dataset $dataset --hparams-set $set --threads $THREADS"
  $XNORKIT train "$model" --dataset "$dataset" --hparams-set "$set" --threads "$THREADS" \
      --run-dir "$run_dir" --resume --no-progress 2>&1 | tee "$OUT/$name.log"
  cp "$run_dir/metrics.json" "$OUT/$name.json"
}

what=${1:-all}
case "$what" in
  mlp|all) run mnist_binarynet_mlp binarynet_mlp mnist ours ;;&
  cnn|all) run mnist_bnn_mnist_cnn bnn_mnist_cnn mnist ours ;;&
  fashion|all) run fashion_mnist_bnn_mnist_cnn bnn_mnist_cnn fashion_mnist fashion ;;&
  fashion_wide|all) run fashion_mnist_bnn_mnist_cnn_wide bnn_mnist_cnn fashion_mnist fashion_wide ;;
  mlp|cnn|fashion) ;;
  *) echo "usage: $0 [mlp|cnn|fashion|fashion_wide|all]" >&2; exit 2 ;;
esac
