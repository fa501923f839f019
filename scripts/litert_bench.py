#!/usr/bin/env python3
"""Batch-1 latency of LiteRT (the TFLite peer) on .tflite models.

Usage: litert_bench.py --json OUT.json MODEL.tflite=GOLDEN.npz ...

The input is the golden npz's `in:<name>` array. Each model is timed twice, single-threaded:
with LiteRT's default resolver (XNNPACK delegate) and with the builtin optimized kernels
alone (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES; plain BUILTIN still applies the
default XNNPACK delegate, so it times XNNPACK again). Warm-up, then perf_counter_ns around invoke() for at
least 200 runs and 1 s, capped at 5 s. Writes {"models": [{"path", "xnnpack": {...},
"builtin": {...}}], "litert": version}; a resolver that fails gets an "error" entry.
"""
import argparse
import json
import time

import numpy as np
from ai_edge_litert import interpreter as lite

MIN_ITERS, MIN_NS, MAX_NS = 200, 1_000_000_000, 5_000_000_000


def time_model(path, x, resolver):
    it = lite.Interpreter(model_path=path, num_threads=1, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    for _ in range(10):
        it.invoke()
    ts = []
    start = time.perf_counter_ns()
    while True:
        t0 = time.perf_counter_ns()
        it.invoke()
        ts.append((time.perf_counter_ns() - t0) / 1000.0)
        el = time.perf_counter_ns() - start
        if (len(ts) >= MIN_ITERS and el >= MIN_NS) or el >= MAX_NS:
            break
    ts.sort()
    pct = lambda p: ts[round((len(ts) - 1) * p)]
    return {"median_us": pct(0.5), "p10_us": pct(0.1), "p90_us": pct(0.9), "iters": len(ts)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    out = {"models": [], "litert": getattr(lite, "__version__", None)}
    try:
        import importlib.metadata as md
        out["litert"] = md.version("ai-edge-litert")
    except Exception:
        pass
    for spec in a.models:
        path, golden = spec.split("=", 1)
        g = np.load(golden)
        x = next(g[k] for k in g.files if k.startswith("in:"))
        row = {"path": path}
        for name, r in [("xnnpack", lite.OpResolverType.AUTO), ("builtin", lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)]:
            try:
                row[name] = time_model(path, x, r)
            except Exception as e:  # reported, not fatal
                row[name] = {"error": str(e).splitlines()[0][:200]}
        out["models"].append(row)
    with open(a.json, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
