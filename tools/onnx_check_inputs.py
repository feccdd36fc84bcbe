"""Test inputs for the checkers: Fashion-MNIST-style IDX test images as byte/255, CSV rows as raw features."""
import csv, gzip, os, sys

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
