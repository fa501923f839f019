#!/usr/bin/env python3
"""Run LiteRT on a batch of samples and save its outputs (peer cross-check).

Usage: litert_check.py [--builtin] MODEL.tflite INPUTS.npy OUT.npy

INPUTS.npy stacks N samples of the model's (single) input along a new
leading axis; OUT.npy gets the model's first output for each, stacked the
same way. Each sample runs from freshly reset variable tensors (as Kiln
runs every call from zero state) with LiteRT's default op resolver on one
thread, as the corpus goldens were made: XNNPACK takes the ops it supports
(FULLY_CONNECTED here: its int8 requantization differs from the builtin
kernel's in the last bit on a few outputs), the builtin kernels the rest
(the LSTMs). With --builtin, no delegate: LiteRT's own kernels only (its
hybrid convolution, for one, is computed there and not by XNNPACK).
"""
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def main(argv):
    builtin = "--builtin" in argv
    argv = [a for a in argv if a != "--builtin"]
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    model, inputs, out_path = argv[1:]
    kw = {}
    if builtin:
        kw["experimental_op_resolver_type"] = (
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    it = Interpreter(model_path=model, num_threads=1, **kw)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    xs = np.load(inputs)
    ys = []
    for x in xs:
        it.reset_all_variables()
        it.set_tensor(inp["index"], x.astype(inp["dtype"]).reshape(inp["shape"]))
        it.invoke()
        ys.append(it.get_tensor(out["index"]).copy())
    np.save(out_path, np.stack(ys))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
