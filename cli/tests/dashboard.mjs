// The collector's dashboard in a real headless Chromium: opens
// $KILN_DASHBOARD_URL (a version page, token in the query), reads what the
// page shows (charts, per-column verdicts from the cells' data- attributes),
// screenshots the whole page to $KILN_DASHBOARD_SHOT and counts pixels off
// the background (chromium.mjs's inkOf). Prints one JSON line; exits
// non-zero on a page error, a blank screenshot or a chart that did not
// render.
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { withChromium, inkOf } from '../../runtime-wasm/tests/chromium.mjs';

const url = process.env.KILN_DASHBOARD_URL;
const shotFile = process.env.KILN_DASHBOARD_SHOT;
if (!url || !shotFile) throw new Error('set KILN_DASHBOARD_URL and KILN_DASHBOARD_SHOT');
const scratch = await mkdtemp(path.join(os.tmpdir(), 'kiln-dashboard-'));
const problems = [];
try {
  await withChromium(scratch, async (page) => {
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    await page.setViewportSize({ width: 1280, height: 900 });
    const res = await page.goto(url, { waitUntil: 'load' });
    if (res.status() !== 200) problems.push(`HTTP ${res.status()}`);
    const seen = await page.evaluate(() => {
      const box = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
      const charts = [...document.querySelectorAll('figure')].map((f) => ({
        title: f.querySelector('figcaption')?.textContent,
        drawn: box(f.querySelector('svg')),
        points: f.querySelectorAll('circle').length,
      }));
      const columns = [...document.querySelectorAll('tr.col')].map((r) => ({
        column: r.dataset.column, test: r.dataset.test, score: Number(r.dataset.score),
        drift: r.dataset.drift === 'true', histogram: box(r.querySelector('svg.hist')),
        bars: r.querySelectorAll('svg.hist rect').length,
      }));
      const v = document.getElementById('verdict');
      return { title: document.title, charts, columns, datasetDrift: v?.dataset.datasetDrift === 'true' };
    });
    const shot = await page.screenshot({ fullPage: true });
    await writeFile(shotFile, shot);
    const ink = await inkOf(page, shot);
    if (ink.off < ink.total * 0.03) problems.push(`the screenshot is blank (${ink.off} of ${ink.total} pixels drawn)`);
    for (const c of seen.charts) if (!c.drawn || c.points === 0) problems.push(`chart '${c.title}' drew nothing`);
    console.log(JSON.stringify({ ...seen, screenshot: { file: shotFile, ...ink } }));
  });
} finally {
  await rm(scratch, { recursive: true, force: true });
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
