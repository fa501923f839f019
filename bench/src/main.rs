//! Kiln's benchmark (run it as `cargo xtask bench`, which builds this crate
//! in release).
//!
//! `cargo xtask bench [--quick] [--out BENCHMARKS.md] [MODEL_FILTER]`
//! measures single-thread latency on every corpus ONNX model that has a
//! golden input (or those whose golden stem contains `MODEL_FILTER`), for
//! three runtimes fed the golden input (batch 1 unless the golden says
//! otherwise):
//!
//! - Kiln: `compile_onnx` → `Model::load` → one `Session`, timing the
//!   allocation-free `Session::run_into`;
//! - tract: `model_for_path` with concrete input facts → `into_optimized` →
//!   `into_runnable`, timing `run` on one spawned state;
//! - onnxruntime, through `scripts/ort_bench.py` (run by `$KILN_PYTHON`,
//!   default `~/.cache/kiln/venv/bin/python`); its times include Python's
//!   per-call overhead.
//!
//! The `.tflite` models with goldens get a second table against LiteRT
//! (`scripts/litert_bench.py`, XNNPACK delegate and builtin kernels).
//!
//! Kiln's outputs are checked against the golden outputs first, so a broken
//! build cannot look fast. The report (table, per-runtime spread, summary) is
//! printed and written whole to the `--out` file (default: BENCHMARKS.md at
//! the workspace root).

use anyhow::{Context, Result, bail};
use kiln_cli::read_npz;
use kiln_compiler::{Options, compile_model};
use kiln_runtime_native::{DType, Model, TensorValue};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

use kiln_cli::{CORPUS_GOLDEN as MODELS, CORPUS_TFLITE_GOLDEN};

mod ingest;
mod telemetry;
mod wasm;

/// Instruction-set edit applied to tract (see `main`).
const TRACT_ISA: &str = "-amx-int8";

