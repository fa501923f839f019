//! `cargo xtask firmware --artifact A.kiln --input x.npy [--run]`: builds
//! the Cortex-M4F firmware of `demos/firmware` around one artifact and one
//! input (input 0, as raw bytes from the `.npy`), and with `--run` runs it
//! in `qemu-system-arm -machine mps2-an386` and prints one JSON line:
//! `outputs` (name → flat list of values), `flash` (Kiln's runtime code,
//! by the symbols of its crates; the model; the rest of the image), `static_ram` (the arena the plan reserves, the part of it
//! a run writes, found by painting it; the stack's high-water mark, by
//! painting the free RAM; all of .bss + .data), `instructions`
//! (guest instructions executed by one `Model::run`, counted by the QEMU
//! plugin `demos/firmware/qemu/insncount.c` between the firmware's marker
//! functions; exact and repeatable, not cycles) and the ELF.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "thumbv7em-none-eabihf";

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    let (mut artifact, mut input, mut run) = (None, None, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--artifact" => artifact = it.next().map(PathBuf::from),
            "--input" => input = it.next().map(PathBuf::from),
            "--run" => run = true,
            other => bail!("unknown argument {other:?}\n{}", crate::USAGE),
        }
    }
    let (Some(artifact), Some(input)) = (artifact, input) else {
        bail!("--artifact and --input are required\n{}", crate::USAGE);
    };
    let artifact = std::fs::canonicalize(&artifact)
        .with_context(|| format!("cannot read {}", artifact.display()))?;
    let model_len = std::fs::metadata(&artifact)?.len();
    let raw = npy_data(&input)?;
    let target_dir = crate::wasm::target_dir(root)?.join("firmware");
    std::fs::create_dir_all(&target_dir)?;
    let input_bin = target_dir.join("input.bin");
    std::fs::write(&input_bin, &raw)?;

    if !crate::wasm::rustup_has(TARGET) {
        let ok = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("the {TARGET} target is missing: run `rustup target add {TARGET}`");
        }
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-q"])
        .current_dir(root.join("demos/firmware"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("KILN_FW_ARTIFACT", &artifact)
        .env("KILN_FW_INPUT", &input_bin)
        .env_remove("RUSTFLAGS")
        .status()
        .context("running cargo for demos/firmware")?;
    if !status.success() {
        bail!("building the firmware failed ({status})");
    }
    let elf = target_dir.join(TARGET).join("release/kiln-firmware");
    let (text, data, bss) = section_sizes(&elf)?;
    if !run {
        println!("{}", elf.display());
        return Ok(());
    }
    let plugin = insncount_plugin(root, &target_dir)?;
    let syms = symbols(&elf)?;
    let (begin, end) = (symbol(&syms, "bench_begin")?, symbol(&syms, "bench_end")?);
    let out = Command::new("qemu-system-arm")
        .args(["-machine", "mps2-an386", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-plugin")
        .arg(format!(
            "{},begin={begin:#x},end={end:#x}",
            plugin.display()
        ))
        .arg("-kernel")
        .arg(&elf)
        .output()
        .context("running qemu-system-arm (apt install qemu-system-arm)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("the firmware printed no JSON line: {stdout}"))?;
    let mut v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("firmware output {line:?}"))?;
    if let Some(e) = v.get("error") {
        bail!("the firmware failed: {e}");
    }
    if !out.status.success() {
        bail!("qemu exited with {}", out.status);
    }
    let flash = text + data;
    let runtime = kiln_symbol_bytes(&syms);
    v["flash"] = serde_json::json!({
        "total": flash,
        "model": model_len,
        "input": raw.len(),
        "runtime_code": runtime,
        "other": flash.saturating_sub(model_len + raw.len() as u64 + runtime),
    });
    v["static_ram"] = serde_json::json!({
        "arena": v["arena"].clone(),
        "arena_touched": v["arena_touched"].clone(),
        "stack": v["stack"].clone(),
        "bss_data": bss + data,
    });
    if let Some(o) = v.as_object_mut() {
        for k in ["arena", "arena_touched", "stack"] {
            o.remove(k);
        }
    }
    v["instructions"] = serde_json::json!(instructions(&String::from_utf8_lossy(&out.stderr))?);
    v["elf"] = serde_json::json!(elf.display().to_string());
    println!("{v}");
    Ok(())
}

/// Builds `demos/firmware/qemu/insncount.c` (a QEMU TCG plugin) with the C
/// compiler into `dir`.
fn insncount_plugin(root: &Path, dir: &Path) -> Result<PathBuf> {
    let src = root.join("demos/firmware/qemu/insncount.c");
    let lib = dir.join("libinsncount.so");
    let fresh = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if fresh(&lib).is_some() && fresh(&lib) >= fresh(&src) {
        return Ok(lib);
    }
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .context("running the C compiler for the QEMU plugin (apt install gcc)")?;
    if !status.success() {
        bail!("building {} failed ({status})", src.display());
    }
    Ok(lib)
}

/// One symbol of `nm -S -C`: address, size (0 when nm gives none), type
/// letter and demangled name.
struct Symbol {
    addr: u64,
    size: u64,
    kind: String,
    name: String,
}

/// The ELF's symbol table.
fn symbols(elf: &Path) -> Result<Vec<Symbol>> {
    let text = arm_tool(
        ["arm-none-eabi-nm", "llvm-nm-22", "llvm-nm"],
        &["-S", "-C"],
        elf,
    )
    .context("no nm: apt install binutils-arm-none-eabi")?;
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let mut out = vec![];
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(4, ' ').collect();
        // `addr size type name`, or `addr type name` for unsized symbols.
        let (addr, size, kind, name) = match f[..] {
            [a, s, k, n] if k.len() == 1 => (hex(a), hex(s), k, n),
            [a, k, n, ..] if k.len() == 1 => (hex(a), Some(0), k, n),
            _ => continue,
        };
        if let (Some(addr), Some(size)) = (addr, size) {
            let (kind, name) = (kind.to_string(), name.to_string());
            out.push(Symbol {
                addr,
                size,
                kind,
                name,
            });
        }
    }
    Ok(out)
}

/// Flash bytes of Kiln's own code and constants in the ELF (symbols of the
/// `kiln_runtime_embedded`, `kiln_engine`, `kiln_kernels` and
/// `kiln_format` crates, kernels inlined into them included). The rest of
/// the image (vector table, startup, the demo's JSON and float printing,
/// compiler intrinsics) is reported as `other`.
fn kiln_symbol_bytes(syms: &[Symbol]) -> u64 {
    const CRATES: [&str; 4] = [
        "kiln_runtime_embedded::",
        "kiln_engine::",
        "kiln_kernels::",
        "kiln_format::",
    ];
    syms.iter()
        .filter(|s| matches!(s.kind.as_str(), "t" | "T" | "r" | "R"))
        .filter(|s| CRATES.iter().any(|c| s.name.contains(c)))
        .map(|s| s.size)
        .sum()
}

/// Address of `name` in the symbol table.
fn symbol(syms: &[Symbol], name: &str) -> Result<u64> {
    syms.iter()
        .find(|s| s.name == name)
        .map(|s| s.addr)
        .with_context(|| format!("no symbol {name} in the firmware"))
}

/// Instructions of the measured window from the plugin's line
/// (`insncount: windows=2 w0=EMPTY w1=RUN`): the run's window minus the
/// empty one (the markers' own cost).
fn instructions(stderr: &str) -> Result<u64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("insncount:"))
        .with_context(|| format!("the QEMU plugin printed no count: {stderr}"))?;
    let window = |k: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
    };
    match (window("w0="), window("w1=")) {
        (Some(empty), Some(run)) => Ok(run.saturating_sub(empty)),
        _ => bail!("unexpected plugin output {line:?}"),
    }
}

