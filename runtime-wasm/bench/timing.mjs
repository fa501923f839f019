// Latency of Kiln's package and onnxruntime-web on the same inputs, for the
// Node runner (bench.mjs) and the Chromium page (bench.html).
//
// Browsers coarsen performance.now() (100 us in Chromium without
// cross-origin isolation), so each sample times a batch of back-to-back
// runs long enough (>= 10 ms) for the clock; the median of the per-run
// times over the samples is reported, in microseconds.

const BATCH_MS = 10;

async function timeIt(f, { samples, maxMs }) {
  // Warm up (JIT, first-run allocations) and size the batch.
  let k = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < k; i++) await f();
    const dt = performance.now() - t0;
    if (dt >= BATCH_MS) break;
    k = Math.min(k * 2, 1 << 20);
  }
  const per = [];
  const start = performance.now();
  while (per.length < samples && performance.now() - start < maxMs) {
    const t0 = performance.now();
    for (let i = 0; i < k; i++) await f();
    per.push(((performance.now() - t0) / k) * 1000);
  }
  per.sort((a, b) => a - b);
  return { median: per[per.length >> 1], p10: per[Math.floor(per.length * 0.1)], p90: per[Math.floor(per.length * 0.9)], samples: per.length, batch: k };
}

const ORT_TYPES = {
  float32: 'float32', int8: 'int8', uint8: 'uint8', int32: 'int32', int64: 'int64', float64: 'float64', bool: 'bool',
};

/** cases: [{stem, artifact, feeds, inputs: [{name, dtype, shape}], onnx?: Uint8Array}]. */
export async function benchCases(Model, ort, cases, opts = { samples: 30, maxMs: 3000 }) {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.simd = true;
  const rows = [];
  for (const c of cases) {
    const row = { stem: c.stem };
    const model = await Model.load(c.artifact);
    try {
      model.run(c.feeds);
      row.kiln = await timeIt(() => model.run(c.feeds), opts);
    } catch (e) {
      row.kilnError = String(e.message);
    } finally {
      model.free();
    }
    if (c.onnx) {
      try {
        const session = await ort.InferenceSession.create(c.onnx, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
        const feeds = {};
        for (const i of c.inputs) feeds[i.name] = new ort.Tensor(ORT_TYPES[i.dtype], c.feeds[i.name], i.shape);
        await session.run(feeds);
        row.ort = await timeIt(() => session.run(feeds), opts);
        await session.release();
      } catch (e) {
        row.ortError = String(e.message).split('\n')[0];
      }
    }
    rows.push(row);
  }
  return rows;
}