const USAGE: &str = "usage: cargo xtask bench [--quick] [--wasm-only | --telemetry-only | --ingest-only] [--out BENCHMARKS.md] [MODEL_FILTER]";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut quick = false;
    let mut wasm_only = false;
    let mut telemetry_only = false;
    let mut ingest_only = false;
    let mut out = None;
    let mut filter = String::new();
    let mut it = args.iter().map(String::as_str);
    match it.next() {
        Some("bench") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => bail!("{USAGE}"),
    }
    while let Some(a) = it.next() {
        match a {
            "--quick" => quick = true,
            // Only the WebAssembly section, printed (BENCHMARKS.md is left
            // alone: it is regenerated whole).
            "--wasm-only" => wasm_only = true,
            // Only the telemetry section, printed.
            "--telemetry-only" => telemetry_only = true,
            // Only the collector's ingest section, printed.
            "--ingest-only" => ingest_only = true,
            "--out" => out = Some(PathBuf::from(it.next().context(USAGE)?)),
            _ if !a.starts_with('-') && filter.is_empty() => filter = a.to_string(),
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    let out = out.unwrap_or_else(|| workspace_root().join("BENCHMARKS.md"));
    let command = format!("cargo xtask {}", args.join(" "));
    if cfg!(target_arch = "x86_64") {
        // tract 0.23.9's AMX int8 matmul segfaulted on tract_qlstm (Xeon
        // with amx_int8); $TRACT_CPU_ISA, when set, still wins.
        tract_onnx::tract_core::knobs::set_config_global("TRACT_CPU_ISA", TRACT_ISA)?;
    }
    if ingest_only {
        print!(
            "{}",
            ingest::section(
                &workspace_root(),
                &workspace_root().join("../shared/corpus")
            )?
        );
        return Ok(());
    }
    if telemetry_only {
        print!(
            "{}",
            telemetry::section(&workspace_root().join("../shared/corpus"))?
        );
        return Ok(());
    }
    if wasm_only {
        let corpus = workspace_root().join("../shared/corpus");
        print!(
            "{}",
            wasm::section(&workspace_root(), &corpus, &filter, &HashMap::new())?
        );
        return Ok(());
    }
    let budget = if quick { &QUICK } else { &FULL };
    bench(budget, &filter, &out, &command)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// How long to time one runtime on one model.
#[derive(Debug)]
struct Budget {
    min_iters: usize,
    min_time: Duration,
    max_time: Duration,
}

const FULL: Budget = Budget {
    min_iters: 200,
    min_time: Duration::from_secs(1),
    max_time: Duration::from_secs(5),
};
const QUICK: Budget = Budget {
    min_iters: 50,
    min_time: Duration::from_millis(200),
    max_time: Duration::from_secs(5),
};

/// Latency statistics in microseconds.
#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    p10: f64,
    p90: f64,
    iters: usize,
}

/// Warms `f` up, then times it call by call within `b`.
fn measure(b: &Budget, mut f: impl FnMut() -> Result<()>) -> Result<Stats> {
    let warm = Instant::now();
    let mut k = 0;
    while k < 10 || warm.elapsed() < b.min_time / 10 {
        f()?;
        k += 1;
    }
    let mut us = Vec::with_capacity(b.min_iters * 4);
    let start = Instant::now();
    loop {
        let t0 = Instant::now();
        f()?;
        us.push(t0.elapsed().as_secs_f64() * 1e6);
        let el = start.elapsed();
        if (us.len() >= b.min_iters && el >= b.min_time) || el >= b.max_time {
            break;
        }
    }
    us.sort_by(f64::total_cmp);
    let pct = |p: f64| us[((us.len() - 1) as f64 * p).round() as usize];
    Ok(Stats {
        median: pct(0.5),
        p10: pct(0.1),
        p90: pct(0.9),
        iters: us.len(),
    })
}

/// A golden case: `in:<name>` and `out:<name>` arrays.
#[derive(Debug)]
struct Golden {
    inputs: Vec<(String, TensorValue)>,
    outputs: Vec<(String, TensorValue)>,
}

impl Golden {
    fn load(path: &Path) -> Result<Golden> {
        let mut g = Golden {
            inputs: vec![],
            outputs: vec![],
        };
        for (k, v) in read_npz(path)? {
            if let Some(n) = k.strip_prefix("in:") {
                g.inputs.push((n.to_string(), v));
            } else if let Some(n) = k.strip_prefix("out:") {
                g.outputs.push((n.to_string(), v));
            }
        }
        Ok(g)
    }

    fn input(&self, name: &str) -> Result<&TensorValue> {
        let found = self.inputs.iter().find(|(n, _)| n == name);
        found
            .map(|(_, t)| t)
            .context(format!("golden lacks input {name}"))
    }

    fn shapes(&self) -> String {
        let s: Vec<String> = self
            .inputs
            .iter()
            .map(|(_, t)| format!("{:?}{:?}", t.dtype, t.shape).to_lowercase())
            .collect();
        s.join(" ")
    }
}

/// Kiln: compile, load, check against the golden outputs, time `run_into`.
/// Returns the stats and whether/how well the outputs matched.
fn bench_kiln(path: &Path, g: &Golden, b: &Budget) -> Result<(Stats, Result<String, String>)> {
    let bytes = std::fs::read(path)?;
    let name = path.display().to_string();
    // A symbolic batch (the usual deployment) when the golden input has batch
    // 1, else the golden's shapes (e.g. a leading time axis); those shapes too
    // when the plain compile fails (symbolic dims other than the batch).
    let shapes: HashMap<String, Vec<usize>> = g
        .inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone()))
        .collect();
    let batch1 = g.inputs.iter().all(|(_, t)| t.shape.first() == Some(&1));
    let mut opts = Options::default();
    if !batch1 {
        opts.import.input_shapes = shapes.clone();
    }
    let compiled = match compile_model(&bytes, &name, &opts) {
        Err(_) if batch1 => {
            opts.import.input_shapes = shapes;
            compile_model(&bytes, &name, &opts)
        }
        r => r,
    }
    .context("compile")?;
    let model = Model::load(&compiled.bytes).context("load")?;
    let inputs: Vec<&TensorValue> = model
        .inputs()
        .iter()
        .map(|s| g.input(&s.name))
        .collect::<Result<_>>()?;
    let mut session = model.session();
    let batch = session.check_inputs(&inputs)?;
    let mut outs = session.run(&inputs)?;
    let check = check_outputs(&model, &outs, g);
    let ins: Vec<&[u8]> = inputs.iter().map(|t| t.data.as_slice()).collect();
    let mut bufs: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.data.as_mut_slice()).collect();
    let stats = measure(b, || Ok(session.run_into(batch, &ins, &mut bufs)?))?;
    Ok((stats, check))
}

