// kiln-runtime: run Kiln artifacts in browsers (with or without a bundler)
// and in Node >= 20. A thin layer over the wasm-bindgen module: it loads the
// .wasm once, turns every failure into a KilnError with a `code`, and frees
// a model's wasm memory when the model is garbage-collected (free() does it
// at once).
import init, {
  Model as RawModel,
  simdEnabled as rawSimdEnabled,
  runtimeVersion as rawRuntimeVersion,
} from './kiln_runtime_wasm.js';

/** Every error the package throws. `code`: INVALID_MODEL, INPUT_REJECTED,
 * USAGE or OTHER (the categories of the `kiln` CLI's exit codes), or
 * INTERNAL for a fault inside the runtime. */
export class KilnError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'KilnError';
    this.code = code;
  }
}

function wrapError(e) {
  if (e instanceof KilnError) return e;
  if (e && e.name === 'KilnError' && typeof e.code === 'string') {
    return new KilnError(e.code, e.message);
  }
  return new KilnError('INTERNAL', `kiln-runtime fault: ${e && e.message ? e.message : String(e)}`);
}

let ready = null;

/** Loads the WebAssembly module. Model.load() calls it; call it yourself to
 * pass the module (a URL, Response, bytes or WebAssembly.Module) when the
 * .wasm is not beside this file, or to start the download early. */
export function initialize(source) {
  if (ready === null) {
    ready = (async () => {
      if (source !== undefined) return init({ module_or_path: source });
      const url = new URL('./kiln_runtime_wasm_bg.wasm', import.meta.url);
      if (url.protocol === 'file:') {
        // Node: fetch() cannot read file: URLs. The specifier is hidden from
        // bundlers, which would otherwise try to pack `node:` modules into
        // a browser build (this branch never runs there).
        const fsModule = 'node:fs/promises';
        const { readFile } = await import(/* webpackIgnore: true */ /* @vite-ignore */ fsModule);
        return init({ module_or_path: await readFile(url) });
      }
      return init({ module_or_path: url });
    })();
    ready.catch(() => { ready = null; });
  }
  return ready;
}

const registry = new FinalizationRegistry((raw) => raw.free());

export class Model {
  #raw;
  #telemetry = null;

  constructor(raw) {
    if (!(raw instanceof RawModel)) {
      throw new KilnError('USAGE', 'use `await Model.load(bytes)` to make a Model');
    }
    this.#raw = raw;
    registry.register(this, raw, this);
  }

  /** Loads artifact bytes (Uint8Array or ArrayBuffer of a .kiln file). */
  /** Loads an artifact. With `{trustedKeys}` (32-byte ed25519 public keys,
   * as Uint8Array or hex), only an intact artifact signed by one of them
   * (`kiln sign`) loads; anything else throws `INVALID_MODEL`. */
  static async load(bytes, options = {}) {
    await initialize();
    if (bytes instanceof ArrayBuffer) bytes = new Uint8Array(bytes);
    if (!(bytes instanceof Uint8Array)) {
      throw new KilnError('USAGE', 'Model.load() takes the artifact as a Uint8Array or ArrayBuffer');
    }
    if (options.trustedKeys !== undefined) await verifyArtifact(bytes, options.trustedKeys);
    try {
      return new Model(RawModel.load(bytes));
    } catch (e) {
      throw wrapError(e);
    }
  }

  #live() {
    if (this.#raw === null) throw new KilnError('USAGE', 'this Model was freed');
    return this.#raw;
  }

