// The package as a user gets it: `npm pack` of runtime-wasm/pkg, installed
// into a scratch project, imported by its name (the `exports` map), run on
// a corpus model, with the TypeScript declarations shipped beside it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, writeFile, rm, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../pkg');
const fixtures = process.env.KILN_WASM_FIXTURES;

test('npm pack, npm install, import by name, run', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-npm-'));
  try {
    const tgz = execFileSync('npm', ['pack', '--silent', '--pack-destination', dir, pkg], { encoding: 'utf8' }).trim().split('\n').pop();
    await writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--silent', '--no-audit', '--no-fund', '--offline', path.join(dir, tgz)], { cwd: dir });
    const installed = await readdir(path.join(dir, 'node_modules/kiln-runtime'));
    for (const f of ['kiln.js', 'kiln.d.ts', 'kiln_runtime_wasm_bg.wasm', 'package.json']) {
      assert.ok(installed.includes(f), `${f} missing from the installed package: ${installed}`);
    }
    const types = await readFile(path.join(dir, 'node_modules/kiln-runtime/kiln.d.ts'), 'utf8');
    assert.match(types, /class KilnError extends Error/);
    const artifact = path.join(fixtures, 'sklearn_logreg_iris.kiln');
    await writeFile(path.join(dir, 'app.mjs'), `
      import { Model, KilnError } from 'kiln-runtime';
      import { readFile } from 'node:fs/promises';
      const m = await Model.load(await readFile(${JSON.stringify(artifact)}));
      const out = m.run({ [m.inputs[0].name]: new Float32Array([5.1, 3.5, 1.4, 0.2]) });
      let code = '';
      try { m.run({}); } catch (e) { code = e instanceof KilnError ? e.code : 'not a KilnError'; }
      console.log(JSON.stringify({ label: Number(Object.values(out)[0][0]), code }));
    `);
    const got = JSON.parse(execFileSync(process.execPath, [path.join(dir, 'app.mjs')], { cwd: dir, encoding: 'utf8' }));
    assert.deepEqual(got, { label: 0, code: 'INPUT_REJECTED' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