/// Loose golden check: floats within 1e-3 (relative to the output's scale),
/// integers exact. Ok carries the worst absolute difference.
fn check_outputs(model: &Model, got: &[TensorValue], g: &Golden) -> Result<String, String> {
    let mut worst = 0f64;
    let mut n = 0;
    for (spec, t) in model.outputs().iter().zip(got) {
        let Some((_, want)) = g.outputs.iter().find(|(n, _)| *n == spec.name) else {
            continue;
        };
        if t.shape != want.shape {
            return Err(format!(
                "{}: shape {:?} ≠ {:?}",
                spec.name, t.shape, want.shape
            ));
        }
        let (a, w) = (t.to_f64(), want.to_f64());
        let scale = w.iter().fold(1f64, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(&w) {
            let d = (x - y).abs();
            let tol = if want.dtype.is_float() {
                1e-3 * (scale + y.abs())
            } else {
                0.0
            };
            if d > tol || d.is_nan() {
                return Err(format!("{}: diff {d:.2e} (got {x}, want {y})", spec.name));
            }
            worst = worst.max(d);
        }
        n += 1;
    }
    if n == 0 {
        return Err("no golden output matches a model output".into());
    }
    Ok(format!("ok, max abs diff {worst:.1e}"))
}

/// tract: concrete input facts from the golden, optimised, timed on one state.
fn bench_tract(path: &Path, g: &Golden, b: &Budget) -> Result<Stats> {
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    let names: Vec<String> = model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let mut inputs = TVec::new();
    for (i, name) in names.iter().enumerate() {
        let t = to_tract(g.input(name)?)?;
        model = model.with_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))?;
        inputs.push(t.into_tvalue());
    }
    let plan = model.into_optimized()?.into_runnable()?;
    let mut state = plan.spawn()?;
    measure(b, || {
        state.run(inputs.clone())?;
        Ok(())
    })
}

fn to_tract(t: &TensorValue) -> Result<Tensor> {
    fn typed<T: Datum + Copy, const N: usize>(
        t: &TensorValue,
        f: fn([u8; N]) -> T,
    ) -> Result<Tensor> {
        let v: Vec<T> = t
            .data
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks of N")))
            .collect();
        Tensor::from_shape(&t.shape, &v)
    }
    match t.dtype {
        DType::F32 => typed(t, f32::from_le_bytes),
        DType::F64 => typed(t, f64::from_le_bytes),
        DType::I64 => typed(t, i64::from_le_bytes),
        DType::I32 => typed(t, i32::from_le_bytes),
        DType::I16 => typed(t, i16::from_le_bytes),
        DType::I8 => typed(t, i8::from_le_bytes),
        DType::U64 => typed(t, u64::from_le_bytes),
        DType::U32 => typed(t, u32::from_le_bytes),
        DType::U16 => typed(t, u16::from_le_bytes),
        DType::U8 => typed(t, u8::from_le_bytes),
        DType::Bool => typed(t, |b: [u8; 1]| b[0] != 0),
        DType::F16 => bail!("f16 golden inputs are not supported here"),
    }
}

