// Shared by the Node tests and the Chromium page: fixture loading (written
// by cli/tests/wasm_package.rs) and the comparison rule.

const CLASSES = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
  bool: Uint8Array, int16: Int16Array, uint16: Uint16Array, float16: Uint16Array,
  int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array,
};

/** A typed array of `dtype` over a copy of `bytes` (aligned). */
export function typed(dtype, bytes) {
  const C = CLASSES[dtype];
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new C(copy.buffer, 0, bytes.byteLength / C.BYTES_PER_ELEMENT);
}

/** The bytes at `url` (browser pages), or an error naming the URL. */
export async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`fetch ${url}: ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

/** Loads every case with `read(file) -> Promise<Uint8Array>`. */
export async function loadCases(read) {
  const text = (b) => JSON.parse(new TextDecoder().decode(b));
  const manifest = text(await read('manifest.json'));
  const cases = [];
  for (const stem of manifest.cases) {
    const desc = text(await read(`${stem}.json`));
    const feeds = {};
    for (const i of desc.inputs) feeds[i.name] = typed(i.dtype, await read(i.file));
    const want = [];
    for (const o of desc.outputs) want.push({ ...o, data: typed(o.dtype, await read(o.file)) });
    cases.push({ stem, artifact: await read(`${stem}.kiln`), inputs: desc.inputs, feeds, want });
  }
  return cases;
}

/** Checks one output: integers bit-identical, floats within 1e-5 of the
 * output's magnitude (max(1, max |want|)). Returns {ok, maxAbs, detail}. */
export function compareOutput(got, want) {
  if (!got) return { ok: false, maxAbs: NaN, detail: `missing output ${want.name}` };
  if (got.constructor !== want.data.constructor || got.length !== want.data.length) {
    return {
      ok: false, maxAbs: NaN,
      detail: `${want.name}: got ${got.constructor.name}(${got.length}), want ${want.data.constructor.name}(${want.data.length})`,
    };
  }
  const float = want.dtype.startsWith('float') && want.dtype !== 'float16';
  let scale = 1;
  if (float) for (const v of want.data) scale = Math.max(scale, Math.abs(v));
  let maxAbs = 0;
  for (let i = 0; i < got.length; i++) {
    const a = got[i];
    const b = want.data[i];
    if (float) {
      if (Number.isNaN(a) !== Number.isNaN(b)) return { ok: false, maxAbs: NaN, detail: `${want.name}[${i}]: ${a} vs ${b}` };
      if (!Number.isNaN(a)) maxAbs = Math.max(maxAbs, Math.abs(a - b));
    } else if (a !== b) {
      return { ok: false, maxAbs: NaN, detail: `${want.name}[${i}]: ${a} vs ${b} (must be identical)` };
    }
  }
  const ok = maxAbs <= 1e-5 * scale;
  return { ok, maxAbs, detail: ok ? '' : `${want.name}: max abs diff ${maxAbs} > 1e-5 x ${scale}` };
}

/** Runs every case through `Model` (the package); returns one line per case. */
export async function runParity(Model, cases) {
  const results = [];
  for (const c of cases) {
    const model = await Model.load(c.artifact);
    try {
      const out = model.run(c.feeds);
      let worst = 0;
      const bad = [];
      for (const w of c.want) {
        const r = compareOutput(out[w.name], w);
        if (!r.ok) bad.push(r.detail);
        else worst = Math.max(worst, r.maxAbs);
      }
      results.push({ stem: c.stem, ok: bad.length === 0, worst, detail: bad.join('; ') });
    } catch (e) {
      results.push({ stem: c.stem, ok: false, worst: NaN, detail: `${e.name} ${e.code}: ${e.message}` });
    } finally {
      model.free();
    }
  }
  return results;
}

/** Bad input of every kind the issue names; each must throw KilnError with
 * the expected code. `c` is a case with one float32 input. Returns failures. */
export async function badInputFailures(Model, KilnError, c) {
  const failures = [];
  const expect = async (what, code, f) => {
    try {
      await f();
      failures.push(`${what}: did not throw`);
    } catch (e) {
      if (!(e instanceof KilnError)) failures.push(`${what}: threw ${e && e.name} (${e && e.message}), not KilnError`);
      else if (e.code !== code) failures.push(`${what}: code ${e.code}, want ${code} (${e.message})`);
      else if (!e.message) failures.push(`${what}: empty message`);
    }
  };
  const name = c.inputs[0].name;
  const good = c.feeds[name];
  const model = await Model.load(c.artifact);
  await expect('wrong dtype', 'INPUT_REJECTED', () => model.run({ [name]: new Int8Array(good.length) }));
  await expect('plain array', 'INPUT_REJECTED', () => model.run({ [name]: Array.from(good) }));
  await expect('wrong length', 'INPUT_REJECTED', () => model.run({ [name]: new Float32Array(good.length + 3) }));
  await expect('empty', 'INPUT_REJECTED', () => model.run({ [name]: new Float32Array(0) }));
  const nan = Float32Array.from(good);
  nan[nan.length >> 1] = NaN;
  await expect('NaN', 'INPUT_REJECTED', () => model.run({ [name]: nan }));
  await expect('missing input', 'INPUT_REJECTED', () => model.run({}));
  await expect('feeds not an object', 'USAGE', () => model.run(42));
  await expect('bad shape', 'INPUT_REJECTED', () => model.run({ [name]: { data: good, shape: [good.length, 2] } }));
  for (const cut of [0, 16, 100, c.artifact.length >> 1, c.artifact.length - 1]) {
    await expect(`artifact truncated to ${cut} bytes`, 'INVALID_MODEL', () => Model.load(c.artifact.subarray(0, cut)));
  }
  const flipped = Uint8Array.from(c.artifact);
  flipped[flipped.length - 5] ^= 0x55;
  await expect('corrupted artifact', 'INVALID_MODEL', () => Model.load(flipped));
  await expect('load a string', 'USAGE', () => Model.load('model.kiln'));
  // The model still works after all that, and a freed model says so.
  try {
    model.run(c.feeds);
  } catch (e) {
    failures.push(`good input after bad ones: ${e.message}`);
  }
  model.free();
  await expect('run after free', 'USAGE', () => model.run(c.feeds));
  return failures;
}
