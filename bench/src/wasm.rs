//! The WebAssembly section: Kiln's npm package against onnxruntime-web
//! (wasm execution provider, one thread, SIMD) in Node and in headless
//! Chromium, same inputs, one run; and Kiln wasm against Kiln native.
//!
//! The package (`runtime-wasm/pkg`) must be built (`cargo xtask bench`
//! builds it first). Fixtures come from `kiln_cli::write_wasm_fixtures`;
//! the JavaScript runners are `runtime-wasm/bench/bench.mjs` (Node) and
//! `browser-bench.mjs` (Chromium).

use anyhow::{Context, Result, bail};
use kiln_cli::write_wasm_fixtures;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Copy)]
struct Timing {
    median: f64,
}

#[derive(Debug, Default)]
struct Side {
    kiln: HashMap<String, Result<Timing, String>>,
    ort: HashMap<String, Result<Timing, String>>,
    order: Vec<String>,
    version: String,
    ort_version: String,
}

fn parse(v: &serde_json::Value, version_key: &str) -> Result<Side> {
    if let Some(e) = v["error"].as_str() {
        bail!("{e}");
    }
    let mut side = Side {
        version: v[version_key].as_str().unwrap_or("?").to_string(),
        ort_version: v["ort"].as_str().unwrap_or("?").to_string(),
        ..Default::default()
    };
    for r in v["rows"].as_array().context("no rows")? {
        let stem = r["stem"].as_str().context("row without stem")?.to_string();
        let get = |k: &str, err: &str| -> Option<Result<Timing, String>> {
            if let Some(m) = r[k]["median"].as_f64() {
                Some(Ok(Timing { median: m }))
            } else {
                r[err].as_str().map(|e| Err(e.to_string()))
            }
        };
        if let Some(k) = get("kiln", "kilnError") {
            side.kiln.insert(stem.clone(), k);
        }
        if let Some(o) = get("ort", "ortError") {
            side.ort.insert(stem.clone(), o);
        }
        side.order.push(stem);
    }
    Ok(side)
}

fn node_json(
    root: &Path,
    script: &str,
    dir: &Path,
    corpus: &Path,
    filter: &str,
) -> Result<serde_json::Value> {
    let out = Command::new("node")
        .arg(script)
        .arg(dir)
        .arg(corpus)
        .env("KILN_BENCH_FILTER", filter)
        .current_dir(root)
        .output()
        .with_context(|| format!("running node {script}"))?;
    if !out.status.success() {
        bail!(
            "node {script} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("no output")?;
    serde_json::from_str(line).with_context(|| format!("node {script} printed {line:?}"))
}

/// Renders the section; `native` maps golden stems to Kiln native medians
/// (µs) from the main tables.
pub fn section(
    root: &Path,
    corpus: &Path,
    filter: &str,
    native: &HashMap<String, f64>,
) -> Result<String> {
    let pkg = root.join("runtime-wasm/pkg/kiln_runtime_wasm_bg.wasm");
    let wasm_bytes = std::fs::metadata(&pkg)
        .with_context(|| format!("{} is missing: run `cargo xtask wasm`", pkg.display()))?
        .len();
    let dir = std::env::temp_dir().join(format!("kiln-wasm-bench-{}", std::process::id()));
    write_wasm_fixtures(corpus, &dir)?;
    eprintln!("wasm: Node…");
    let node = node_json(root, "runtime-wasm/bench/bench.mjs", &dir, corpus, filter)
        .and_then(|v| parse(&v, "node"));
    eprintln!("wasm: Chromium…");
    let chrome = node_json(
        root,
        "runtime-wasm/bench/browser-bench.mjs",
        &dir,
        corpus,
        filter,
    )
    .and_then(|v| parse(&v, "chromium"));
    let _ = std::fs::remove_dir_all(&dir);
    let (node, chrome) = (node?, chrome?);

    let cell = |m: &HashMap<String, Result<Timing, String>>, s: &str| match m.get(s) {
        Some(Ok(t)) => format!("{:.1}", t.median),
        Some(Err(e)) => format!("error: {}", crate::short(e)),
        None => "–".into(),
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}×", a / b),
        _ => "–".into(),
    };
    let med = |m: &HashMap<String, Result<Timing, String>>, s: &str| match m.get(s) {
        Some(Ok(t)) => Some(t.median),
        _ => None,
    };
    let mut rows = vec![];
    let (mut n_node, mut le_node, mut n_chrome, mut le_chrome) = (0, 0, 0, 0);
    for s in &node.order {
        let (kn, on) = (med(&node.kiln, s), med(&node.ort, s));
        let (kc, oc) = (med(&chrome.kiln, s), med(&chrome.ort, s));
        if let (Some(k), Some(o)) = (kn, on) {
            n_node += 1;
            le_node += usize::from(k <= o);
        }
        if let (Some(k), Some(o)) = (kc, oc) {
            n_chrome += 1;
            le_chrome += usize::from(k <= o);
        }
        let nat = native.get(s).copied();
        rows.push(vec![
            s.clone(),
            cell(&node.kiln, s),
            cell(&node.ort, s),
            ratio(kn, on),
            cell(&chrome.kiln, s),
            cell(&chrome.ort, s),
            ratio(kc, oc),
            nat.map_or("–".into(), |n| format!("{n:.1}")),
            ratio(kn, nat),
        ]);
    }
    let ort_wasm = Path::new(&crate::npm_dir())
        .join("node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm");
    let ort_bytes = std::fs::metadata(&ort_wasm).map_or(0, |m| m.len());
    Ok(format!(
        "\n## WebAssembly: Kiln's npm package vs onnxruntime-web (median, µs)\n\n\
         Kiln `kiln-runtime` ({wasm_bytes} B .wasm, SIMD128) and onnxruntime-web {ortv} \
         (`ort-wasm-simd-threaded.wasm`, {ort_bytes} B; wasm execution provider, \
         `numThreads = 1`, SIMD, graph optimisations all) on the same golden inputs, \
         Node {nodev} and headless {chromev} (no cross-origin isolation), one run. Each runtime \
         is warmed up for 0.5 s (V8 optimises a large module's hot code late), then the two \
         runtimes' samples alternate; each sample times a batch of back-to-back calls lasting \
         ≥ 10 ms (Chromium coarsens `performance.now()` to 100 µs); the median per-call time \
         over ≤ 30 samples is shown. \
         Kiln's `run` is synchronous; onnxruntime-web's `session.run` returns a promise, \
         awaited per call as an application would. ORT-web runs ONNX only, so TFLite-sourced \
         models have Kiln columns alone. *wasm/native* is Kiln in Node over Kiln native \
         (main table, same machine).\n\n{table}\n**Summary:** Kiln ≤ 1.0× onnxruntime-web on \
         {le_node} of {n_node} models in Node and {le_chrome} of {n_chrome} in Chromium.\n",
        ortv = node.ort_version,
        nodev = node.version,
        chromev = chrome.version,
        table = crate::table(
            &[
                "Model",
                "Kiln Node",
                "ORT-web Node",
                "Kiln/ORT",
                "Kiln Chromium",
                "ORT-web Chromium",
                "Kiln/ORT",
                "Kiln native",
                "wasm/native",
            ],
            &rows
        ),
    ))
}