/// The venv interpreter with the peer runtimes (`$KILN_PYTHON`, default
/// `~/.cache/kiln/venv/bin/python`).
fn peer_python() -> PathBuf {
    std::env::var_os("KILN_PYTHON").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/kiln/venv/bin/python")
        },
        PathBuf::from,
    )
}

/// Runs a peer benchmark script (`scripts/<script>`) on one model, one
/// call per model so that every runtime sees about the same machine load,
/// and returns the JSON it wrote. Its exit status only says whether the
/// model failed; the JSON says why.
fn run_peer(script: &str, model: &Path, golden: &Path) -> Result<serde_json::Value> {
    let python = peer_python();
    let stem = script.trim_end_matches(".py");
    let json = std::env::temp_dir().join(format!("kiln-{stem}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&json);
    Command::new(&python)
        .arg(workspace_root().join("scripts").join(script))
        .arg("--json")
        .arg(&json)
        .arg(format!("{}={}", model.display(), golden.display()))
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let doc = serde_json::from_slice(
        &std::fs::read(&json).context(format!("{script} wrote no result"))?,
    )?;
    let _ = std::fs::remove_file(&json);
    Ok(doc)
}

/// The stats of one timing entry of a peer script (`median_us`, `p10_us`,
/// `p90_us`, `iters`), or its `error`.
fn peer_stats(v: &serde_json::Value, script: &str) -> Result<Stats, String> {
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_string());
    }
    let f = |k: &str| v[k].as_f64().ok_or(format!("{script}: no {k}"));
    Ok(Stats {
        median: f("median_us")?,
        p10: f("p10_us")?,
        p90: f("p90_us")?,
        iters: v["iters"].as_u64().unwrap_or(0) as usize,
    })
}

/// onnxruntime through `scripts/ort_bench.py`: the ORT version and the stats.
fn bench_ort(model: &Path, golden: &Path) -> Result<(String, Stats)> {
    let doc = run_peer("ort_bench.py", model, golden)?;
    let stats = peer_stats(&doc["models"][0], "ort_bench.py").map_err(anyhow::Error::msg)?;
    Ok((doc["onnxruntime"].as_str().unwrap_or("?").into(), stats))
}

/// LiteRT through `scripts/litert_bench.py`: its version and the stats with
/// the XNNPACK delegate and with the builtin kernels.
type LiteRt = (String, Result<Stats, String>, Result<Stats, String>);

fn bench_litert(model: &Path, golden: &Path) -> Result<LiteRt> {
    let doc = run_peer("litert_bench.py", model, golden)?;
    let r = &doc["models"][0];
    Ok((
        doc["litert"].as_str().unwrap_or("?").into(),
        peer_stats(&r["xnnpack"], "litert_bench.py"),
        peer_stats(&r["builtin"], "litert_bench.py"),
    ))
}

/// Results for one TFLite model.
#[derive(Debug)]
struct TfRow {
    stem: &'static str,
    kiln: Result<Stats, String>,
    check: Result<String, String>,
    xnnpack: Result<Stats, String>,
    builtin: Result<Stats, String>,
}

/// Results for one model.
#[derive(Debug)]
struct Row {
    stem: &'static str,
    shapes: String,
    kiln: Result<Stats, String>,
    check: Result<String, String>,
    ort: Result<Stats, String>,
    tract: Result<Stats, String>,
}

