#!/usr/bin/env bash
# Makes Fashion-MNIST available to benchmarks/criteria.py without any download at run time.
#
# The data comes from Debian's `dataset-fashion-mnist` package (installed here with apt-get
# when missing; needs root). The package ships gzipped IDX files under
# /usr/share/datasets/fashion-mnist/; torchvision's FashionMNIST(download=False) only accepts
# the un-gzipped files in <root>/FashionMNIST/raw/, so they are decompressed there:
#   benchmarks/.cache/data/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
# Idempotent: files already present are kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="/usr/share/datasets/fashion-mnist"
DEST="$ROOT/benchmarks/.cache/data/FashionMNIST/raw"
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    echo "get-fashion-mnist: installing Debian package dataset-fashion-mnist"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 \
        || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y dataset-fashion-mnist; }
fi

mkdir -p "$DEST"
for f in "${FILES[@]}"; do
    if [ -s "$DEST/$f" ]; then
        continue
    fi
    if [ -f "$SRC/$f.gz" ]; then
        gunzip -c "$SRC/$f.gz" > "$DEST/$f.tmp" && mv "$DEST/$f.tmp" "$DEST/$f"
    elif [ -f "$SRC/$f" ]; then
        cp "$SRC/$f" "$DEST/$f"
    else
        echo "get-fashion-mnist: error: $SRC has neither $f nor $f.gz" >&2
        exit 1
    fi
done
echo "get-fashion-mnist: IDX files ready in $DEST"
ls -l "$DEST"
