// The package's telemetry (Model.recordTelemetry, TelemetryUploader) on the
// fixtures cli/tests/wasm_package.rs writes ($KILN_TELEMETRY_FIXTURES): the
// gb_wine model compiled with its drift reference, its test rows (one with
// a NaN), the native runtime's sketches of the same calls, and a live
// collector with a device token.
// Run: cargo test -p kiln-cli --test wasm_package -- --ignored telemetry
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Model, KilnError, TelemetryUploader, decodeBaseline, binOf, privatizeSketch } from '../pkg/kiln.js';

const dir = process.env.KILN_TELEMETRY_FIXTURES;
if (!dir) throw new Error('set KILN_TELEMETRY_FIXTURES (cli/tests/wasm_package.rs writes the fixtures)');
const read = (f) => readFile(path.join(dir, f));
const collector = JSON.parse(await read('collector.json'));
const artifact = new Uint8Array(await read('wine.kiln'));
const raw = await read('rows.bin');
const values = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
const rows = [];
for (let at = 0; at < values.length; at += collector.features) {
  rows.push(values.slice(at, at + collector.features));
}

/** Every row through a recording model, one call at a time. */
async function record(every) {
  const model = await Model.load(artifact);
  model.recordTelemetry(every);
  const input = model.inputs[0].name;
  let rejected = 0;
  for (const row of rows) {
    try {
      model.run({ [input]: row });
    } catch (e) {
      assert.ok(e instanceof KilnError && e.code === 'INPUT_REJECTED', String(e));
      rejected += 1;
    }
  }
  assert.equal(rejected, 1);
  const sketch = model.takeSketch();
  assert.equal(model.takeSketch().rows, 0, 'a taken window starts again');
  model.free();
  return sketch;
}

test('the sketch equals the native one (run times aside)', async () => {
  for (const every of [1, 3]) {
    const sketch = await record(every);
    const want = JSON.parse(await read(`native_${every}.json`));
    assert.ok(sketch.latency_us.reduce((a, b) => a + b, 0) > 0, 'run times are bucketed');
    assert.deepEqual({ ...sketch, latency_us: want.latency_us }, want, `every ${every}`);
  }
});

test('a tensor input counts per-channel summaries as natively', async () => {
  const model = await Model.load(new Uint8Array(await read('mnist.kiln')));
  model.recordTelemetry(1);
  const raw = await read('mnist.bin');
  const pixels = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const input = model.inputs[0].name;
  for (let at = 0; at < pixels.length; at += 784) {
    model.run({ [input]: pixels.slice(at, at + 784) });
  }
  const sketch = model.takeSketch();
  const want = JSON.parse(await read('native_mnist.json'));
  assert.equal(sketch.rows, 60);
  assert.deepEqual({ ...sketch, latency_us: want.latency_us }, want);
  model.free();
});

test('an int8 tensor input counts its codes as natively', async () => {
  const model = await Model.load(new Uint8Array(await read('kws.kiln')));
  model.recordTelemetry(1);
  const raw = await read('kws.bin');
  const codes = new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength);
  const input = model.inputs[0].name;
  for (let at = 0; at < codes.length; at += 490) {
    model.run({ [input]: codes.slice(at, at + 490) });
  }
  const sketch = model.takeSketch();
  const want = JSON.parse(await read('native_kws.json'));
  assert.equal(sketch.rows, 40);
  assert.equal(sketch.prediction.bins.reduce((a, b) => a + b, 0), 40, 'the int8 scores\' classes');
  assert.deepEqual({ ...sketch, latency_us: want.latency_us }, want);
  model.free();
});

test('with trusted keys, only intact artifacts signed by one of them load', async () => {
  const signed = new Uint8Array(await read('wine.signed.kiln'));
  const pub = (await read('release.pub.hex')).toString().trim();
  const model = await Model.load(signed, { trustedKeys: [pub] });
  assert.equal(model.inputs[0].shape.at(-1), collector.features);
  model.free();
  (await Model.load(signed)).free(); // no keys: signed artifacts load anyway
  const refused = async (bytes, keys, why) => {
    await assert.rejects(Model.load(bytes, { trustedKeys: keys }), (e) => {
      assert.ok(e instanceof KilnError && e.code === 'INVALID_MODEL', String(e));
      assert.match(e.message, why);
      return true;
    });
  };
  await refused(artifact, [pub], /not signed/);
  await refused(signed, ['11'.repeat(32)], /not trusted/);
  const content = signed.length - 80;
  const flip = (at) => { const t = signed.slice(); t[at] ^= 0x40; return t; };
  await refused(flip(content - 1), [pub], /checksum/);
  await refused(flip(signed.length - 5), [pub], /does not verify/);
  await assert.rejects(Model.load(signed, { trustedKeys: [] }), (e) => e.code === 'USAGE');
});

