#!/usr/bin/env python3
"""Validate a Core ML package with coremltools and evaluate it (peer check).

Usage: coreml_check.py MODEL.mlpackage [INPUTS.npy OUT.npz]

Prints one JSON line: the package's inputs and outputs (names, shapes,
types), its predicted feature, metadata, spec version, op types and weight
file size. coremltools validates the package on the way:

- `MLModel(..., skip_model_load=True)` reads the package (manifest, spec);
- its `milproto` loader rebuilds every op of the ML Program through the MIL
  builder, which type-checks each op's inputs (dtypes, ranks, shapes,
  constness) and checks every declared output type against its own
  inference; `Program.validate()` then checks the program's structure.

Core ML itself cannot run on Linux (predictions need macOS/iOS). With
INPUTS.npy (N samples of the single input, stacked on a new leading axis),
the loaded program is evaluated sample by sample: every op that coremltools
can compute itself (its `value_inference`: linear, matmul, activations,
softmax, reductions, elementwise, reshape, transpose, concat, the
`constexpr_*` weight decoders) is computed by coremltools; it has no
reference for `conv`, `max_pool`, `avg_pool` and `classify`, which are
computed here with NumPy from their MIL definitions, nor one that runs under
NumPy 2 for `reduce_log_sum_exp`, computed here too. OUT.npz gets each block output,
stacked over the samples (a classifier's probability dictionary as an
array in class order).
"""
import json
import os
import sys

import numpy as np


def quiet_import():
    # coremltools prints proxy warnings on Linux: keep stdout JSON-only.
    stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto import load as milproto
    finally:
        sys.stdout = stdout
    return ct, milproto


def conv(x, w, b, strides, pad, dilations, groups):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    t, bo, l, r = pad
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    sh, sw = strides
    dh, dw = dilations
    oh = (h + t + bo - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + l + r - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, m, oh, ow), np.float64)
    mg = m // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * mg:(g + 1) * mg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
                y[:, g * mg:(g + 1) * mg] += np.einsum("nchw,mc->nmhw", patch, ws[:, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y.astype(np.float32)


def pool(x, kernel, strides, pad, kind, exclude_pad):
    n, c, h, w = x.shape
    kh, kw = kernel
    t, bo, l, r = pad
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)), constant_values=fill)
    ones = np.pad(np.ones((h, w)), ((t, bo), (l, r)))
    sh, sw = strides
    oh = (h + t + bo - kh) // sh + 1
    ow = (w + l + r - kw) // sw + 1
    y = np.zeros((n, c, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            if kind == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:
                count = ones[i * sh:i * sh + kh, j * sw:j * sw + kw].sum() if exclude_pad else kh * kw
                y[:, :, i, j] = win.sum(axis=(2, 3)) / count
    return y


def evaluate(prog, feeds):
    from coremltools.converters.mil.mil import types

    values = dict(feeds)
    func = prog.functions["main"]

    def val(var):
        if var.name in values:
            return values[var.name]
        return var.val

    def bind(var, v):
        # Give the op's input var a concrete value so that coremltools'
        # value_inference can read it.
        sym = var.sym_type()
        sym.val = v
        var._sym_val = sym

    for op in func.operations:
        ins = {k: v for k, v in op.inputs.items()}
        if op.op_type == "conv":
            out = conv(val(ins["x"]), val(ins["weight"]), val(ins["bias"]) if "bias" in ins else None,
                       val(ins["strides"]), val(ins["pad"]), val(ins["dilations"]), int(val(ins["groups"])))
            outs = [out]
        elif op.op_type in ("max_pool", "avg_pool"):
            exclude = bool(val(ins["exclude_padding_from_average"])) if "exclude_padding_from_average" in ins else False
            outs = [pool(val(ins["x"]), val(ins["kernel_sizes"]), val(ins["strides"]), val(ins["pad"]),
                         "max" if op.op_type == "max_pool" else "avg", exclude)]
        elif op.op_type == "reduce_log_sum_exp":
            # coremltools' own (value_inference) passes keep_dims to np.sum
            # as a NumPy bool, which NumPy 2 refuses.
            x = val(ins["x"])
            axes = tuple(int(a) for a in val(ins["axes"]))
            m = x.max(axis=axes, keepdims=True)
            y = np.log(np.exp(x - m).sum(axis=axes, keepdims=True)) + m
            outs = [y if bool(val(ins["keep_dims"])) else np.squeeze(y, axis=axes)]
        elif op.op_type == "classify":
            probs = val(ins["probabilities"]).reshape(-1)
            classes = list(ins["classes"].val)
            outs = [np.int64(classes[int(np.argmax(probs))]),
                    {c: np.float64(p) for c, p in zip(classes, probs)}]
        else:
            saved = {}
            for v in ins.values():
                for var in (v if isinstance(v, (list, tuple)) else [v]):
                    if var.name in values:
                        saved[var] = var._sym_val
                        bind(var, values[var.name])

            try:
                if op.op_type == "const":
                    res = op.outputs[0].val
                elif op.op_type.startswith("constexpr_"):
                    # The weight decoders' own materialization.
                    res = op.materialized_val_inference()
                else:
                    res = op.value_inference()
            finally:
                for var, s in saved.items():
                    var._sym_val = s
            outs = list(res) if isinstance(res, tuple) else [res]
        for var, v in zip(op.outputs, outs):
            values[var.name] = v
    return {v.name: values[v.name] for v in func.outputs}


def main(argv):
    if len(argv) not in (2, 4):
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[1]
    ct, milproto = quiet_import()
    model = ct.models.MLModel(path, skip_model_load=True)
    spec = model.get_spec()
    weights_dir = os.path.join(path, "Data", "com.apple.CoreML", "weights")
    prog = milproto.load(spec, spec.specificationVersion, weights_dir)
    prog.validate()

    def feature(f):
        kind = f.type.WhichOneof("Type")
        d = {"name": f.name, "type": kind, "description": f.shortDescription}
        if kind == "multiArrayType":
            d["shape"] = list(f.type.multiArrayType.shape)
        return d

    func = spec.mlProgram.functions["main"]
    block = func.block_specializations[func.opset]
    report = {
        "specification_version": spec.specificationVersion,
        "opset": func.opset,
        "inputs": [feature(f) for f in spec.description.input],
        "outputs": [feature(f) for f in spec.description.output],
        "predicted_feature": spec.description.predictedFeatureName,
        "predicted_probabilities": spec.description.predictedProbabilitiesName,
        "metadata": {
            "author": spec.description.metadata.author,
            "version": spec.description.metadata.versionString,
            "short_description": spec.description.metadata.shortDescription,
            "user_defined": dict(spec.description.metadata.userDefined),
        },
        "op_types": sorted({op.type for op in block.operations}),
        "weight_file_bytes": os.path.getsize(os.path.join(weights_dir, "weight.bin")),
    }
    print(json.dumps(report))
    if len(argv) == 4:
        xs = np.load(argv[2])
        name = spec.description.input[0].name
        results = {}
        for x in xs:
            shape = tuple(spec.description.input[0].type.multiArrayType.shape)
            outs = evaluate(prog, {name: x.astype(np.float32).reshape(shape)})
            for k, v in outs.items():
                if isinstance(v, dict):
                    v = np.array([v[c] for c in sorted(v)])
                results.setdefault(k, []).append(np.asarray(v))
        np.savez(argv[3], **{k: np.stack(v) for k, v in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
