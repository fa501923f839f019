//! `cargo xtask firmware --artifact A.kiln --input x.npy [--run]`: builds
//! the Cortex-M4F firmware of `demos/firmware` around one artifact and one
//! input (input 0, as raw bytes from the `.npy`), and with `--run` runs it
//! in `qemu-system-arm -machine mps2-an386` and prints one JSON line:
//! `outputs` (name → flat list of values), `flash` (Kiln's runtime code:
//! its crates' symbols and, by the debug info, what of them was inlined
//! into the demo; the model; the rest of the image), `static_ram` (the arena the plan reserves, the part of it
//! a run writes, found by painting it; the stack's high-water mark, by
//! painting the free RAM; all of .bss + .data), `instructions`
//! (guest instructions executed by one `Model::run`, counted by the QEMU
//! plugin `demos/firmware/qemu/insncount.c` between the firmware's marker
//! functions; exact and repeatable, not cycles) and the ELF.
//! `--dsp-check` builds the firmware with the DSP kernels' self-check
//! against the portable ones (`dsp_mismatches` in the JSON, 0 when
//! bit-exact; its code then counts as runtime). `--profile FILE` also writes the run's instructions per function
//! (inlined code counts toward the function it was inlined into) to FILE,
//! and the raw per-address counts to FILE.raw for `addr2line`.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "thumbv7em-none-eabihf";

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    let (mut artifact, mut input, mut run, mut profile) = (None, None, false, None);
    let mut dsp_check = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--artifact" => artifact = it.next().map(PathBuf::from),
            "--input" => input = it.next().map(PathBuf::from),
            "--run" => run = true,
            "--dsp-check" => {
                dsp_check = true;
                run = true;
            }
            "--profile" => {
                profile = it.next().map(PathBuf::from);
                run = true;
            }
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
        .args(
            dsp_check
                .then_some(["--features", "dsp-check"])
                .into_iter()
                .flatten(),
        )
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
    let raw_profile = profile.as_ref().map(|p| {
        let mut raw = p.clone().into_os_string();
        raw.push(".raw");
        PathBuf::from(raw)
    });
    let profile_arg = raw_profile
        .as_ref()
        .map(|p| format!(",profile={}", p.display()))
        .unwrap_or_default();
    let out = Command::new("qemu-system-arm")
        .args(["-machine", "mps2-an386", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-plugin")
        .arg(format!(
            "{},begin={begin:#x},end={end:#x}{profile_arg}",
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
    let parts = runtime_bytes(&elf, &syms)?;
    let runtime: u64 = parts.values().sum();
    let sum = |names: &[&str]| -> u64 { names.iter().filter_map(|p| parts.get(p)).sum() };
    let (framework, op_code) = (sum(&["format", "engine", "api"]), sum(&["ops", "kernels"]));
    v["flash"] = serde_json::json!({
        "total": flash,
        "model": model_len,
        "input": raw.len(),
        "runtime_code": runtime,
        // TFLM's published interpreter size covers what `framework` does
        // (reading the model, planning, running the graph), not its kernels.
        "runtime_code_parts": {
            "framework": framework,
            "ops_and_kernels": op_code,
            "by_part": parts,
        },
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
    if let (Some(table), Some(raw)) = (&profile, &raw_profile) {
        write_profile(&syms, raw, table)?;
    }
    println!("{v}");
    Ok(())
}

/// Sums the plugin's per-address counts (`raw`: lines `0xADDR COUNT`) by
/// the function symbol that holds each address and writes them to `table`,
/// most executed first, with each one's share.
fn write_profile(syms: &[Symbol], raw: &Path, table: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(raw).with_context(|| format!("cannot read {}", raw.display()))?;
    let mut funcs: Vec<&Symbol> = syms
        .iter()
        .filter(|s| matches!(s.kind.as_str(), "t" | "T") && s.size > 0)
        .collect();
    funcs.sort_by_key(|s| s.addr);
    let mut per: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let mut total = 0u64;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(a), Some(n)) = (f.next(), f.next()) else {
            continue;
        };
        let (Some(addr), Ok(n)) = (
            a.strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok()),
            n.parse::<u64>(),
        ) else {
            continue;
        };
        total += n;
        // Thumb symbols carry the low bit.
        let i = funcs.partition_point(|s| s.addr & !1 <= addr);
        let name = i
            .checked_sub(1)
            .map(|i| funcs[i])
            .filter(|s| addr < (s.addr & !1) + s.size)
            .map_or("(outside any function)", |s| s.name.as_str());
        *per.entry(name).or_default() += n;
    }
    let mut rows: Vec<(&str, u64)> = per.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    let mut out = format!("{total} instructions\n");
    for (name, n) in rows {
        let share = 100.0 * n as f64 / total.max(1) as f64;
        out.push_str(&format!("{n:>12} {share:5.1}%  {name}\n"));
    }
    std::fs::write(table, out).with_context(|| format!("cannot write {}", table.display()))
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

/// What part of the runtime a piece of code belongs to, by the function
/// it comes from: the artifact reader (`format`), the executor (`engine`:
/// plan, dispatch, arena, tensors), the op layer (`ops`: each op's checks
/// and parameters, `kiln_engine::ops::<family>`), the op math (`kernels`)
/// and the firmware-facing API (`api`, `kiln_runtime_embedded`).
fn runtime_part(function: &str) -> Option<&'static str> {
    const FAMILIES: [&str; 8] = [
        "conv::",
        "quant::",
        "movement::",
        "elementwise::",
        "reduce::",
        "linalg::",
        "rnn::",
        "ml::",
    ];
    // A demangled name may start with `<` (trait impls): find the path.
    let f = function.find("kiln_").map(|i| &function[i..])?;
    if f.starts_with("kiln_runtime_embedded::") {
        Some("api")
    } else if f.starts_with("kiln_format::") {
        Some("format")
    } else if f.starts_with("kiln_kernels::") {
        Some("kernels")
    } else if let Some(rest) = f.strip_prefix("kiln_engine::ops::") {
        Some(if FAMILIES.iter().any(|m| rest.starts_with(m)) {
            "ops"
        } else {
            "engine"
        })
    } else if f.starts_with("kiln_engine::") {
        Some("engine")
    } else {
        None
    }
}

/// Flash bytes of Kiln's runtime in the ELF, by part ([`runtime_part`]):
/// every halfword of code in the runtime's and the demo's functions goes
/// to the innermost inline frame (from the debug info) that belongs to the
/// runtime, so kernels inlined into the engine count as kernels and runtime
/// code inlined into the demo counts at all; constants go by their symbol.
/// The rest of the image (vector table, startup, the demo's JSON and float
/// printing, `core` and compiler intrinsics such as `memcpy`, whoever calls
/// them, string constants) is reported as `other`.
fn runtime_bytes(
    elf: &Path,
    syms: &[Symbol],
) -> Result<std::collections::BTreeMap<&'static str, u64>> {
    let mut parts = std::collections::BTreeMap::new();
    let mut query = String::new();
    for s in syms {
        let part = runtime_part(&s.name);
        match s.kind.as_str() {
            "r" | "R" => {
                if let Some(p) = part {
                    *parts.entry(p).or_default() += s.size;
                }
            }
            "t" | "T" if part.is_some() || s.name.starts_with("kiln_firmware::") => {
                let start = s.addr & !1;
                for a in (start..start + s.size).step_by(2) {
                    query.push_str(&format!("{a:#x}\n"));
                }
            }
            _ => {}
        }
    }
    let mut child = Command::new("arm-none-eabi-addr2line")
        .args(["-a", "-f", "-i", "-C", "-e"])
        .arg(elf)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running arm-none-eabi-addr2line (apt install binutils-arm-none-eabi)")?;
    let mut stdin = child.stdin.take().context("addr2line stdin")?;
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(query.as_bytes())
    });
    let out = child.wait_with_output().context("addr2line")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("addr2line writer panicked"))?
        .context("writing to addr2line")?;
    // Per address: `0xADDR`, then (function, file:line) per inline frame,
    // innermost first.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut current: Option<&'static str> = None;
    let mut seen_frame = false;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("0x") {
            if let Some(p) = current.take() {
                *parts.entry(p).or_default() += 2;
            }
            seen_frame = false;
        } else {
            if !seen_frame || current.is_none() {
                current = current.or(runtime_part(line));
            }
            seen_frame = true;
            lines.next();
        }
    }
    if let Some(p) = current {
        *parts.entry(p).or_default() += 2;
    }
    Ok(parts)
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
