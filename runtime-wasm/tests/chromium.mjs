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
