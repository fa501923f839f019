#!/usr/bin/env python3
"""Run onnxruntime on golden-style inputs and save its outputs (peer cross-check).

Usage: golden_check.py MODEL.onnx INPUTS.npz OUT.npz

INPUTS.npz holds `in:<input name>` arrays (the layout of shared/corpus/golden/*.npz).
OUT.npz gets `out:<output name>` for every tensor output; non-tensor outputs such as
ZipMap's seq(map) are skipped. The session is single-threaded (as the goldens were made:
tree-ensemble sums depend on the thread count), graph optimizations ALL, CPU EP.
"""
import sys

import numpy as np
import onnxruntime as ort


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    model, inputs, out_path = argv[1:]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    with np.load(inputs, allow_pickle=False) as z:
        missing = [i.name for i in sess.get_inputs() if f"in:{i.name}" not in z.files]
        if missing:
            print(f"{inputs}: no in:<name> for inputs {missing} (keys: {z.files})", file=sys.stderr)
            return 1
        feed = {i.name: z[f"in:{i.name}"] for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs() if o.type.startswith("tensor(")]
    values = sess.run(names, feed)
    with open(out_path, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(f, **{f"out:{n}": np.asarray(v) for n, v in zip(names, values)})
    for n, v in zip(names, values):
        print(f"out:{n} {tuple(np.shape(v))} {np.asarray(v).dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
