#!/usr/bin/env python3
"""Batch-1 latency of onnxruntime (the peer baseline) on ONNX models.

Usage: ort_bench.py --json OUT.json MODEL.onnx[=GOLDEN.npz] ...

Inputs come from the golden npz (keys `in:<input name>`), or are random values of the
declared shape (symbolic dims = 1) when no npz is given. The session is single-threaded
(intra/inter op threads = 1, sequential), graph optimizations ALL, CPU EP. Only tensor
outputs are fetched (ZipMap seq(map) outputs are skipped). Each model is warmed up and
then timed with perf_counter_ns for at least 200 runs and 2 s, capped at 10 s.
Writes {"models": [{"path", "median_us", "p10_us", "p90_us", "iters", ...}],
"onnxruntime": version, "cpu": model name}. A model that fails gets an "error" entry
and the exit status is 1.
"""
import argparse
import json
import platform
import sys
import time

import numpy as np
import onnxruntime as ort

MIN_ITERS, MIN_NS, MAX_NS = 200, 2_000_000_000, 10_000_000_000
WARMUP_ITERS, WARMUP_NS = 10, 200_000_000

# onnxruntime type strings -> numpy dtypes, for random inputs.
ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16, "tensor(int32)": np.int32, "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
    "tensor(string)": np.str_,
}


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def make_session(model_path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def tensor_outputs(sess):
    outs = [o.name for o in sess.get_outputs() if o.type.startswith("tensor(")]
    return outs or [o.name for o in sess.get_outputs()]


def random_input(arg, rng):
    shape = [d if isinstance(d, int) and d >= 0 else 1 for d in arg.shape]
    dtype = ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ValueError(f"input {arg.name!r}: cannot make random values of type {arg.type}")
    if dtype is np.str_:
        return np.full(shape, "a", dtype=np.str_)
    if dtype is np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


def load_feed(sess, golden, rng):
    if golden is None:
        return {i.name: random_input(i, rng) for i in sess.get_inputs()}
    with np.load(golden, allow_pickle=False) as z:
        feed = {}
        for i in sess.get_inputs():
            key = f"in:{i.name}"
            if key not in z.files:
                raise KeyError(f"{golden} has no {key!r} (keys: {z.files})")
            feed[i.name] = z[key]
        return feed


def bench(model_path, golden, rng):
    sess = make_session(model_path)
    feed = load_feed(sess, golden, rng)
    outs = tensor_outputs(sess)
    run = sess.run
    t_end = time.perf_counter_ns() + WARMUP_NS
    for k in range(1_000_000):
        run(outs, feed)
        if k + 1 >= WARMUP_ITERS and time.perf_counter_ns() >= t_end:
            break
    samples = []
    clock = time.perf_counter_ns
    start = clock()
    while True:
        t0 = clock()
        run(outs, feed)
        t1 = clock()
        samples.append(t1 - t0)
        elapsed = t1 - start
        if (len(samples) >= MIN_ITERS and elapsed >= MIN_NS) or elapsed >= MAX_NS:
            break
    us = np.asarray(samples, dtype=np.float64) / 1000.0
    p10, med, p90 = np.percentile(us, [10, 50, 90])
    return {
        "path": model_path,
        "golden": golden,
        "median_us": round(float(med), 3),
        "p10_us": round(float(p10), 3),
        "p90_us": round(float(p90), 3),
        "min_us": round(float(us.min()), 3),
        "iters": len(samples),
        "outputs": outs,
        "inputs": {k: f"{v.dtype}{list(v.shape)}" for k, v in feed.items()},
    }


def parse_spec(spec):
    model, sep, golden = spec.rpartition("=")
    if sep and golden.endswith(".npz") and model:
        return model, golden
    return spec, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, metavar="OUT.json")
    ap.add_argument("models", nargs="+", metavar="MODEL.onnx[=GOLDEN.npz]")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results, failed = [], False
    for spec in args.models:
        model, golden = parse_spec(spec)
        try:
            r = bench(model, golden, rng)
            print(f"{model}: median {r['median_us']:.1f} us "
                  f"(p10 {r['p10_us']:.1f}, p90 {r['p90_us']:.1f}, {r['iters']} iters)", file=sys.stderr)
        except Exception as e:  # keep going; report the failure in the JSON
            failed = True
            r = {"path": model, "golden": golden, "error": f"{type(e).__name__}: {e}"}
            print(f"{model}: ERROR {r['error']}", file=sys.stderr)
        results.append(r)
    doc = {"models": results, "onnxruntime": ort.__version__, "cpu": cpu_name()}
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