  get name() { return this.#live().name; }
  get version() { return this.#live().version; }
  /** [{name, dtype, shape, labels}]; a batch dimension is its name, e.g. "N". */
  get inputs() { return this.#live().inputs; }
  get outputs() { return this.#live().outputs; }
  get arenaBytes() { return this.#live().arenaBytes; }
  get allowNonFinite() { return this.#live().allowNonFinite; }
  set allowNonFinite(v) { this.#live().allowNonFinite = Boolean(v); }

  /** feeds: {inputName: TypedArray | {data: TypedArray, shape: number[]}}.
   * Returns {outputName: TypedArray}. Throws KilnError on bad input. */
  run(feeds) {
    const raw = this.#live();
    const t = this.#telemetry;
    const sampled = t !== null && t.sample();
    const start = sampled ? performance.now() : 0;
    let out;
    try {
      out = raw.run(feeds);
    } catch (e) {
      const err = wrapError(e);
      if (t !== null && err.code === 'INPUT_REJECTED') t.sketch.rejected += 1;
      // A trap can leave the instance inconsistent: do not run again.
      if (err.code === 'INTERNAL') this.#drop();
      throw err;
    }
    if (sampled) t.record(feeds, out, Math.floor((performance.now() - start) * 1000));
    return out;
  }

  /** Starts recording drift telemetry (the model must be compiled with
   * `--reference`): one call in `every` is counted (its input rows into the
   * baseline's bins, its predictions, its run time), every rejected call
   * too, into a fixed-size sketch. Recording never blocks or fails a run. */
  recordTelemetry(every = DEFAULT_SAMPLE_EVERY) {
    const text = this.#live().driftBaseline;
    if (text === undefined) {
      throw new KilnError('USAGE', 'this model has no drift baseline: compile it with --reference DATA');
    }
    const baseline = decodeBaseline(text);
    const input = this.inputs[0];
    const width = input === undefined ? 0
      : baseline.channels === null ? input.shape[input.shape.length - 1] : 2 * input.shape[baseline.channels];
    if (input === undefined || !COUNTED.includes(input.dtype) || width !== baseline.features.length) {
      throw new KilnError('USAGE', `telemetry needs a float32 or 8-bit first input of ${baseline.features.length} features`);
    }
    if (baseline.channels !== null) baseline.shape = input.shape.map((d, i) => (i === 0 ? 1 : d));
    this.#telemetry = new Recorder(baseline, input.name, this.outputs, every);
  }

  /** The window recorded so far (the collector's JSON sketch: what
   * `TelemetryUploader.push` sends); a new window starts. `null` when not
   * recording. With `{epsilon}`, the window is made ε-differentially
   * private first (`privatizeSketch`). */
  /** Keeps, per window, a uniform random sample of `k` raw input rows of
   * the recorded calls (off by default; 0 turns it off), for `takeSamples`
   * and `TelemetryUploader.push(sketch, samples)`. Raw rows are the data
   * itself: no differential privacy covers them. */
  recordSamples(k) {
    const t = this.#telemetry;
    if (t === null) throw new KilnError('USAGE', 'call recordTelemetry before recordSamples');
    t.reservoir = k > 0 ? { k: Math.floor(k), seen: 0, rows: [] } : null;
  }

  /** The rows sampled in the window so far (arrays of numbers, NaN as
   * null); a new sample starts. */
  takeSamples() {
    const r = this.#telemetry?.reservoir;
    if (!r) return [];
    const rows = r.rows;
    r.rows = [];
    r.seen = 0;
    return rows;
  }

  takeSketch({ epsilon } = {}) {
    const t = this.#telemetry;
    if (t === null) return null;
    const s = t.sketch;
    t.sketch = emptySketch(t.baseline);
    return epsilon === undefined ? s : privatizeSketch(s, epsilon);
  }

  #drop() {
    registry.unregister(this);
    this.#raw = null;
  }

  /** Releases the model's wasm memory now. Further use throws. */
  free() {
    if (this.#raw !== null) {
      const raw = this.#raw;
      this.#drop();
      raw.free();
    }
  }
}

// ---- Telemetry -------------------------------------------------------------
// What the native runtime's Session::record_telemetry does, in the package's
// JavaScript (the .wasm stays small): the baseline is decoded from the
// artifact's postcard bytes, values are binned as protocol's Bins do, and
// sketches are the collector's JSON.

/** One call in this many is counted by default (as natively). */
export const DEFAULT_SAMPLE_EVERY = 64;
const LATENCY_BUCKETS = 32;
/** Input types telemetry counts: float32, and 8-bit integers as their codes
 * (as the compiler took the reference, and as every runtime counts them). */
const COUNTED = ['float32', 'int8', 'uint8'];

class Postcard {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = 0;
  }
  byte() {
    if (this.at >= this.bytes.length) throw new KilnError('INVALID_MODEL', 'the drift baseline is truncated');
    return this.bytes[this.at++];
  }
  varint() {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.byte();
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    throw new KilnError('INVALID_MODEL', 'the drift baseline has a bad varint');
  }
  f64() {
    if (this.at + 8 > this.bytes.length) this.byte();
    const x = this.view.getFloat64(this.at, true);
    this.at += 8;
    return x;
  }
  bool() { return this.byte() !== 0; }
  string() {
    const n = this.varint();
    if (this.at + n > this.bytes.length) this.byte();
    const text = new TextDecoder().decode(this.bytes.subarray(this.at, this.at + n));
    this.at += n;
    return text;
  }
  vec(item) {
    const n = this.varint();
    if (n > this.bytes.length) throw new KilnError('INVALID_MODEL', 'the drift baseline is truncated');
    return Array.from({ length: n }, () => item());
  }
  feature() {
    switch (this.varint()) {
      case 0: { // Continuous { edges, counts, min, max, variance }
        const edges = this.vec(() => this.f64());
        this.vec(() => this.varint());
        this.f64(); this.f64(); this.f64();
        return { edges: true, values: edges };
      }
      case 1: { // Values { categorical, values, counts }
        this.bool();
        const values = this.vec(() => this.f64());
        this.vec(() => this.varint());
        return { edges: false, values };
      }
      default:
        throw new KilnError('INVALID_MODEL', 'the drift baseline has an unknown feature kind');
    }
  }
}

/** The artifact's `kiln.drift_baseline` (base64 postcard `Baseline`): the
 * feature names, each feature's bins, and the predictions' bins. */
export function decodeBaseline(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const r = new Postcard(bytes);
  const names = r.vec(() => r.string());
  const features = r.vec(() => r.feature());
  let prediction = null;
  if (r.bool()) {
    const output = r.varint();
    const argmax = r.bool();
    prediction = { output, argmax, bins: r.feature() };
  }
  // A tensor input's channel axis (baselines written before it have none).
  const channels = r.at < bytes.length && r.bool() ? r.varint() : null;
  return { names, features, prediction, channels };
}

// Rust's f64::total_cmp for the values a sketch sees (no NaN): -0 < +0.
function totalCmp(a, b) {
  if (a < b) return -1;
  if (a > b) return 1;
  if (Object.is(a, b)) return 0;
  return Object.is(a, -0) ? -1 : 1;
}

/** The bin of a present value (protocol's `Bins::bin`). */
export function binOf(bins, x) {
  const v = bins.values;
  let lo = 0;
  let hi = v.length;
  if (bins.edges) {
    // The first edge not below x.
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (v[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = totalCmp(v[mid], x);
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1; else hi = mid;
  }
  return v.length;
}

function emptyCounts(bins) {
  return { bins: new Array(bins.values.length + 1).fill(0), missing: 0, min: null, max: null };
}

function emptySketch(baseline) {
  return {
    rows: 0,
    features: baseline.features.map(emptyCounts),
    rejected: 0,
    latency_us: new Array(LATENCY_BUCKETS).fill(0),
    prediction: baseline.prediction === null ? null : emptyCounts(baseline.prediction.bins),
  };
}

function count(c, bins, x) {
  if (Number.isNaN(x)) {
    c.missing += 1;
    return;
  }
  c.bins[binOf(bins, x)] += 1;
  c.min = c.min === null ? x : Math.min(c.min, x);
  c.max = c.max === null ? x : Math.max(c.max, x);
}

class Recorder {
  constructor(baseline, input, outputs, every) {
    this.baseline = baseline;
    this.input = input;
    this.outputs = outputs;
    this.every = Math.max(1, Math.floor(every));
    this.tick = 0;
    this.sketch = emptySketch(baseline);
    this.reservoir = null;
  }

  sample() {
    this.tick += 1;
    if (this.tick < this.every) return false;
    this.tick = 0;
    return true;
  }

  record(feeds, out, micros) {
    const b = this.baseline;
    const s = this.sketch;
    const feed = feeds[this.input];
    // A typed array of the input's type: 8-bit inputs count their codes.
    const data = ArrayBuffer.isView(feed) ? feed : feed.data;
    const n = b.features.length;
    const r = this.reservoir;
    if (b.channels !== null) {
      // A tensor input: per sample, each channel's mean and deviation
      // (protocol's summarize_channels, the same f64 arithmetic).
      const shape = b.shape;
      const axis = b.channels;
      const c = shape[axis];
      const outer = shape.slice(1, axis).reduce((a, d) => a * d, 1);
      const inner = shape.slice(axis + 1).reduce((a, d) => a * d, 1);
      const per = outer * c * inner;
      const cells = Math.max(1, outer * inner);
      for (let at = 0; per > 0 && at + per <= data.length; at += per) {
        for (let ch = 0; ch < c; ch++) {
          let sum = 0;
          let sum2 = 0;
          for (let o = 0; o < outer; o++) {
            const base = at + (o * c + ch) * inner;
            for (let i = 0; i < inner; i++) {
              const x = data[base + i];
              sum += x;
              sum2 += x * x;
            }
          }
          const mean = sum / cells;
          const variance = sum2 / cells - mean * mean;
          count(s.features[2 * ch], b.features[2 * ch], mean);
          count(s.features[2 * ch + 1], b.features[2 * ch + 1], Math.sqrt(variance < 0 ? 0 : variance));
        }
        s.rows += 1;
      }
    }
    for (let row = 0; b.channels === null && row + n <= data.length; row += n) {
      for (let k = 0; k < n; k++) count(s.features[k], b.features[k], data[row + k]);
      s.rows += 1;
      if (r) {
        // Algorithm R: after `seen` rows, each is kept with probability k/seen.
        r.seen += 1;
        const j = r.rows.length < r.k ? r.rows.length : Math.floor(Math.random() * r.seen);
        if (j < r.k) r.rows[j] = Array.from(data.subarray(row, row + n), (x) => (Number.isNaN(x) ? null : x));
      }
    }
    const p = b.prediction;
    const spec = p === null ? undefined : this.outputs[p.output];
    const scores = spec === undefined ? undefined : out[spec.name];
    if (scores instanceof Float32Array || scores instanceof Int8Array || scores instanceof Uint8Array) {
      const width = p.argmax ? Math.max(1, spec.shape[spec.shape.length - 1]) : 1;
      for (let at = 0; at + width <= scores.length; at += width) {
        let value = scores[at];
        if (p.argmax) {
          // The first largest score (NaN never wins), as the compiler took it.
          let best = 0;
          let top = -Infinity;
          for (let k = 0; k < width; k++) {
            if (scores[at + k] > top) { best = k; top = scores[at + k]; }
          }
          value = best;
        }
        count(s.prediction, p.bins, value);
      }
    }
    const bucket = micros < 1 ? 0 : Math.min(LATENCY_BUCKETS - 1, Math.floor(Math.log2(micros)) + 1);
    s.latency_us[bucket] += 1;
  }
}

const SIGNING_CONTEXT = new TextEncoder().encode('kiln artifact v1\0');

function fromHex(text) {
  if (typeof text !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(text)) {
    throw new KilnError('USAGE', 'a key must be a Uint8Array or a hex string');
  }
  return Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
}

const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Checks what the format's `View::verify_signature` checks, with WebCrypto
 * (SHA-256, Ed25519): the content hash recomputed, a signature section,
 * by one of `keys`, over `"kiln artifact v1\0" ‖ content sha256`. */
export async function verifyArtifact(bytes, keys) {
  const refuse = (why) => { throw new KilnError('INVALID_MODEL', why); };
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new KilnError('USAGE', 'trustedKeys must be a non-empty array of ed25519 public keys');
  }
  if (bytes.length < 128) refuse('not a kiln artifact: shorter than its header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const content = Number(view.getBigUint64(16, true));
  const sigAt = view.getUint32(48, true);
  const sigLen = view.getUint32(52, true);
  if (content < 128 || content > bytes.length) refuse('artifact is truncated: its content runs past the end');
  const body = new Uint8Array(48 + content - 128);
  body.set(bytes.subarray(0, 48));
  body.set(bytes.subarray(128, content), 48);
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', body));
  if (!sameBytes(digest, bytes.subarray(64, 96))) {
    refuse('content checksum mismatch: the artifact was modified or corrupted after it was written');
  }
  if (sigLen === 0) refuse('the artifact is not signed, and only signed ones are trusted here: sign it with `kiln sign ARTIFACT --key KEY`');
  const sig = bytes.subarray(sigAt, sigAt + sigLen);
  const magic = new TextEncoder().encode('KILNSIG1');
  if (sigAt !== content || sigLen !== 80 || sig.length !== 80 || !sameBytes(sig.subarray(0, 8), magic)) {
    refuse('invalid signature section: not 80 bytes starting with KILNSIG1');
  }
  const keyId = sig.subarray(8, 16);
  for (const k of keys) {
    const key = typeof k === 'string' ? fromHex(k) : k;
    const id = new Uint8Array(await crypto.subtle.digest('SHA-256', key)).subarray(0, 8);
    if (!sameBytes(id, keyId)) continue;
    const message = new Uint8Array(SIGNING_CONTEXT.length + 32);
    message.set(SIGNING_CONTEXT);
    message.set(digest, SIGNING_CONTEXT.length);
    const pub = await crypto.subtle.importKey('raw', key, { name: 'Ed25519' }, false, ['verify']);
    if (await crypto.subtle.verify({ name: 'Ed25519' }, pub, sig.subarray(16, 80), message)) return;
    refuse("the artifact's signature does not verify: it was tampered with or signed over other content; do not run it");
  }
  const hex = Array.from(keyId, (b) => b.toString(16).padStart(2, '0')).join('');
  refuse(`the artifact is signed by key ${hex}, which is not trusted here: add that key's public half, or sign with a trusted one`);
}

/** Makes a window ε-differentially private per input row, as protocol's
 * `Sketch::privatize` does: every count gets two-sided geometric (discrete
 * Laplace) noise with `P(k) ∝ exp(-ε|k|/Δ)`, Δ = features + 3 (what one row
 * can change), and is clamped at zero; the extremes are dropped. Random
 * bits come from `crypto.getRandomValues`. Modifies and returns `sketch`. */
export function privatizeSketch(sketch, epsilon) {
  if (typeof epsilon !== 'number' || !(epsilon > 0) || !Number.isFinite(epsilon)) {
    throw new KilnError('USAGE', `epsilon must be a positive number, not ${epsilon}`);
  }
  const alpha = Math.exp(-epsilon / (sketch.features.length + 3));
  const words = new Uint32Array(2);
  const geometric = () => {
    globalThis.crypto.getRandomValues(words);
    // 53 random bits, then (0, 1]: never log(0).
    const u = ((words[0] >>> 5) * 67108864 + (words[1] >>> 6) + 1) / 9007199254740992;
    return Math.floor(Math.log(u) / Math.log(alpha));
  };
  const noisy = (c) => Math.max(0, c + geometric() - geometric());
  sketch.rows = noisy(sketch.rows);
  sketch.rejected = noisy(sketch.rejected);
  sketch.latency_us = sketch.latency_us.map(noisy);
  for (const f of [...sketch.features, ...(sketch.prediction === null ? [] : [sketch.prediction])]) {
    f.bins = f.bins.map(noisy);
    f.missing = noisy(f.missing);
    f.min = null;
    f.max = null;
  }
  return sketch;
}

/** Sends sketches to a Kiln collector (`POST /v1/telemetry`) without ever
 * blocking inference: `push` only queues; a background loop posts each
 * batch (with its own `batch_id`, so a retry counts once), backing off
 * exponentially with full jitter while the collector is unreachable or
 * answers 429/5xx, and keeps at most `maxQueued` batches in memory while
 * offline (the oldest are dropped first, and counted). */
export class TelemetryUploader {
  constructor({ url, token, model, version, maxQueued = 256, baseDelayMs = 500, maxDelayMs = 60000, fetch: f = globalThis.fetch }) {
    if (!url || !token || !model || version === undefined) {
      throw new KilnError('USAGE', 'TelemetryUploader needs {url, token, model, version}');
    }
    Object.assign(this, { url: url.replace(/\/$/, ''), token, model, version: String(version), maxQueued, baseDelayMs, maxDelayMs });
    this.fetch = f;
    this.queue = [];
    this.sent = 0;
    this.dropped = 0;
    this.failures = 0;
    this.#next = 0;
  }
  #next;
  #running = null;
  #closed = false;
  #wake = null;

  /** Stops retrying (what is queued stays in `queue`). */
  close() {
    this.#closed = true;
    if (this.#wake !== null) this.#wake();
  }

  /** Queues one window (and the raw rows sampled in it, if any); returns
   * its batch id. */
  push(sketch, samples = []) {
    const id = `${this.model}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}-${this.#next++}`;
    const batch = { batch_id: id, model: this.model, version: this.version, sketch };
    if (samples.length > 0) batch.samples = samples;
    this.queue.push(batch);
    while (this.queue.length > this.maxQueued) {
      this.queue.shift();
      this.dropped += 1;
    }
    if (this.#running === null && !this.#closed) {
      this.#running = this.#drain().finally(() => { this.#running = null; });
    }
    return id;
  }

  /** Resolves once the queue is empty (everything sent, or dropped). */
  async flush() {
    while (this.#running !== null) await this.#running;
  }

  async #drain() {
    let attempt = 0;
    while (this.queue.length > 0 && !this.#closed) {
      const batch = this.queue[0];
      let retry = true;
      try {
        const res = await this.fetch(`${this.url}/v1/telemetry`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token}` },
          body: JSON.stringify(batch),
        });
        retry = res.status === 429 || res.status >= 500;
        if (!retry) {
          // 200 (stored, maybe a duplicate) or a 4xx the same bytes would
          // get again: either way this batch is done.
          if (res.ok) this.sent += 1; else this.dropped += 1;
          if (this.queue[0] === batch) this.queue.shift();
          attempt = 0;
          continue;
        }
      } catch {
        // Unreachable: retry below.
      }
      this.failures += 1;
      if (this.#closed) break;
      const cap = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** attempt);
      attempt = Math.min(attempt + 1, 30);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, Math.random() * cap);
        this.#wake = () => { clearTimeout(timer); resolve(); };
      });
      this.#wake = null;
    }
  }
}

/** Whether the loaded module uses WebAssembly SIMD128 kernels. */
export async function simdEnabled() {
  await initialize();
  return rawSimdEnabled();
}

/** The Kiln version the runtime was built from. */
export async function runtimeVersion() {
  await initialize();
  return rawRuntimeVersion();
}
