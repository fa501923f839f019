// Real headless Chromium (chromium.mjs) over the fixtures of
// cli/tests/wasm_package.rs ($KILN_WASM_FIXTURES):
//   1. parity.html runs every corpus model through the package and compares
//      with the native outputs (int8 identical, float within 1e-5 of the
//      output's magnitude), and throws bad input at it;
//   2. the MNIST demo page classifies a drawn 7; its screenshot
//      ($KILN_WASM_SHOT, default $KILN_WASM_FIXTURES/demo.png) must not be
//      blank.
// Exits non-zero on any mismatch, page error, or timeout.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { withChromium } from './chromium.mjs';

const fixtures = process.env.KILN_WASM_FIXTURES;
if (!fixtures) throw new Error('set KILN_WASM_FIXTURES');

const problems = [];
let exitCode = 1;
try {
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
    // Decode the screenshot in the page and count pixels off the background.
    const ink = await page.evaluate(async (b64) => {
      const img = new Image();
      img.src = `data:image/png;base64,${b64}`;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.width; c.height = img.height;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      const [r0, g0, b0] = [d[0], d[1], d[2]];
      let off = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] !== r0 || d[i + 1] !== g0 || d[i + 2] !== b0) off++;
      return { off, total: d.length / 4, width: c.width, height: c.height };
    }, shot.toString('base64'));
    console.log(`screenshot ${ink.width}x${ink.height}: ${(100 * ink.off / ink.total).toFixed(1)}% of pixels off the background`);
    if (ink.off < ink.total * 0.05) problems.push('the demo screenshot is blank');
  });
  exitCode = problems.length === 0 ? 0 : 1;
} catch (e) {
  problems.push(`runner: ${e.message}`);
}
for (const p of problems) console.error(`FAIL ${p}`);
process.exit(exitCode);
