// Node runner: node runtime-wasm/bench/bench.mjs FIXTURE_DIR CORPUS_DIR
// (fixtures as written for the package tests; the bench crate writes them).
// Prints one JSON object: {node, ort, rows}.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Model } from '../pkg/kiln.js';
import { loadCases } from '../tests/common.mjs';
import { benchCases } from './timing.mjs';

const [dir, corpus] = process.argv.slice(2);
const npm = process.env.KILN_NPM ?? path.join(os.homedir(), '.cache/kiln/npm');
const ortPath = createRequire(path.join(npm, 'package.json')).resolve('onnxruntime-web');
const ort = await import(pathToFileURL(ortPath));
const cases = await loadCases(async (f) => new Uint8Array(await readFile(path.join(dir, f))));
for (const c of cases) {
  const desc = JSON.parse(await readFile(path.join(dir, `${c.stem}.json`), 'utf8'));
  if (desc.source.endsWith('.onnx')) c.onnx = new Uint8Array(await readFile(path.join(corpus, desc.source)));
}
const only = process.env.KILN_BENCH_FILTER;
const rows = await benchCases(Model, ort, only ? cases.filter((c) => c.stem.includes(only)) : cases);
console.log(JSON.stringify({ node: process.version, ort: ort.env.versions.web, rows }));
