//! Builds the engine half of `kiln compile --target wasm-module`
//! (`runtime-wasm/module`) for wasm32 and leaves it in OUT_DIR for
//! `include_bytes!`. Without the wasm32 target (rustup) it leaves an empty
//! file, and `--target wasm-module` explains how to get one.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out.join("kiln_wasm_module.wasm");
    // At run time, not `env!`: a shared CARGO_TARGET_DIR may reuse this
    // script's binary from another checkout of the workspace.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("..");
    for p in [
        "runtime-wasm/module",
        "engine/src",
        "kernels/src",
        "format/src",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target_std = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| {
            Path::new(String::from_utf8_lossy(&o.stdout).trim())
                .join("lib/rustlib")
                .join(TARGET)
        });
    // Installing the target later reruns this script (a missing path
    // counts as changed).
    if let Some(dir) = &target_std {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let has_std = target_std.is_some_and(|d| d.is_dir());
    if !has_std {
        println!(
            "cargo:warning=no std for {TARGET}: `kiln compile --target wasm-module` \
             is unavailable (rustup target add {TARGET}, then rebuild)"
        );
        std::fs::write(&dest, b"").expect("write OUT_DIR");
        return;
    }
    // Its own target directory: the outer build holds the lock on ours.
    // OUT_DIR is <target>/<profile>/build/<pkg>/out.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map_or_else(|| out.join("wasm-module"), |t| t.join("wasm-module"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    for v in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "RUSTC_BOOTSTRAP",
    ] {
        cmd.env_remove(v);
    }
    let status = cmd
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
            "-C target-feature=+simd128",
        )
        .args(["build", "-q", "--target", TARGET, "--profile", "wasm"])
        .args(["-p", "kiln-wasm-module"])
        .current_dir(&root)
        .status()
        .expect("run cargo for the wasm engine module");
    assert!(
        status.success(),
        "building runtime-wasm/module for {TARGET} failed"
    );
    let built = target_dir.join(TARGET).join("wasm/kiln_wasm_module.wasm");
    std::fs::copy(&built, &dest).expect("copy the engine module into OUT_DIR");
}
