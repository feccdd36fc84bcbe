#!/usr/bin/env python3
"""Checks an exported ONNX model against Lockstep's own logits.

usage: tools/onnx_check.py MODEL.onnx LOGITS.npy --idx DIR [--count N] [--tolerance T]
       tools/onnx_check.py MODEL.onnx LOGITS.npy --csv FILE --label-column NAME [--count N]

Runs onnx.checker (full check) on the model, feeds the first N test samples to ONNX Runtime
(images as byte/255, the export's input convention; CSV rows as raw features without the label
column) and compares its output with the first N rows of LOGITS.npy (from `lockstep eval
--logits`). Prints the largest absolute difference; exits 1 above the tolerance (default 1e-4).
"""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import onnx
import onnxruntime as ort

from check_common import arguments


def main():
    a, x, ref = arguments("model")
    model = onnx.load(a.model)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    if out.shape != ref.shape:
        sys.exit(f"onnx_check: ONNX Runtime gave {out.shape}, the logits file holds {ref.shape}")
    diff = float(np.abs(out - ref).max())
    agree = float((out.argmax(1) == ref.argmax(1)).mean())
    print(f"onnx_check: {len(x)} samples, max |ONNX Runtime - Lockstep| = {diff:.3g}, arg-max agreement {100 * agree:.2f}%")
    sys.exit(0 if diff <= a.tolerance else 1)


if __name__ == "__main__":
    main()
