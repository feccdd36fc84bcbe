#!/usr/bin/env python3
"""Writes an IDX image set (Fashion-MNIST by default) as a class-per-folder tree of PNG files.

usage: tools/fmnist_to_folder.py [--data DIR] [--limit N] OUT_DIR

Layout: OUT_DIR/<split>/<k>-<name>/<index:05d>.png for split train and test, where k is the
label and name the class name with '/' and ' ' replaced by '_'. Folder names sort in label order
(k is one digit), and with `data.file_order: name` the files of a split are read in IDX order,
so a folder run must give the IDX run's bits (PNG is lossless). --limit keeps the first N images
of each split. Pure Python (zlib, through make_test_pngs.py).
"""
import argparse, os, struct, sys

from make_test_pngs import png, read   # the same pure-Python PNG writer and IDX reader

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a.add_argument("--limit", type=int, default=0)
    a.add_argument("out")
    args = a.parse_args()
    folders = [f"{k}-{name.replace('/', '_').replace(' ', '_')}" for k, name in enumerate(NAMES)]
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read(os.path.join(args.data, f"{prefix}-images-idx3-ubyte"))
        labels = read(os.path.join(args.data, f"{prefix}-labels-idx1-ubyte"))
        n, h, w = struct.unpack(">III", images[4:16])
        if args.limit:
            n = min(n, args.limit)
        for folder in folders:
            os.makedirs(os.path.join(args.out, split, folder), exist_ok=True)
        for i in range(n):
            pixels = images[16 + i * h * w:16 + (i + 1) * h * w]
            with open(os.path.join(args.out, split, folders[labels[8 + i]], f"{i:05d}.png"), "wb") as f:
                f.write(png(w, h, [pixels[y * w:(y + 1) * w] for y in range(h)]))
            if (i + 1) % 10000 == 0 or i + 1 == n:
                print(f"\rfmnist_to_folder: {split} {i + 1}/{n}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)


if __name__ == "__main__":
    main()