test('baseline decoding and binning follow protocol', async () => {
  const model = await Model.load(artifact);
  model.recordTelemetry(1);
  // The decoder rejects what is not a baseline.
  assert.throws(() => decodeBaseline(btoa('\x05')), KilnError);
  model.free();
  const bins = { edges: true, values: [1, 2, 3] };
  assert.deepEqual([0.5, 1, 1.5, 3, 9].map((x) => binOf(bins, x)), [0, 0, 1, 2, 3]);
  const cats = { edges: false, values: [0, 1, 4] };
  assert.deepEqual([0, 1, 4, 2, -0].map((x) => binOf(cats, x)), [0, 1, 2, 3, 3]);
});

test('a private window carries discrete Laplace noise of scale Δ/ε', async () => {
  const exact = await record(1);
  const delta = exact.features.length + 3;
  const eps = 2;
  const alpha = Math.exp(-eps / delta);
  const want = (2 * alpha) / (1 - alpha) ** 2;
  let sum = 0;
  let sum2 = 0;
  const n = 3000;
  for (let i = 0; i < n; i++) {
    const s = privatizeSketch(structuredClone(exact), eps);
    const d = s.rows - exact.rows;
    sum += d;
    sum2 += d * d;
    if (i === 0) {
      assert.equal(s.features[0].min, null);
      assert.ok(s.features.every((f) => f.bins.every((c) => Number.isInteger(c) && c >= 0)));
      assert.equal(s.latency_us.length, exact.latency_us.length);
    }
  }
  const mean = sum / n;
  const variance = sum2 / n - mean * mean;
  // Standard error of the mean: sqrt(want / n) ≈ 0.1.
  assert.ok(Math.abs(mean) < 0.5, `mean ${mean}`);
  assert.ok(Math.abs(variance / want - 1) < 0.12, `variance ${variance}, want ${want}`);
  assert.throws(() => privatizeSketch(structuredClone(exact), 0), KilnError);
  // Through the model: the taken window is noised.
  const model = await Model.load(artifact);
  model.recordTelemetry(1);
  model.run({ [model.inputs[0].name]: rows[0] });
  const s = model.takeSketch({ epsilon: 1 });
  assert.equal(s.features[0].min, null);
});

test('sampled raw rows are input rows, k per window, and the collector takes them', async () => {
  const model = await Model.load(artifact);
  model.recordTelemetry(1);
  model.recordSamples(5);
  const input = model.inputs[0].name;
  const seen = new Map();
  for (let trial = 0; trial < 200; trial++) {
    for (const row of rows.slice(0, 20)) {
      try { model.run({ [input]: row }); } catch { /* the NaN row is rejected: never sampled */ }
    }
    const got = model.takeSamples();
    assert.equal(got.length, 5);
    for (const r of got) {
      const k = rows.findIndex((x) => x.every((v, i) => v === r[i]));
      assert.ok(k >= 0, 'a sampled row is an input row');
      seen.set(k, (seen.get(k) ?? 0) + 1);
    }
    model.takeSketch();
  }
  // 200 windows of 20 rows, 5 kept: each row about 50 times.
  for (const [k, n] of seen) assert.ok(n > 20 && n < 90, `row ${k} kept ${n} times`);
  assert.deepEqual(model.takeSamples(), []);
  for (const row of rows.slice(0, 3)) model.run({ [input]: row });
  const samples = model.takeSamples();
  const up = new TelemetryUploader({
    url: collector.url, token: collector.token, model: collector.model, version: collector.version,
  });
  up.push(model.takeSketch(), samples);
  await up.flush();
  assert.equal(up.sent, 1);
  assert.equal(up.dropped, 0, 'the collector took the samples');
  model.free();
});

test('the uploader backs off while offline, then delivers once', async () => {
  const sketch = await record(1);
  let calls = 0;
  const flaky = (url, init) => {
    calls += 1;
    // The first two attempts find the network down.
    if (calls <= 2) return Promise.reject(new TypeError('fetch failed'));
    return fetch(url, init);
  };
  const up = new TelemetryUploader({
    url: collector.url, token: collector.token, model: collector.model, version: collector.version,
    baseDelayMs: 20, maxDelayMs: 200, fetch: flaky,
  });
  const started = performance.now();
  up.push(sketch);
  // push() returns at once: inference is never blocked.
  assert.ok(performance.now() - started < 50);
  await up.flush();
  assert.equal(up.failures, 2);
  assert.equal(up.sent, 1);
  assert.equal(up.queue.length, 0);
  assert.equal(calls, 3);
  // Bounded while offline: the oldest windows go first.
  const offline = new TelemetryUploader({
    url: 'http://127.0.0.1:9', token: 't', model: 'm', version: 1, maxQueued: 2, baseDelayMs: 1e6,
    fetch: () => Promise.reject(new TypeError('offline')),
  });
  offline.push(sketch); offline.push(sketch); offline.push(sketch);
  assert.equal(offline.dropped, 1);
  assert.equal(offline.queue.length, 2);
  offline.close();
  const closing = performance.now();
  await offline.flush();
  assert.ok(performance.now() - closing < 1000, 'close() ends the backoff at once');
  assert.equal(offline.queue.length, 2, 'closing keeps what was queued');
});
