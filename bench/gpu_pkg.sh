# Sourced by the GPU scripts (bench/gpu_accuracy.sh, bench/gpu_train.sh): assembles the package under $PKG from a
# source checkout (bsnn_hw + train as bsnn_hw.train) and puts it on PYTHONPATH, so that a machine without this
# project installed needs only torch, numpy, scikit-learn, click, rich and matplotlib (the CUDA image has them).
PKG=${PKG:-/tmp/bsnn_pkg}
rm -rf "$PKG"; mkdir -p "$PKG"
cp -r bsnn_hw "$PKG/bsnn_hw"; cp -r train "$PKG/bsnn_hw/train"
export PYTHONPATH=$PKG PYTHONUNBUFFERED=1
