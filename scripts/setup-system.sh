#!/usr/bin/env bash
# System packages bsnn-hw needs that PyPI does not ship: Icarus Verilog (simulator) and the Fashion-MNIST data set.
# Installs only what is missing; uses sudo when not root. Debian/Ubuntu (apt-get).
set -euo pipefail
need=()
command -v iverilog >/dev/null 2>&1 || need+=(iverilog)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "bsnn-hw setup: please install ${need[*]} with your package manager (apt-get not found)" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "bsnn-hw setup: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
