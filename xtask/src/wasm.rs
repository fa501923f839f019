//! `cargo xtask wasm`: builds the npm package `kiln-runtime` into
//! `runtime-wasm/pkg/`.
//!
//! 1. `kiln-runtime-wasm` for wasm32-unknown-unknown with SIMD128, profile
//!    `wasm` (opt-level z, the kernels 2, fat LTO, one codegen unit, panics abort without
//!    a message), std rebuilt alongside (`scripts/setup-wasm.sh` installs
//!    rustup's `rust-src`, or Debian's `rustc-web` where rustup cannot);
//! 2. `wasm-bindgen --target web` (the version pinned in
//!    runtime-wasm/Cargo.toml), names and producers sections removed;
//! 3. `wasm-opt -Os` from npm `binaryen` when it is installed;
//! 4. `kiln.js`, `kiln.d.ts`, `package.json` and a README beside them;
//! 5. prints the raw, gzip and brotli sizes of the `.wasm`.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
/// Must equal the `wasm-bindgen` pin in runtime-wasm/Cargo.toml.
const BINDGEN_VERSION: &str = "0.2.130";

/// Where `scripts/setup-wasm.sh` installs the npm tools.
pub fn npm_dir() -> PathBuf {
    std::env::var_os("KILN_NPM").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
            Path::new(&home).join(".cache/kiln/npm")
        },
        PathBuf::from,
    )
}

/// The Cargo target directory of the workspace (honours CARGO_TARGET_DIR).
pub fn target_dir(root: &Path) -> Result<PathBuf> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let dir = v["target_directory"]
        .as_str()
        .context("cargo metadata gave no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// Whether rustup has `target` installed.
pub fn rustup_has(target: &str) -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == target)
        })
}

fn rustup_has_rust_src() -> bool {
    Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .is_ok_and(|o| {
            let root = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&root)
                .join("lib/rustlib/src/rust/library/Cargo.lock")
                .exists()
        })
}

/// `cargo build` for wasm32 of `package` in `profile`; returns the built
/// `.wasm`.
///
/// std is rebuilt with the crate (`-Zbuild-std`, through `RUSTC_BOOTSTRAP`)
/// so that SIMD128 reaches it and a panic is a bare trap
/// (`-Cpanic=immediate-abort`): no panic-message formatting in the module,
/// 16% of its size. The std source comes from rustup's `rust-src` or from
/// Debian's `rust-web-src` (with its `rustc-web`). The build has its own
/// target directory, `wasm-std/` in the workspace's, because these flags
/// would otherwise fight with host builds over shared dependencies.
pub fn cargo_build_wasm(root: &Path, package: &str, profile: &str) -> Result<PathBuf> {
    let mut cmd;
    if rustup_has(TARGET) && rustup_has_rust_src() {
        cmd = Command::new("cargo");
        cmd.env_remove("RUSTC").env_remove("RUSTDOC");
    } else if Path::new("/usr/lib/rustlib/src/rust/library/Cargo.lock").exists() {
        // Debian's rustc-web and its std source (scripts/setup-wasm.sh).
        cmd = Command::new("/usr/bin/cargo");
        cmd.env("RUSTC", "/usr/bin/rustc")
            .env("RUSTDOC", "/usr/bin/rustdoc");
    } else {
        bail!("no std source for {TARGET}: run `bash scripts/setup-wasm.sh` first");
    }
    let target_dir = target_dir(root)?.join("wasm-std");
    let status = cmd
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        // `cargo xtask` runs inside cargo: host flags must not leak in.
        .env_remove("RUSTFLAGS")
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
            "-C target-feature=+simd128 -Zunstable-options -Cpanic=immediate-abort",
        )
        .args(["build", "-Zbuild-std=std,panic_abort", "--target", TARGET])
        .args(["--profile", profile, "-p", package])
        .current_dir(root)
        .status()
        .context("running cargo build for wasm32")?;
    if !status.success() {
        bail!("cargo build --target {TARGET} -p {package} failed");
    }
    let file = package.replace('-', "_") + ".wasm";
    Ok(target_dir.join(TARGET).join(profile).join(file))
}

fn tool_version(tool: &Path) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn wasm_bindgen() -> Result<PathBuf> {
    let tool = PathBuf::from("wasm-bindgen");
    match tool_version(&tool) {
        Some(v) if v.ends_with(BINDGEN_VERSION) => Ok(tool),
        Some(v) => bail!(
            "{v} does not match the crate's wasm-bindgen {BINDGEN_VERSION}: \
             run `cargo install wasm-bindgen-cli --version ={BINDGEN_VERSION}` \
             (or `bash scripts/setup-wasm.sh`)"
        ),
        None => bail!(
            "wasm-bindgen not found: run `cargo install wasm-bindgen-cli --version \
             ={BINDGEN_VERSION}` (or `bash scripts/setup-wasm.sh`)"
        ),
    }
}

