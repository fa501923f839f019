// Node tests of the npm package (runtime-wasm/pkg, built by `cargo xtask
// wasm`) on the fixtures written by cli/tests/wasm_package.rs
// ($KILN_WASM_FIXTURES). Run: node --test runtime-wasm/tests/node/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Model, KilnError, simdEnabled, runtimeVersion } from '../../pkg/kiln.js';
import { loadCases, runParity, badInputFailures } from '../common.mjs';

const dir = process.env.KILN_WASM_FIXTURES;
if (!dir) throw new Error('set KILN_WASM_FIXTURES (cli/tests/wasm_package.rs writes the fixtures)');
const cases = await loadCases(async (f) => new Uint8Array(await readFile(path.join(dir, f))));
const byStem = (s) => cases.find((c) => c.stem === s);

test('the package is the SIMD build', async () => {
  assert.equal(await simdEnabled(), true);
  assert.match(await runtimeVersion(), /^\d+\.\d+\.\d+/);
});

test('every corpus model matches the native runtime', async () => {
  const results = await runParity(Model, cases);
  for (const r of results) console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.stem.padEnd(40)} ${r.ok ? `max abs diff ${r.worst.toExponential(2)}` : r.detail}`);
  assert.ok(cases.length >= 20, `only ${cases.length} cases`);
  assert.deepEqual(results.filter((r) => !r.ok).map((r) => `${r.stem}: ${r.detail}`), []);
});

test('schema: names, dtypes, shapes with the batch name, labels', async () => {
  const mnist = await Model.load(byStem('zoo_mnist8_cntk').artifact);
  assert.deepEqual(mnist.inputs.map((i) => [i.name, i.dtype]), [['Input3', 'float32']]);
  assert.equal(mnist.outputs[0].dtype, 'float32');
  assert.ok(mnist.arenaBytes > 0);
  mnist.free();
  const iris = await Model.load(byStem('sklearn_logreg_iris').artifact);
  assert.equal(typeof iris.inputs[0].shape[0], 'string', 'batch dimension is named');
  const probs = iris.outputs.find((o) => o.labels.length > 0);
  assert.ok(probs === undefined || probs.labels.length === 3);
  iris.free();
});

test('a batch of samples follows from the array length', async () => {
  const c = byStem('sklearn_logreg_iris');
  const model = await Model.load(c.artifact);
  const name = c.inputs[0].name;
  const one = c.feeds[name];
  const three = new Float32Array(one.length * 3);
  for (let k = 0; k < 3; k++) three.set(one, k * one.length);
  const single = model.run({ [name]: one });
  const batch = model.run({ [name]: three });
  for (const [k, v] of Object.entries(single)) {
    assert.equal(batch[k].length, v.length * 3, k);
    assert.deepEqual(Array.from(batch[k].slice(0, v.length)), Array.from(v), k);
  }
  // {data, shape} says the same thing explicitly.
  const explicit = model.run({ [name]: { data: three, shape: [3, one.length] } });
  for (const k of Object.keys(batch)) assert.deepEqual(explicit[k], batch[k]);
  model.free();
});

test('int8 model inputs take Int8Array and give bytes identical to native', async () => {
  const c = byStem('mlperf_kws_dscnn_int8');
  const model = await Model.load(c.artifact);
  assert.equal(model.inputs[0].dtype, 'int8');
  const out = model.run(c.feeds);
  const got = Object.values(out)[0];
  assert.ok(got instanceof Int8Array);
  assert.deepEqual(Array.from(got), Array.from(c.want[0].data));
  model.free();
});

test('bad input throws KilnError with a code and a message', async () => {
  const failures = await badInputFailures(Model, KilnError, byStem('zoo_mnist8_cntk'));
  assert.deepEqual(failures, []);
});

test('KilnError messages say what was wrong and where', async () => {
  const c = byStem('zoo_mnist8_cntk');
  const model = await Model.load(c.artifact);
  assert.throws(() => model.run({ Input3: new Int8Array(784) }), (e) =>
    e instanceof KilnError && e.code === 'INPUT_REJECTED' && /Input3/.test(e.message) && /Float32Array/.test(e.message));
  const nan = new Float32Array(784);
  nan[5] = NaN;
  assert.throws(() => model.run({ Input3: nan }), (e) => /element 5 is NaN/.test(e.message));
  model.free();
  await assert.rejects(Model.load(new Uint8Array(10)), (e) => e instanceof KilnError && e.code === 'INVALID_MODEL');
});

test('NaN passes when the model allows it', async () => {
  const c = byStem('sklearn_gb_wine');
  const model = await Model.load(c.artifact);
  const name = c.inputs[0].name;
  const x = Float32Array.from(c.feeds[name]);
  x[0] = NaN;
  assert.throws(() => model.run({ [name]: x }), KilnError);
  model.allowNonFinite = true;
  assert.equal(model.allowNonFinite, true);
  model.run({ [name]: x });
  model.free();
});

test('loading many models and freeing them does not grow memory without bound', async () => {
  const c = byStem('mlperf_ic_resnet8_int8');
  for (let k = 0; k < 200; k++) {
    const m = await Model.load(c.artifact);
    m.run(c.feeds);
    m.free();
  }
  const before = process.memoryUsage().arrayBuffers;
  for (let k = 0; k < 200; k++) {
    const m = await Model.load(c.artifact);
    m.run(c.feeds);
    m.free();
  }
  const grown = process.memoryUsage().arrayBuffers - before;
  assert.ok(grown < 8 << 20, `wasm memory grew by ${grown} bytes over 200 load/free cycles`);
});
