#!/usr/bin/python3
"""fashion_to_csv.py - a CSV data set from Fashion-MNIST, for the CSV example.

usage: fashion_to_csv.py IDX_DIR OUT_DIR [PER_CLASS]

Writes OUT_DIR/train.csv and OUT_DIR/test.csv: three classes (0 T-shirt,
1 trouser, 8 bag, relabelled 0, 1, 2), at most PER_CLASS training examples
of each (default 1000; the test set takes a third as many), each image
average-pooled 2x2 to 14x14 = 196 features in [0, 1], then the label in the
last column, after a header row. Standard library only.
"""
import gzip
import os
import struct
import sys

CLASSES = {0: 0, 1: 1, 8: 2}


def read_idx(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndims = data[3]
    dims = struct.unpack(">" + "I" * ndims, data[4:4 + 4 * ndims])
    return dims, data[4 + 4 * ndims:]


def find(idx_dir, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(idx_dir, name)):
            return os.path.join(idx_dir, name)
    sys.exit("fashion_to_csv: no %s in %s" % (stem, idx_dir))


def write(idx_dir, prefix, out_path, per_class):
    dims, pixels = read_idx(find(idx_dir, prefix + "-images-idx3-ubyte"))
    _, labels = read_idx(find(idx_dir, prefix + "-labels-idx1-ubyte"))
    rows, cols = dims[1], dims[2]
    taken = {k: 0 for k in CLASSES}
    with open(out_path, "w") as out:
        out.write(",".join("p%d" % i for i in range((rows // 2) * (cols // 2))) + ",label\n")
        for n, label in enumerate(labels):
            if label not in CLASSES or taken[label] >= per_class:
                continue
            taken[label] += 1
            img = pixels[n * rows * cols:(n + 1) * rows * cols]
            feats = []
            for r in range(0, rows, 2):
                for c in range(0, cols, 2):
                    s = img[r * cols + c] + img[r * cols + c + 1] + img[(r + 1) * cols + c] + img[(r + 1) * cols + c + 1]
                    feats.append("%.4g" % (s / 1020.0))
            out.write(",".join(feats) + ",%d\n" % CLASSES[label])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    per_class = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    os.makedirs(sys.argv[2], exist_ok=True)
    write(sys.argv[1], "train", os.path.join(sys.argv[2], "train.csv"), per_class)
    write(sys.argv[1], "t10k", os.path.join(sys.argv[2], "test.csv"), max(1, per_class // 3))


if __name__ == "__main__":
    main()
