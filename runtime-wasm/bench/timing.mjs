// Latency of Kiln's package and onnxruntime-web on the same inputs, for the
// Node runner (bench.mjs) and the Chromium page (bench.html).
//
// Browsers coarsen performance.now() (100 us in Chromium without
// cross-origin isolation), so each sample times a batch of back-to-back
// runs long enough (>= 10 ms) for the clock; each runtime is warmed up for
// 0.5 s, then the two runtimes' batches alternate; the median of the
// per-run times over the samples is reported, in microseconds.

const BATCH_MS = 10;
const WARM_MS = 500;

/** Batch size for `f`: back-to-back calls lasting >= BATCH_MS (warms up too). */
async function batchSize(f) {
  let k = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < k; i++) await f();
    if (performance.now() - t0 >= BATCH_MS) return k;
    k = Math.min(k * 2, 1 << 20);
  }
}

async function sample(f, k) {
  const t0 = performance.now();
  for (let i = 0; i < k; i++) await f();
  return ((performance.now() - t0) / k) * 1000;
}

function stats(per) {
  per.sort((a, b) => a - b);
  return { median: per[per.length >> 1], p10: per[Math.floor(per.length * 0.1)], p90: per[Math.floor(per.length * 0.9)], samples: per.length };
}

/** Times the runtimes in `fs` (name -> async-or-sync call) with their
 * batches interleaved (A, B, A, B, ...), so that a change in machine load
 * hits both alike. */
async function timeInterleaved(fs, { samples, maxMs }) {
  const names = Object.keys(fs);
  const k = {};
  for (const n of names) {
    k[n] = await batchSize(fs[n]);
    // Steady state: V8 compiles wasm with a baseline tier first and
    // optimises hot functions in the background, later for a large module
    // (onnxruntime-web's is 14 MB) on a busy machine. Run each for
    // WARM_MS before sampling.
    const t0 = performance.now();
    while (performance.now() - t0 < WARM_MS) await sample(fs[n], k[n]);
  }
  const per = Object.fromEntries(names.map((n) => [n, []]));
  const start = performance.now();
  while (per[names[0]].length < samples && performance.now() - start < maxMs) {
    for (const n of names) per[n].push(await sample(fs[n], k[n]));
  }
  return Object.fromEntries(names.map((n) => [n, { ...stats(per[n]), batch: k[n] }]));
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
    const fs = {};
    let model;
    let session;
    try {
      model = await Model.load(c.artifact);
      model.run(c.feeds);
      fs.kiln = () => model.run(c.feeds);
    } catch (e) {
      row.kilnError = String(e.message);
    }
    if (c.onnx) {
      try {
        session = await ort.InferenceSession.create(c.onnx, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
        const feeds = {};
        for (const i of c.inputs) feeds[i.name] = new ort.Tensor(ORT_TYPES[i.dtype], c.feeds[i.name], i.shape);
        await session.run(feeds);
        fs.ort = () => session.run(feeds);
      } catch (e) {
        row.ortError = String(e.message).split('\n')[0];
      }
    }
    if (Object.keys(fs).length > 0) Object.assign(row, await timeInterleaved(fs, opts));
    if (model) model.free();
    if (session) await session.release();
    rows.push(row);
  }
  return rows;
}
