// Chromium runner: node runtime-wasm/bench/browser-bench.mjs FIXTURE_DIR CORPUS_DIR
// Opens bench.html in headless Chromium (no cross-origin isolation, so
// onnxruntime-web runs one thread, as Kiln does). Prints one JSON object.
import { withChromium } from '../tests/chromium.mjs';

const [dir, corpus] = process.argv.slice(2);
const filter = process.env.KILN_BENCH_FILTER ?? '';
const result = await withChromium(dir, async (page, origin) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${origin}/runtime-wasm/bench/bench.html?filter=${encodeURIComponent(filter)}`);
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 900000 });
  const r = await page.evaluate(() => window.__result);
  if (errors.length) r.pageErrors = errors;
  r.chromium = r.userAgent?.match(/HeadlessChrome\/[\d.]+/)?.[0];
  return r;
}, { '/corpus/': corpus });
console.log(JSON.stringify(result));
