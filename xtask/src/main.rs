//! Developer tasks for the Kiln workspace.
//!
//! - `cargo xtask wasm`: builds the npm package `kiln-runtime` into
//!   `runtime-wasm/pkg/` and prints its sizes (`wasm.rs`).
//! - `cargo xtask bench [--quick] [--wasm-only | --telemetry-only | --ingest-only] [--out FILE] [FILTER]`:
//!   builds the package, then runs the benchmark crate (`bench/`, release),
//!   which regenerates BENCHMARKS.md.
//! - `cargo xtask firmware --artifact A.kiln --input x.npy [--run]`: builds
//!   the Cortex-M4F firmware (`demos/firmware`) and runs it in QEMU
//!   (`firmware.rs`).

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

mod firmware;
mod wasm;

const USAGE: &str = "usage: cargo xtask wasm
       cargo xtask bench [--quick] [--wasm-only | --telemetry-only | --ingest-only] [--out BENCHMARKS.md] [MODEL_FILTER]
       cargo xtask firmware --artifact A.kiln --input x.npy [--run] [--dsp-check] [--profile FILE]";

/// The workspace root, from the `CARGO_MANIFEST_DIR` that `cargo run` sets
/// at run time: the compile-time path goes stale when a shared
/// `CARGO_TARGET_DIR` reuses a binary built from another checkout.
fn workspace_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    dir.parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("wasm") if args.len() == 1 => wasm::main(&root),
        Some("firmware") => firmware::main(&root, &args[1..]),
        Some("bench") => {
            // The WebAssembly section needs the package, the ingest
            // section the `kiln` binary beside the benchmark's.
            wasm::main(&root)?;
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "-q", "-p", "kiln-cli"])
                .current_dir(&root)
                .status()
                .context("building kiln")?;
            if !status.success() {
                bail!("building kiln failed ({status})");
            }
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["run", "--release", "-q", "-p", "kiln-bench", "--"])
                .args(&args)
                .current_dir(&root)
                .status()
                .context("running the benchmark crate")?;
            if !status.success() {
                bail!("the benchmark failed ({status})");
            }
            Ok(())
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