/// Little-endian data bytes of a C-order `.npy` (versions 1–3).
fn npy_data(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{} is not a .npy file", path.display());
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => bail!("{}: unsupported .npy version {v}", path.display()),
    };
    let header = bytes
        .get(start..start + len)
        .with_context(|| format!("{}: truncated header", path.display()))?;
    let header = String::from_utf8_lossy(header);
    if header.contains("'fortran_order': True") {
        bail!("{}: Fortran-order arrays are not supported", path.display());
    }
    if header.contains("'>") {
        bail!("{}: big-endian arrays are not supported", path.display());
    }
    Ok(bytes[start + len..].to_vec())
}

/// `.text`, `.data` and `.bss` bytes, by `arm-none-eabi-size` (or LLVM's).
fn section_sizes(elf: &Path) -> Result<(u64, u64, u64)> {
    let text = arm_tool(
        ["arm-none-eabi-size", "llvm-size-22", "llvm-size"],
        &[],
        elf,
    )
    .context("no size tool: apt install binutils-arm-none-eabi")?;
    let nums: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect();
    match nums[..] {
        [t, d, b] => Ok((t, d, b)),
        _ => bail!("unexpected size output: {text}"),
    }
}

/// Standard output of the first of `tools` that runs `tool args elf`
/// successfully (binutils' Arm build, else LLVM's).
fn arm_tool(tools: [&str; 3], args: &[&str], elf: &Path) -> Option<String> {
    tools.iter().find_map(|tool| {
        let out = Command::new(tool).args(args).arg(elf).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
}
