#!/bin/sh
# run.sh - the CSV example: Fashion-MNIST's T-shirts, trousers and bags as a
# CSV directory, trained with K-FAC, a validation split and early stopping.
#   examples/csv/run.sh [KFAC_BIN] [IDX_DIR] [OUT_DIR]
set -e
here=$(dirname "$0")
kfac=${1:-build/kfac}
idx=${2:-/usr/share/datasets/fashion-mnist}
out=${3:-build/csv-example}
/usr/bin/python3 "$here/fashion_to_csv.py" "$idx" "$out"
"$kfac" train "$here/three.net" --data "$out" --quiet --log "$out/run.csv"