/// npm binaryen's `wasm-opt` (Debian's binaryen 108 cannot read
/// wasm-bindgen's reference-types output).
fn wasm_opt() -> Option<PathBuf> {
    let local = npm_dir().join("node_modules/.bin/wasm-opt");
    if local.exists() {
        return Some(local);
    }
    tool_version(Path::new("wasm-opt"))
        .filter(|v| {
            v.split_whitespace()
                .nth(2)
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 116)
        })
        .map(|_| PathBuf::from("wasm-opt"))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// gzip -9 and brotli (quality 11) sizes of `file`, computed by Node's zlib.
fn compressed_sizes(file: &Path) -> Result<(usize, usize)> {
    let out = Command::new("node")
        .args([
            "-e",
            "const z=require('zlib'),b=require('fs').readFileSync(process.argv[1]);\
             console.log(z.gzipSync(b,{level:9}).length,\
             z.brotliCompressSync(b,{params:{[z.constants.BROTLI_PARAM_QUALITY]:11}}).length)",
        ])
        .arg(file)
        .output()
        .context("running node for the compressed sizes")?;
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace().map(str::parse::<usize>);
    match (it.next(), it.next()) {
        (Some(Ok(g)), Some(Ok(b))) => Ok((g, b)),
        _ => bail!("node printed {s:?}"),
    }
}

pub fn main(root: &Path) -> Result<()> {
    let crate_dir = root.join("runtime-wasm");
    let pkg = crate_dir.join("pkg");
    let bindgen = wasm_bindgen()?;
    let built = cargo_build_wasm(root, "kiln-runtime-wasm", "wasm")?;
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg).with_context(|| format!("clearing {}", pkg.display()))?;
    }
    run(
        Command::new(&bindgen)
            .args([
                "--target",
                "web",
                "--remove-name-section",
                "--remove-producers-section",
                "--out-name",
                "kiln_runtime_wasm",
                "--out-dir",
            ])
            .arg(&pkg)
            .arg(&built),
        "wasm-bindgen",
    )?;
    let wasm = pkg.join("kiln_runtime_wasm_bg.wasm");
    let bindgen_size = std::fs::metadata(&wasm)?.len();
    match wasm_opt() {
        Some(opt) => run(
            // -Os: 0.7 KB smaller than -Oz on this module.
            Command::new(opt).arg("-Os").arg(&wasm).arg("-o").arg(&wasm),
            "wasm-opt",
        )?,
        None => eprintln!(
            "warning: wasm-opt (npm binaryen >= 116) not found; the .wasm is not \
             size-optimised (bash scripts/setup-wasm.sh installs it)"
        ),
    }
    for f in ["kiln.js", "kiln.d.ts"] {
        std::fs::copy(crate_dir.join("js").join(f), pkg.join(f))
            .with_context(|| format!("copying js/{f}"))?;
    }
    std::fs::write(pkg.join("package.json"), package_json())?;
    std::fs::copy(crate_dir.join("README.md"), pkg.join("README.md"))?;
    // wasm-bindgen's own .gitignore would hide the package from `npm pack`.
    let _ = std::fs::remove_file(pkg.join(".gitignore"));

    let raw = std::fs::metadata(&wasm)?.len();
    let (gz, br) = compressed_sizes(&wasm)?;
    println!(
        "kiln-runtime {} -> {}",
        env!("CARGO_PKG_VERSION"),
        pkg.display()
    );
    println!(
        "  kiln_runtime_wasm_bg.wasm  {raw:>9} bytes raw (wasm-bindgen output {bindgen_size})"
    );
    println!("                             {gz:>9} bytes gzip -9");
    println!("                             {br:>9} bytes brotli 11");
    Ok(())
}

fn package_json() -> String {
    format!(
        r#"{{
  "name": "kiln-runtime",
  "version": "{v}",
  "description": "Run Kiln model artifacts in browsers and Node: one small WebAssembly engine, SIMD128, inputs validated",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "kiln.js",
  "module": "kiln.js",
  "types": "kiln.d.ts",
  "exports": {{
    ".": {{ "types": "./kiln.d.ts", "default": "./kiln.js" }},
    "./kiln_runtime_wasm_bg.wasm": "./kiln_runtime_wasm_bg.wasm"
  }},
  "files": [
    "kiln.js",
    "kiln.d.ts",
    "kiln_runtime_wasm.js",
    "kiln_runtime_wasm.d.ts",
    "kiln_runtime_wasm_bg.wasm",
    "kiln_runtime_wasm_bg.wasm.d.ts"
  ],
  "sideEffects": false,
  "engines": {{ "node": ">=20" }}
}}
"#,
        v = env!("CARGO_PKG_VERSION")
    )
}