/// Benchmarks the models whose golden stem contains `filter`.
fn bench(b: &Budget, filter: &str, out: &Path, command: &str) -> Result<()> {
    let corpus = workspace_root().join("../shared/corpus");
    if !corpus.is_dir() {
        bail!("the shared corpus is expected at {}", corpus.display());
    }
    let mut rows = vec![];
    let mut ort_version = "unavailable".to_string();
    for &(stem, rel) in MODELS.iter().filter(|(s, _)| s.contains(filter)) {
        let (path, golden) = (corpus.join(rel), corpus.join(format!("golden/{stem}.npz")));
        let g = Golden::load(&golden)?;
        eprintln!("{stem}: kiln…");
        let (kiln, check) = match bench_kiln(&path, &g, b) {
            Ok((s, c)) => (Ok(s), c),
            Err(e) => (Err(format!("{e:#}")), Err(String::new())),
        };
        eprintln!("{stem}: tract…");
        let tract = bench_tract(&path, &g, b).map_err(|e| format!("{e:#}"));
        eprintln!("{stem}: onnxruntime…");
        let ort = bench_ort(&path, &golden).map(|(v, s)| {
            ort_version = v;
            s
        });
        rows.push(Row {
            stem,
            shapes: g.shapes(),
            kiln,
            check,
            ort: ort.map_err(|e| format!("{e:#}")),
            tract,
        });
    }
    let mut tf_rows = vec![];
    let mut litert_version = "unavailable".to_string();
    for &(stem, rel) in CORPUS_TFLITE_GOLDEN
        .iter()
        .filter(|(s, _)| s.contains(filter))
    {
        let (path, golden) = (corpus.join(rel), corpus.join(format!("golden/{stem}.npz")));
        let g = Golden::load(&golden)?;
        eprintln!("{stem}: kiln…");
        let (kiln, check) = match bench_kiln(&path, &g, b) {
            Ok((s, c)) => (Ok(s), c),
            Err(e) => (Err(format!("{e:#}")), Err(String::new())),
        };
        eprintln!("{stem}: litert…");
        let (xnnpack, builtin) = match bench_litert(&path, &golden) {
            Ok((v, x, bi)) => {
                litert_version = v;
                (x, bi)
            }
            Err(e) => (Err(format!("{e:#}")), Err(format!("{e:#}"))),
        };
        tf_rows.push(TfRow {
            stem,
            kiln,
            check,
            xnnpack,
            builtin,
        });
    }
    let mut report = render(&rows, b, command, &ort_version);
    if !tf_rows.is_empty() {
        report.push_str(&render_tflite(&tf_rows, &litert_version));
    }
    let native: HashMap<String, f64> = rows
        .iter()
        .filter_map(|r| r.kiln.as_ref().ok().map(|s| (r.stem.to_string(), s.median)))
        .chain(
            tf_rows
                .iter()
                .filter_map(|r| r.kiln.as_ref().ok().map(|s| (r.stem.to_string(), s.median))),
        )
        .collect();
    if filter.is_empty() {
        eprintln!("telemetry…");
        match telemetry::section(&corpus) {
            Ok(section) => report.push_str(&section),
            Err(e) => report.push_str(&format!(
                "\n## Telemetry overhead\n\nThe telemetry benchmark failed: {}\n",
                short(&format!("{e:#}"))
            )),
        }
        eprintln!("telemetry ingest…");
        match ingest::section(&workspace_root(), &corpus) {
            Ok(section) => report.push_str(&section),
            Err(e) => report.push_str(&format!(
                "\n## Telemetry ingest\n\nThe ingest benchmark failed: {}\n",
                short(&format!("{e:#}"))
            )),
        }
    }
    eprintln!("WebAssembly…");
    let wasm = wasm::section(&workspace_root(), &corpus, filter, &native);
    match &wasm {
        Ok(section) => report.push_str(section),
        Err(e) => report.push_str(&format!(
            "\n## WebAssembly\n\nThe WebAssembly benchmark failed: {}\n",
            short(&format!("{e:#}"))
        )),
    }
    print!("{report}");
    std::fs::write(out, &report).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.check.is_err())
        .map(|r| r.stem)
        .chain(tf_rows.iter().filter(|r| r.check.is_err()).map(|r| r.stem))
        .collect();
    if !bad.is_empty() {
        bail!(
            "Kiln failed or mismatched the golden outputs on: {}",
            bad.join(", ")
        );
    }
    wasm.map(|_| ())
}

