//! The npm package against the native runtime, in Node and in a real
//! headless Chromium.
//!
//! Every corpus model with a golden file is compiled here and run natively;
//! the artifacts, golden inputs and native outputs go to a fixture
//! directory, and two JavaScript runners load them through the package
//! (`runtime-wasm/pkg`, built by `cargo xtask wasm`):
//! `node --test runtime-wasm/tests/node/` and
//! `runtime-wasm/tests/browser.mjs` (Chromium via playwright-core, pages
//! served on 127.0.0.1). Both require integer outputs to be bit-identical
//! and float outputs within 1e-5 of the output's magnitude, check that bad
//! input throws a `KilnError`, and the browser runner screenshots the demo.
//!
//! Ignored in plain `cargo test` (it needs the package, Node and Chromium);
//! `scripts/test.sh` builds the package and runs it with `--ignored`.

use kiln_cli::{CORPUS_GOLDEN, CORPUS_TFLITE_GOLDEN, GoldenCase};
use kiln_runtime_native::{Model, TensorValue};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn tensor_json(name: &str, t: &TensorValue, file: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "dtype": t.dtype.name(),
        "shape": t.shape,
        "file": file,
    })
}

/// Writes `<stem>.kiln`, raw little-endian `.bin` tensors and `<stem>.json`
/// per case, and `manifest.json` listing the cases.
fn write_fixtures(dir: &Path) -> usize {
    std::fs::create_dir_all(dir).expect("fixture dir");
    let corpus = root().join("../shared/corpus");
    let mut stems = vec![];
    for (stem, rel) in CORPUS_GOLDEN.iter().chain(CORPUS_TFLITE_GOLDEN) {
        let case =
            GoldenCase::compile(&corpus, stem, rel).unwrap_or_else(|e| panic!("{stem}: {e:#}"));
        let model = Model::load(&case.artifact).expect("loads");
        let ordered: Vec<&TensorValue> = case.inputs.iter().map(|(_, t)| t).collect();
        let outputs = model.session().run(&ordered).expect("native run");
        std::fs::write(dir.join(format!("{stem}.kiln")), &case.artifact).expect("write");
        let mut ins = vec![];
        for (k, (name, t)) in case.inputs.iter().enumerate() {
            let file = format!("{stem}.in{k}.bin");
            std::fs::write(dir.join(&file), &t.data).expect("write");
            ins.push(tensor_json(name, t, &file));
        }
        let mut outs = vec![];
        for (k, (spec, t)) in model.outputs().iter().zip(&outputs).enumerate() {
            let file = format!("{stem}.out{k}.bin");
            std::fs::write(dir.join(&file), &t.data).expect("write");
            outs.push(tensor_json(&spec.name, t, &file));
        }
        let desc =
            serde_json::json!({ "stem": stem, "source": rel, "inputs": ins, "outputs": outs });
        std::fs::write(dir.join(format!("{stem}.json")), desc.to_string()).expect("write");
        stems.push(stem.to_string());
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::json!({ "cases": stems }).to_string(),
    )
    .expect("write");
    stems.len()
}

fn node(args: &[&str], fixtures: &Path) {
    let status = Command::new("node")
        .args(args)
        .env("KILN_WASM_FIXTURES", fixtures)
        .env(
            "KILN_WASM_SHOT",
            std::env::temp_dir().join("kiln-wasm-demo.png"),
        )
        .current_dir(root())
        .status()
        .expect("node runs (Node >= 20 is needed)");
    assert!(status.success(), "node {args:?} failed ({status})");
}

#[test]
#[ignore = "needs runtime-wasm/pkg (cargo xtask wasm), Node and Chromium: scripts/test.sh runs it"]
fn package_matches_native_in_node_and_chromium() {
    let pkg = root().join("runtime-wasm/pkg/kiln.js");
    assert!(
        pkg.exists(),
        "{} is missing: run `cargo xtask wasm` first",
        pkg.display()
    );
    let dir = std::env::temp_dir().join(format!("kiln-wasm-fixtures-{}", std::process::id()));
    let n = write_fixtures(&dir);
    println!(
        "{n} corpus models compiled and run natively -> {}",
        dir.display()
    );
    node(&["--test", "runtime-wasm/tests/node/"], &dir);
    node(&["runtime-wasm/tests/browser.mjs"], &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
