"""Reads a Lockstep run directory with the tools people already use.

usage: python3 Tests/python/interop.py RUN_DIR CHECKPOINT
Prints one line per tensor ("name mean std count") from safetensors+NumPy, then one line per
TensorBoard scalar ("tb tag step value") from TensorBoard's own EventAccumulator.
"""
import sys

import numpy as np
from safetensors.numpy import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(run_dir: str, checkpoint: str) -> None:
    tensors = load_file(checkpoint)
    for name in sorted(tensors):
        t = tensors[name].astype(np.float64)
        print(f"tensor {name} {t.mean():.9g} {t.std():.9g} {t.size} {list(tensors[name].shape)}")
    acc = EventAccumulator(run_dir)
    acc.Reload()
    for tag in sorted(acc.Tags()["scalars"]):
        for event in acc.Scalars(tag):
            print(f"tb {tag} {event.step} {event.value:.9g}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
