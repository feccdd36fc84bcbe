#!/usr/bin/env python3
"""Writes the first N test images of an IDX data set as 8-bit grey PNG files (pure Python).

usage: tools/make_test_pngs.py [--data DIR] [--count N] OUT_DIR
Files are OUT_DIR/test-00000.png, ...; their labels go to OUT_DIR/labels.txt, one per line.
"""
import argparse, gzip, os, struct, zlib


def png(width, height, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + row for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def read(path):
    for p in (path + ".gz", path):
        if os.path.exists(p):
            return gzip.open(p).read() if p.endswith(".gz") else open(p, "rb").read()
    raise SystemExit(f"make_test_pngs: {path}(.gz) not found")


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a.add_argument("--count", type=int, default=10)
    a.add_argument("out")
    args = a.parse_args()
    images = read(os.path.join(args.data, "t10k-images-idx3-ubyte"))
    labels = read(os.path.join(args.data, "t10k-labels-idx1-ubyte"))
    n, h, w = struct.unpack(">III", images[4:16])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "labels.txt"), "w") as f:
        for i in range(min(args.count, n)):
            pixels = images[16 + i * h * w:16 + (i + 1) * h * w]
            rows = [pixels[y * w:(y + 1) * w] for y in range(h)]
            with open(os.path.join(args.out, f"test-{i:05d}.png"), "wb") as out:
                out.write(png(w, h, rows))
            f.write(f"{labels[8 + i]}\n")


if __name__ == "__main__":
    main()
