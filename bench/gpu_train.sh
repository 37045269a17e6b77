#!/usr/bin/env bash
# bench/train_targets.py on a GPU machine from a source checkout, without installing (bench/gpu_pkg.sh). Every
# argument goes to train_targets.py. A run longer than one command's limit: give it a fixed --epochs and an --out
# that stays on the machine, let the first command stop at its limit (a checkpoint is written after every epoch),
# then run the same command again with --resume:
#
#   bash bench/gpu_train.sh --only conv_full_vgg --epochs 12 --device cuda --data-root DIR --out /tmp/vgg
#   bash bench/gpu_train.sh --only conv_full_vgg --epochs 12 --device cuda --data-root DIR --out /tmp/vgg --resume
set -eu
source bench/gpu_pkg.sh
exec ${PYTHON:-python3} bench/train_targets.py "$@"
