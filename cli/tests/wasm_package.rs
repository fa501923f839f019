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

use kiln_cli::write_wasm_fixtures;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
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
    let n = write_wasm_fixtures(&root().join("../shared/corpus"), &dir).expect("fixtures");
    println!(
        "{n} corpus models compiled and run natively -> {}",
        dir.display()
    );
    node(&["--test", "runtime-wasm/tests/node/"], &dir);
    node(&["runtime-wasm/tests/browser.mjs"], &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
