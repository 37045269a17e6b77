#!/usr/bin/env bash
# The main job, end to end, in a folder of its own (default ./demo):
#   train (digits, hardware-exact) -> inspect -> golden run -> generate Verilog -> synthesize (iCE40) -> verify the RTL.
# Every step is a `bsnn-hw` command a user would type; the folder keeps every output.
set -euo pipefail
out=${1:-demo}
mkdir -p "$out"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. train a 64-128-10 binarized SNN on scikit-learn's digits (rate coded, T=16; about a minute)"
bsnn-hw train --dataset digits --out "$out/digits.bsnn" --threads 2
bsnn-hw inspect "$out/digits.bsnn"

step "2. the golden model on the first 8 test images (the trainer's split)"
python - "$out" <<'PY'
import sys, numpy as np
from bsnn_hw.data import load_dataset
x, y = load_dataset("digits", "test", seed=0)
np.savez(f"{sys.argv[1]}/test8.npz", x=x[:8], y=y[:8])
PY
bsnn-hw run "$out/digits.bsnn" "$out/test8.npz"

step "3. generate Verilog (one self-contained file) and its manifest"
bsnn-hw generate "$out/digits.bsnn" -o "$out/rtl"
ls -l "$out/rtl"

step "4. synthesize for an iCE40 UP5K (Yosys + nextpnr from PyPI): resources and Fmax"
bsnn-hw synth "$out/rtl" --target ice40 --out "$out/synth-ice40.json"

step "5. verify: the RTL on Verilator against the golden model, bit for bit, on 100 test images"
bsnn-hw verify "$out/digits.bsnn" --data digits --samples 100 --sim verilator --plot "$out/verify-spikes.png" --limit 10

printf '\n\033[1mdone:\033[0m outputs in %s/ (model, curves, Verilog, synthesis report, spike plot)\n' "$out"
