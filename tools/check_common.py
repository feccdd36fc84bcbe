"""What both checkers share: their command line, and the test inputs (Fashion-MNIST-style IDX
test images as byte/255, CSV rows as raw features) with Lockstep's logits to compare against."""
import argparse, csv, gzip, os, sys

import numpy as np


def idx_images(directory):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            data = gzip.open(path).read() if name.endswith(".gz") else open(path, "rb").read()
            n, h, w = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
            return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, h, w).astype(np.float32) / 255
    sys.exit(f"onnx_check: {directory}: no t10k-images-idx3-ubyte(.gz)")


def csv_rows(path, label_column):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]
    keep = [i for i, name in enumerate(header) if name != label_column]
    return np.array([[float(r[i]) for i in keep] for r in body], dtype=np.float32)


def arguments(first):
    """Parses `FIRST LOGITS (--idx DIR | --csv FILE) [--label-column] [--count] [--tolerance]`;
    returns (args, inputs limited to --count, the matching rows of the logits file)."""
    p = argparse.ArgumentParser()
    p.add_argument(first)
    p.add_argument("logits")
    p.add_argument("--idx")
    p.add_argument("--csv")
    p.add_argument("--label-column", default="label")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--tolerance", type=float, default=1e-4)
    a = p.parse_args()
    x = idx_images(a.idx) if a.idx else csv_rows(a.csv, a.label_column)
    x = np.ascontiguousarray(x[:a.count])
    return a, x, np.load(a.logits)[:len(x)]
