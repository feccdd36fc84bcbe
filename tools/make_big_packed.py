#!/usr/bin/env python3
"""Writes a large packed data set (Lockstep's format, docs/packed-format.md) for memory and
streaming benchmarks: Fashion-MNIST images scaled 2× (56 × 56) on a 64 × 64 grey canvas at a
random offset, with some pixel noise, repeated to any number of records.

usage: tools/make_big_packed.py [--data DIR] [--train N] [--test N] [--side 64] [--shard-mib 256] OUT_DIR

Record i of a split is source image i mod (images in the split), so labels keep Fashion-MNIST's
balance. The default, 1,000,000 training records of 4,096 bytes, is 4.1 GB: 73 times the bytes of
Fashion-MNIST's training split. Train on it with image_size 28 and random_resized_crop (the
model then sees Fashion-MNIST's shape; evaluation takes the centre 28 × 28). Written with numpy
and zlib; shards appear under a .partial name and are renamed when complete, the manifest last.
"""
import argparse, gzip, json, os, struct, sys, time, zlib

import numpy as np

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def idx(path):
    for p in (path + ".gz", path):
        if os.path.exists(p):
            return gzip.open(p).read() if p.endswith(".gz") else open(p, "rb").read()
    sys.exit(f"make_big_packed: {path}(.gz) not found")


def source(data, prefix):
    images = idx(os.path.join(data, f"{prefix}-images-idx3-ubyte"))
    labels = idx(os.path.join(data, f"{prefix}-labels-idx1-ubyte"))
    n, h, w = struct.unpack(">III", images[4:16])
    x = np.frombuffer(images, np.uint8, offset=16).reshape(n, h, w)
    return x.repeat(2, axis=1).repeat(2, axis=2), np.frombuffer(labels, np.uint8, offset=8).astype(np.int32)


def records(images, labels, count, side, seed, batch=8192):
    """Yields (uint8 array [b, side, side], int32 labels [b]) in index order."""
    n, big = len(images), images.shape[1]
    room = side - big
    rng = np.random.default_rng(seed)
    for start in range(0, count, batch):
        b = min(batch, count - start)
        idx = (np.arange(start, start + b) % n)
        canvas = np.zeros((b, side, side), np.uint8)
        dy, dx = rng.integers(0, room + 1, b), rng.integers(0, room + 1, b)
        for k in range(b):
            canvas[k, dy[k]:dy[k] + big, dx[k]:dx[k] + big] = images[idx[k]]
        noise = rng.integers(0, 8, canvas.shape, dtype=np.uint8)
        yield np.minimum(canvas.astype(np.uint16) + noise, 255).astype(np.uint8), labels[idx]


def write_split(out, split, images, labels, count, side, per_shard, seed, stats):
    shards, class_counts, written = [], [0] * 10, 0
    rec = side * side
    header = lambda first, n: b"LSPACK\x00\x01" + struct.pack("<IIQQ", rec, 0, first, n)
    f = path = None
    crc, index, started = 0, bytearray(), time.time()
    for block, lab in records(images, labels, count, side, seed):
        for k in range(len(block)):
            if f is None:
                path = os.path.join(out, f"{split}-{len(shards):05d}.lsp")
                n = min(per_shard, count - written)
                f = open(path + ".partial", "wb")
                h = header(written, n)
                f.write(h)
                crc, index, first = zlib.crc32(h), bytearray(), written
            r = block[k].tobytes()
            f.write(r)
            crc = zlib.crc32(r, crc)
            index += struct.pack("<iI", int(lab[k]), zlib.crc32(r))
            class_counts[lab[k]] += 1
            written += 1
            if len(index) // 8 == min(per_shard, count - first):
                f.write(index)
                crc = zlib.crc32(index, crc)
                f.flush(); os.fsync(f.fileno()); f.close(); f = None
                os.rename(path + ".partial", path)
                shards.append({"file": os.path.basename(path), "first": first, "count": len(index) // 8,
                               "bytes": 32 + (len(index) // 8) * (rec + 8), "crc32": crc})
        if stats is not None:
            v = block.astype(np.float64) / 255
            stats[0] += v.sum(); stats[1] += (v * v).sum(); stats[2] += v.size
        print(f"\rmake_big_packed: {split} {written}/{count} ({written * rec / 1e9:.2f} GB, {time.time() - started:.0f} s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"count": count, "class_counts": class_counts, "shards": shards}


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a.add_argument("--train", type=int, default=1_000_000)
    a.add_argument("--test", type=int, default=10_000)
    a.add_argument("--side", type=int, default=64)
    a.add_argument("--shard-mib", type=int, default=256)
    a.add_argument("out")
    args = a.parse_args()
    if args.side < 56:
        sys.exit("make_big_packed: --side must be at least 56 (the 2× image)")
    os.makedirs(args.out, exist_ok=True)
    if os.path.exists(os.path.join(args.out, "manifest.json")):
        sys.exit(f"make_big_packed: {args.out} already holds a packed set (manifest.json); remove it first")
    per_shard = max(1, args.shard_mib * 2**20 // (args.side * args.side + 8))
    stats = [0.0, 0.0, 0]
    splits = {"train": write_split(args.out, "train", *source(args.data, "train"), args.train, args.side, per_shard, 1, stats),
              "test": write_split(args.out, "test", *source(args.data, "t10k"), args.test, args.side, per_shard, 2, None)}
    mean = stats[0] / stats[2]
    std = (stats[1] / stats[2] - mean * mean) ** 0.5
    manifest = {"format": "lockstep-packed", "version": 1, "record_type": "bytes", "classes": 10, "class_names": NAMES,
                "sample_shape": [1, 28, 28], "stored_shape": [1, args.side, args.side],
                "normalization": {"normalization": "pixels", "normalize_mean": f"{mean:.7g}", "normalize_std": f"{std:.7g}"},
                "channel_mean": [mean], "channel_std": [std], "splits": splits}
    with open(os.path.join(args.out, "manifest.json.partial"), "w") as f:
        json.dump(manifest, f, indent=1)
    os.rename(os.path.join(args.out, "manifest.json.partial"), os.path.join(args.out, "manifest.json"))
    total = sum(s["bytes"] for sp in splits.values() for s in sp["shards"])
    print(f"make_big_packed: wrote {args.out} ({total / 1e9:.2f} GB); mean {mean:.4f}, std {std:.4f}")


if __name__ == "__main__":
    main()
