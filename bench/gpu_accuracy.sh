#!/usr/bin/env bash
# The accuracy targets of issue 10 on one GPU machine, several runs sharing the card, each given a time budget
# (bench/train_targets.py --budget: a timed probe epoch, then as many epochs as fit). Runs from a source checkout
# without installing (bench/gpu_pkg.sh).
#
#   bash bench/gpu_accuracy.sh DATA_DIR OUT_DIR BUDGET_SECONDS
#
# DATA_DIR holds Fashion-MNIST's four IDX files (.gz); OUT_DIR receives one <run>.bsnn per run and runs.log (every
# run's log, then every result row). RUNS (default: all) names the runs to start; DEVICE (default cuda). A budget of
# 0 trains each run for its fixed number of epochs (the vgg4_e* runs: their cosine schedule spans exactly those).
set -u
data=$1; out=$2; budget=$3
source bench/gpu_pkg.sh
mkdir -p "$out"
run() {   # name target overrides...
    local name=$1 target=$2; shift 2
    [[ -n "${RUNS:-}" && " $RUNS " != *" $name "* ]] && return
    local sets=(); for s in "$@"; do sets+=(--set "$s"); done
    ${PYTHON:-python3} bench/train_targets.py --only "$target" --device "${DEVICE:-cuda}" --threads 2 --data-root "$data" --epochs 60 \
        $([[ $budget != 0 ]] && echo --budget "$budget") --out "/tmp/run_$name" "${sets[@]}" >"$out/$name.log" 2>&1
    cp "/tmp/run_$name/bench_$target.bsnn" "$out/$name.bsnn" 2>/dev/null
}
run conv_full_pixel conv_full encoding=pixel &
run conv_mid_pixel conv_mid encoding=pixel &
run conv_full_pixel_t4 conv_full encoding=pixel timesteps=4 lr=0.001 &
run fc512_pixel fmnist512_long encoding=pixel timesteps=16 label_smoothing=0.0 &
run conv_mid_pixel_lr conv_mid encoding=pixel lr=0.001 &
run conv_full_pixel_lr conv_full encoding=pixel lr=0.001 &
run conv_full_pixel_lr2 conv_full encoding=pixel lr=0.002 &
run conv_full_pixel_t16 conv_full encoding=pixel lr=0.001 timesteps=16 &
# wider and deeper all-binary conv stacks (FULL), pixel input, T = 8
w512=arch=64c3-p2-128c3-p2-512-10
run full_w256 conv_full encoding=pixel lr=0.001 arch=64c3-p2-128c3-p2-256-10 &
run full_w512 conv_full encoding=pixel lr=0.001 $w512 &
run full_w512_ls conv_full encoding=pixel lr=0.001 $w512 label_smoothing=0.1 &
run full_w512_shift conv_full encoding=pixel lr=0.001 $w512 label_smoothing=0.1 augment_shift=1 &
run full_deep3 conv_full encoding=pixel lr=0.001 arch=64c3-p2-128c3-p2-256c3-p2-256-10 &
run full_vgg4 conv_full encoding=pixel lr=0.001 arch=64c3-64c3-p2-128c3-128c3-p2-512-10 &
run full_ls conv_full encoding=pixel lr=0.001 label_smoothing=0.1 &
# the deeper stack (conv_full_vgg: 64c3-64c3-p2-128c3-128c3-p2-512-10) for a fixed number of epochs
run vgg4_e9 conv_full_vgg epochs=9 &
run vgg4_e10 conv_full_vgg epochs=10 &
run vgg4_e10_ls conv_full_vgg epochs=10 label_smoothing=0.1 &
run vgg4_e8_s1 conv_full_vgg epochs=8 seed=1 &
run vgg4_e8_s2 conv_full_vgg epochs=8 seed=2 &
wait
for f in "$out"/*.log; do echo "=== $(basename "$f" .log)"; cat "$f"; done >"$out/runs.txt"
rm -f "$out"/*.log
echo "=== results" >>"$out/runs.txt"
grep -h "target met" "$out/runs.txt" | tee -a "$out/runs.txt"
mv "$out/runs.txt" "$out/runs.log"
