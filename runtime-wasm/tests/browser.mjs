// Real headless Chromium (chromium.mjs) over the fixtures of
// cli/tests/wasm_package.rs ($KILN_WASM_FIXTURES):
//   1. parity.html runs every corpus model through the package and compares
//      with the native outputs (int8 identical, float within 1e-5 of the
//      output's magnitude), and throws bad input at it;
//   2. an app bundled by webpack (which rewrites the package's
//      `new URL('…wasm', import.meta.url)` into a hashed asset) loads and
//      runs a model and gets a KilnError for bad input;
//   3. the MNIST demo page classifies a drawn 7; its screenshot
//      ($KILN_WASM_SHOT, default $KILN_WASM_FIXTURES/demo.png) must not be
//      blank.
// Exits non-zero on any mismatch, page error, or timeout.
import { writeFile, mkdtemp, mkdir, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { withChromium, inkOf, npm, repo } from './chromium.mjs';

/** Bundles a small app that imports `kiln-runtime` with webpack; returns
 * the output directory (with an index.html). */
async function bundle(dir) {
  const webpack = createRequire(path.join(npm, 'package.json'))('webpack');
  await mkdir(path.join(dir, 'src'), { recursive: true });
  await writeFile(path.join(dir, 'src/index.js'), `
    import { Model, KilnError } from 'kiln-runtime';
    const res = await fetch('/fixtures/sklearn_logreg_iris.kiln');
    const m = await Model.load(new Uint8Array(await res.arrayBuffer()));
    const out = m.run({ [m.inputs[0].name]: new Float32Array([5.1, 3.5, 1.4, 0.2]) });
    let code = '';
    try { m.run({}); } catch (e) { code = e instanceof KilnError ? e.code : 'not a KilnError'; }
    window.__bundled = { label: Number(Object.values(out)[0][0]), code };
  `);
  const out = path.join(dir, 'dist');
  const stats = await new Promise((resolve, reject) => webpack({
    mode: 'production',
    context: dir,
    entry: './src/index.js',
    output: { path: out, filename: 'app.js', publicPath: 'auto' },
    resolve: { alias: { 'kiln-runtime': path.join(repo, 'runtime-wasm/pkg') } },
    experiments: { topLevelAwait: true },
    performance: { hints: false },
  }, (err, s) => (err ? reject(err) : resolve(s))));
  if (stats.hasErrors()) throw new Error(`webpack: ${stats.toString('errors-only')}`);
  await writeFile(path.join(out, 'index.html'), '<!doctype html><link rel="icon" href="data:,"><script src="app.js"></script>');
  return out;
}

const fixtures = process.env.KILN_WASM_FIXTURES;
if (!fixtures) throw new Error('set KILN_WASM_FIXTURES');

const problems = [];
let exitCode = 1;
const scratch = await mkdtemp(path.join(os.tmpdir(), 'kiln-bundle-'));
try {
  const dist = await bundle(scratch);
  await withChromium(fixtures, async (page, origin) => {
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
    page.on('crash', () => problems.push('the page crashed'));

    await page.goto(`${origin}/runtime-wasm/tests/parity.html`);
    await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 120000 });
    const r = await page.evaluate(() => window.__result);
    if (r.error) problems.push(`parity page: ${r.error}`);
    else {
      console.log(`Chromium: ${r.userAgent.match(/HeadlessChrome\/[\d.]+/)?.[0]}, simd ${r.simd}`);
      for (const c of r.results) {
        console.log(`${c.ok ? 'ok  ' : 'FAIL'} ${c.stem.padEnd(40)} ${c.ok ? `max abs diff ${c.worst.toExponential(2)}` : c.detail}`);
        if (!c.ok) problems.push(`${c.stem}: ${c.detail}`);
      }
      if (r.results.length < 20) problems.push(`only ${r.results.length} cases ran`);
      if (!r.simd) problems.push('the package in Chromium is not the SIMD build');
      for (const f of r.failures) problems.push(`bad input: ${f}`);
      console.log(`bad-input checks: ${r.failures.length === 0 ? 'all threw KilnError with the right code' : r.failures.join('; ')}`);
    }

    await page.goto(`${origin}/bundle/index.html`);
    await page.waitForFunction(() => window.__bundled !== undefined, null, { timeout: 30000 });
    const bundled = await page.evaluate(() => window.__bundled);
    console.log(`webpack bundle: setosa -> label ${bundled.label}, bad input -> ${bundled.code}`);
    if (bundled.label !== 0 || bundled.code !== 'INPUT_REJECTED') problems.push(`webpack bundle: ${JSON.stringify(bundled)}`);

    await page.goto(`${origin}/demos/wasm-mnist/index.html?model=/fixtures/zoo_mnist8_cntk.kiln&sample=7`);
    await page.waitForFunction(() => window.__demo !== undefined, null, { timeout: 30000 });
    const demo = await page.evaluate(() => window.__demo);
    if (demo.error) problems.push(`demo: ${demo.error}`);
    else console.log(`demo: drawn 7 classified as ${demo.prediction} (p=${demo.probability.toFixed(3)}), ${demo.latencyMs.toFixed(3)} ms per run`);
    if (demo.prediction !== 7) problems.push(`demo: the drawn 7 was classified as ${demo.prediction}`);
    const shot = await page.screenshot();
    const shotFile = process.env.KILN_WASM_SHOT ?? path.join(fixtures, 'demo.png');
    await writeFile(shotFile, shot);
    console.log(`screenshot -> ${shotFile}`);
    const ink = await inkOf(page, shot);
    console.log(`screenshot ${ink.width}x${ink.height}: ${(100 * ink.off / ink.total).toFixed(1)}% of pixels off the background`);
    if (ink.off < ink.total * 0.05) problems.push('the demo screenshot is blank');
  }, { '/bundle/': dist });
  exitCode = problems.length === 0 ? 0 : 1;
} catch (e) {
  problems.push(`runner: ${e.message}`);
} finally {
  await rm(scratch, { recursive: true, force: true });
}
for (const p of problems) console.error(`FAIL ${p}`);
process.exit(exitCode);
