// The demo page: draw on a 280x280 canvas, downsample to MNIST's 28x28
// (white on black, 0..255), classify with kiln-runtime, show the digit,
// the class probabilities and the median latency of 20 runs.
// URL parameters: model=URL of the .kiln (default mnist.kiln, made by
// build.sh), pkg=URL of kiln.js, sample=D draws a stored stroke for D.
import { Model, KilnError } from '../../runtime-wasm/pkg/kiln.js';

const params = new URLSearchParams(location.search);
const pad = document.getElementById('pad');
const ctx = pad.getContext('2d');
const status = document.getElementById('status');
const showError = (e) => {
  document.getElementById('error').textContent = e instanceof KilnError ? `${e.code}: ${e.message}` : String(e);
  window.__demo = { error: String(e && e.message) };
};

function clear() {
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, pad.width, pad.height);
  document.getElementById('digit').textContent = '–';
  document.getElementById('bars').textContent = '';
}

function stroke(points) {
  ctx.strokeStyle = '#fff';
  ctx.lineWidth = 22;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.beginPath();
  ctx.moveTo(points[0][0], points[0][1]);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
  ctx.stroke();
}

// Hand-drawn strokes (canvas pixels) for a few digits.
const SAMPLES = {
  1: [[[140, 50], [140, 230]]],
  7: [[[75, 65], [205, 65], [125, 235]]],
  0: [[[140, 50], [85, 90], [80, 180], [140, 230], [195, 180], [195, 90], [140, 50]]],
};

/** 28x28 float32 pixels 0..255 from the canvas, MNIST-style: the drawing
 * scaled into a 20x20 box centred in the 28x28 frame. */
function pixels() {
  const small = document.createElement('canvas');
  small.width = small.height = 28;
  const s = small.getContext('2d');
  s.fillStyle = '#000';
  s.fillRect(0, 0, 28, 28);
  s.imageSmoothingEnabled = true;
  s.imageSmoothingQuality = 'high';
  s.drawImage(pad, 4, 4, 20, 20);
  const rgba = s.getImageData(0, 0, 28, 28).data;
  const x = new Float32Array(784);
  for (let i = 0; i < 784; i++) x[i] = rgba[4 * i];
  return x;
}

function softmax(v) {
  const m = Math.max(...v);
  const e = Array.from(v, (a) => Math.exp(a - m));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((a) => a / sum);
}

let model;

function classify() {
  const input = model.inputs[0];
  const x = pixels();
  let out;
  const times = [];
  for (let k = 0; k < 20; k++) {
    const t0 = performance.now();
    out = model.run({ [input.name]: x });
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const median = times[times.length >> 1];
  const logits = out[model.outputs[0].name];
  const p = softmax(logits);
  const best = p.indexOf(Math.max(...p));
  document.getElementById('digit').textContent = String(best);
  const bars = document.getElementById('bars');
  bars.textContent = '';
  p.forEach((q, d) => {
    const row = document.createElement('div');
    row.className = 'bar';
    row.innerHTML = `<span>${d}</span><span class="fill" style="width:${Math.round(q * 160)}px"></span><span>${(q * 100).toFixed(1)}%</span>`;
    bars.appendChild(row);
  });
  status.textContent = `${median.toFixed(3)} ms per run (median of 20, one thread, wasm SIMD)`;
  window.__demo = { prediction: best, probability: p[best], latencyMs: median };
}

async function main() {
  clear();
  const url = params.get('model') ?? 'mnist.kiln';
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot fetch ${url} (${res.status}): run demos/wasm-mnist/build.sh`);
  model = await Model.load(new Uint8Array(await res.arrayBuffer()));
  status.textContent = `${model.name}: ${model.inputs[0].name} ${model.inputs[0].dtype} [${model.inputs[0].shape}]`;
  let drawing = false;
  let points = [];
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };
  pad.addEventListener('pointerdown', (e) => { drawing = true; points = [at(e)]; });
  pad.addEventListener('pointermove', (e) => {
    if (!drawing) return;
    points.push(at(e));
    stroke(points.slice(-2));
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    try { classify(); } catch (e) { showError(e); }
  };
  pad.addEventListener('pointerup', end);
  pad.addEventListener('pointerleave', end);
  document.getElementById('clear').addEventListener('click', clear);
  const sample = params.get('sample');
  if (sample !== null && SAMPLES[sample]) {
    for (const s of SAMPLES[sample]) stroke(s);
    classify();
  }
}

main().catch(showError);
