// Headless Chromium (Debian's /usr/bin/chromium, or $KILN_CHROMIUM) driven
// by playwright-core from $KILN_NPM (default ~/.cache/kiln/npm), with a
// static server on 127.0.0.1 serving the repository at /, the fixtures
// directory at /fixtures/, the npm tools at /npm/ (and any extra mounts).
import http from 'node:http';
import { createRequire } from 'node:module';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const npm = process.env.KILN_NPM ?? path.join(os.homedir(), '.cache/kiln/npm');

const TYPES = {
  '.html': 'text/html', '.mjs': 'text/javascript', '.js': 'text/javascript', '.json': 'application/json',
  '.wasm': 'application/wasm', '.png': 'image/png', '.css': 'text/css',
};

/** Runs `fn(page, origin)` in a fresh profile; always cleans up. `extra`
 * maps more URL prefixes to directories. */
export async function withChromium(fixtures, fn, extra = {}) {
  const { chromium } = createRequire(path.join(npm, 'package.json'))('playwright-core');
  const mounts = [...Object.entries(extra), ['/fixtures/', fixtures], ['/npm/', path.join(npm, 'node_modules')], ['/', repo]];
  const server = http.createServer(async (req, res) => {
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const [prefix, base] = mounts.find(([p]) => rel.startsWith(p));
    const file = path.resolve(base, rel.slice(prefix.length));
    if (!file.startsWith(path.resolve(base))) { res.writeHead(403).end(); return; }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const profile = await mkdtemp(path.join(os.tmpdir(), 'kiln-chromium-'));
  let ctx;
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.KILN_CHROMIUM ?? '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 900, height: 560 },
    });
    const page = ctx.pages()[0] ?? await ctx.newPage();
    return await fn(page, origin);
  } finally {
    if (ctx) await ctx.close();
    server.close();
    await rm(profile, { recursive: true, force: true });
  }
}

/** Decodes a PNG screenshot in `page` and counts the pixels whose colour
 * differs from the top-left one (the background): {off, total, width,
 * height}. */
export async function inkOf(page, png) {
  return page.evaluate(async (b64) => {
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
  }, png.toString('base64'));
}
