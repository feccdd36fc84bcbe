#!/usr/bin/env python3
"""Says whether safetensors checkpoints hold the same tensors, bit for bit (Python stdlib only).

usage: tools/same_tensors.py REFERENCE OTHER [OTHER ...]

Compares every tensor's name, dtype, shape and bytes; the metadata (config, data format, metrics)
is ignored, since runs from different data formats describe their data differently. Prints one
line per OTHER and exits 1 if any differs.
"""
import json, struct, sys


def tensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    return {name: (t["dtype"], tuple(t["shape"]), blob[base + t["data_offsets"][0]:base + t["data_offsets"][1]])
            for name, t in header.items()}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().splitlines()[2])
    reference = tensors(sys.argv[1])
    failed = False
    for path in sys.argv[2:]:
        other = tensors(path)
        differ = sorted(k for k in reference.keys() | other.keys() if reference.get(k) != other.get(k))
        if differ:
            failed = True
            print(f"DIFFERENT {path}: {len(differ)} of {len(reference)} tensors differ ({', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''})")
        else:
            print(f"identical {path}: all {len(reference)} tensors")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
