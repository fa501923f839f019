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

  constructor(raw) {
    if (!(raw instanceof RawModel)) {
      throw new KilnError('USAGE', 'use `await Model.load(bytes)` to make a Model');
    }
    this.#raw = raw;
    registry.register(this, raw, this);
  }

  /** Loads artifact bytes (Uint8Array or ArrayBuffer of a .kiln file). */
  static async load(bytes) {
    await initialize();
    if (bytes instanceof ArrayBuffer) bytes = new Uint8Array(bytes);
    if (!(bytes instanceof Uint8Array)) {
      throw new KilnError('USAGE', 'Model.load() takes the artifact as a Uint8Array or ArrayBuffer');
    }
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
    try {
      return raw.run(feeds);
    } catch (e) {
      const err = wrapError(e);
      // A trap can leave the instance inconsistent: do not run again.
      if (err.code === 'INTERNAL') this.#drop();
      throw err;
    }
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