fn render(rows: &[Row], b: &Budget, command: &str, ort_version: &str) -> String {
    let cell = |r: &Result<Stats, String>| match r {
        Ok(s) => format!("{:.1}", s.median),
        Err(e) => format!("error: {}", short(e)),
    };
    let spread = |r: &Result<Stats, String>| match r {
        Ok(s) => format!("{:.1}–{:.1} ({})", s.p10, s.p90, s.iters),
        Err(_) => "–".into(),
    };
    let ratio = |a: &Result<Stats, String>, r: &Result<Stats, String>| match (a, r) {
        (Ok(a), Ok(r)) => Some(a.median / r.median),
        _ => None,
    };
    let fmt_ratio = |x: Option<f64>| match x {
        Some(x) if x < 0.1 => format!("{x:.3}×"),
        Some(x) => format!("{x:.2}×"),
        None => "–".into(),
    };
    let mut main = vec![];
    let mut detail = vec![];
    let (mut n_ort, mut le1, mut le15, mut n_tract, mut beat_tract) = (0, 0, 0, 0, 0);
    for r in rows {
        let valid = r.check.is_ok();
        let (ko, kt) = (ratio(&r.kiln, &r.ort), ratio(&r.kiln, &r.tract));
        if let (Some(x), true) = (ko, valid) {
            n_ort += 1;
            le1 += usize::from(x <= 1.0);
            le15 += usize::from(x <= 1.5);
        }
        if let (Some(x), true) = (kt, valid) {
            n_tract += 1;
            beat_tract += usize::from(x < 1.0);
        }
        let check = match (&r.kiln, &r.check) {
            (Err(_), _) => "not run".into(),
            (_, Ok(c)) => c.clone(),
            (_, Err(e)) => format!("**MISMATCH** {}", short(e)),
        };
        main.push(vec![
            r.stem.to_string(),
            cell(&r.kiln),
            cell(&r.ort),
            cell(&r.tract),
            fmt_ratio(ko),
            fmt_ratio(kt),
            check,
        ]);
        detail.push(vec![
            r.stem.to_string(),
            r.shapes.clone(),
            spread(&r.kiln),
            spread(&r.ort),
            spread(&r.tract),
        ]);
    }
    let date = shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let rustc = shell("rustc", &["--version"]);
    let summary = format!(
        "Kiln ≤ 1.0× ORT on {le1} of {n_ort} models, ≤ 1.5× ORT on {le15} of {n_ort}; \
         faster than tract on {beat_tract} of {n_tract} \
         (counting models where both ran and Kiln matched the golden outputs)."
    );
    format!(
        "# Kiln benchmarks\n\n\
         Generated by `{command}` on {date}. Regenerated whole on each run; do not edit.\n\n\
         - CPU: {cpu}; load average at the end: {load}\n\
         - rustc: {rustc}\n\
         - onnxruntime: {ort_version} (Python, CPUExecutionProvider, graph optimisations ALL)\n\
         - tract-onnx: {tract}, `TRACT_CPU_ISA={isa}` on x86_64 unless set in the environment \
         (its AMX int8 matmul segfaulted on tract_qlstm when this was written)\n\
         - Method: one thread, the golden input of each model (batch 1 unless its shape \
         below says otherwise), the three runtimes back to back per model, warm-up, then \
         per-call wall time; median of N calls, \
         N ≥ {iters} and ≥ {min:?} (cap {max:?}) for Kiln and tract, N ≥ 200 and ≥ 2 s for ORT. \
         Kiln times `Session::run_into` (no allocation); tract times `run` on one spawned \
         state; ORT times `InferenceSession.run` from Python, so **ORT numbers include about \
         5 µs of Python call overhead**, which flatters Kiln on the smallest models.\n\
         - Kiln's outputs are checked against the golden outputs before timing \
         (floats within 1e-3 of scale, integers exact).\n\n\
         ## Latency (median, µs)\n\n{main}\n**Summary:** {summary}\n\n\
         ## Spread (p10–p90 µs, N calls) and inputs\n\n{detail}",
        cpu = cpu_model(),
        load = std::fs::read_to_string("/proc/loadavg").map_or("?".into(), |l| l
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")),
        tract = lock_version("tract-onnx"),
        isa = std::env::var("TRACT_CPU_ISA").unwrap_or(TRACT_ISA.into()),
        iters = b.min_iters,
        min = b.min_time,
        max = b.max_time,
        main = table(
            &[
                "Model",
                "Kiln µs",
                "ORT µs",
                "tract µs",
                "Kiln/ORT",
                "Kiln/tract",
                "Kiln output check"
            ],
            &main
        ),
        detail = table(&["Model", "Input", "Kiln", "ORT", "tract"], &detail),
    )
}

/// The TFLite section: Kiln against LiteRT (XNNPACK delegate and builtin
/// kernels), and each int8 model against Kiln on its float32 sibling.
fn render_tflite(rows: &[TfRow], version: &str) -> String {
    let cell = |r: &Result<Stats, String>| match r {
        Ok(s) => format!("{:.1}", s.median),
        Err(e) => format!("error: {}", short(e)),
    };
    let ratio = |a: &Result<Stats, String>, r: &Result<Stats, String>| match (a, r) {
        (Ok(a), Ok(r)) => format!("{:.2}×", a.median / r.median),
        _ => "–".into(),
    };
    let f32_sibling = |stem: &str| {
        let want = stem.replace("_int8", "_f32");
        rows.iter().find(|r| r.stem == want)
    };
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let vs_f32 = match (r.stem.contains("_int8"), f32_sibling(r.stem)) {
                (true, Some(f)) => ratio(&r.kiln, &f.kiln),
                _ => "–".into(),
            };
            let check = match (&r.kiln, &r.check) {
                (Err(_), _) => "not run".into(),
                (_, Ok(c)) => c.clone(),
                (_, Err(e)) => format!("**MISMATCH** {}", short(e)),
            };
            vec![
                r.stem.to_string(),
                cell(&r.kiln),
                cell(&r.xnnpack),
                cell(&r.builtin),
                ratio(&r.kiln, &r.xnnpack),
                ratio(&r.kiln, &r.builtin),
                vs_f32,
                check,
            ]
        })
        .collect();
    format!(
        "\n## TFLite models: Kiln vs LiteRT (median, µs)\n\n\
         LiteRT {version} from Python (`scripts/litert_bench.py`: `invoke()` timed, one \
         thread, same golden input, run right after Kiln), with its default XNNPACK delegate \
         and with its builtin optimized kernels alone (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`: \
         plain `BUILTIN` still applies XNNPACK). Kiln's int8 outputs must equal LiteRT's \
         golden bytes exactly. *int8/f32* is Kiln on the int8 model over Kiln on its float32 \
         sibling.\n\n{}",
        table(
            &[
                "Model",
                "Kiln µs",
                "LiteRT XNNPACK µs",
                "LiteRT builtin µs",
                "Kiln/XNNPACK",
                "Kiln/builtin",
                "int8/f32 (Kiln)",
                "Kiln output check"
            ],
            &body
        )
    )
}

/// A padded Markdown table.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in w.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&w)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut s = line(head.iter().map(|h| h.to_string()).collect());
    s += &line(w.iter().map(|&w| "-".repeat(w)).collect());
    for r in rows {
        s += &line(r.clone());
    }
    s
}

/// An error message fit for a table cell.
fn short(e: &str) -> String {
    let one: String = e
        .replace('|', "/")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match one.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

/// Where `scripts/setup-wasm.sh` installs the npm tools.
fn npm_dir() -> PathBuf {
    std::env::var_os("KILN_NPM").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
            Path::new(&home).join(".cache/kiln/npm")
        },
        PathBuf::from,
    )
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_string())
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, v)| v.trim());
    let cores = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{name} ({cores} logical CPUs visible)")
}

/// The version of a package in the workspace's Cargo.lock.
fn lock_version(package: &str) -> String {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap_or_default();
    let key = format!("name = \"{package}\"\nversion = \"");
    lock.split_once(&key)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("?".into(), |(v, _)| v.to_string())
}
