#!/usr/bin/env bash
# The main job, end to end, in a folder of its own (default ./demo).
set -euo pipefail
out=${1:-demo}
mkdir -p "$out"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a random 64-32-10 model (no training needed)"
bsnn-hw random --sizes 64-32-10 --timesteps 16 --out "$out/random.bsnn"
bsnn-hw inspect "$out/random.bsnn"

step "2. golden model on random inputs"
python -c "import numpy as np; np.save('$out/inputs.npy', np.random.default_rng(0).integers(0, 256, (8, 64), dtype=np.uint8))"
bsnn-hw run "$out/random.bsnn" "$out/inputs.npy"
