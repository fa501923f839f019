//! `kiln compile --target mcu`: the artifact and, beside it, a Rust module
//! that compiles and a C header, both with the arena size and op set the
//! artifact needs.

mod common;

use std::process::Command;

/// `DIR/STEM.rs` compiles on its own with rustc.
fn assert_compiles(dir: &std::path::Path, stem: &str) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let check = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "lib",
            "--emit",
            "metadata",
            "-o",
        ])
        .arg(dir.join(format!("lib{stem}.rmeta")))
        .arg(dir.join(format!("{stem}.rs")))
        .output()
        .expect("rustc runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn mcu_target_writes_a_module_that_compiles() {
    let dir = std::env::temp_dir().join(format!("kiln-mcu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/tflite-micro/hello_world_int8.tflite");
    let out = dir.join("sine.kiln");
    let status = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["compile", "--target", "mcu", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("kiln runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let artifact = std::fs::read(&out).expect("artifact");
    let plan = kiln_runtime_native::Model::load(&artifact).expect("loads");
    let rs = std::fs::read_to_string(dir.join("sine.rs")).expect("sine.rs");
    let h = std::fs::read_to_string(dir.join("sine.h")).expect("sine.h");
    assert!(
        rs.contains(&format!(
            "pub const ARENA_SIZE: usize = {};",
            plan.arena_size()
        )),
        "{rs}"
    );
    assert!(
        rs.contains(&format!("pub const MODEL_LEN: usize = {};", artifact.len())),
        "{rs}"
    );
    assert!(
        h.contains(&format!("#define KILN_ARENA_SIZE {}u", plan.arena_size())),
        "{h}"
    );
    let view = kiln_format::View::parse(&artifact).expect("parses");
    let ops =
        (0..view.node_count()).fold(0u128, |s, i| s | 1 << view.node(i).expect("node").op.tag());
    assert!(
        rs.contains(&format!("pub const OPS: u128 = {ops:#x};")),
        "{rs}"
    );
    assert!(
        rs.contains("pub const INPUT_0_SHAPE: [usize; 2] = [1, 1];"),
        "{rs}"
    );
    // The int8 input's and output's quantization, as LiteRT reports it
    // (`get_input_details()["quantization"]`).
    for (what, scale, zp) in [
        ("INPUT_0", "0.024480116", -128),
        ("OUTPUT_0", "0.008290957", 5),
    ] {
        assert!(
            rs.contains(&format!("pub const {what}_SCALE: f32 = {scale};"))
                && rs.contains(&format!("pub const {what}_ZERO_POINT: i32 = {zp};")),
            "{rs}"
        );
        assert!(
            h.contains(&format!("#define KILN_{what}_SCALE {scale}f"))
                && h.contains(&format!("#define KILN_{what}_ZERO_POINT {zp}")),
            "{h}"
        );
    }

    // The module compiles as it is (include_bytes! finds the artifact beside it).
    assert_compiles(&dir, "sine");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--budget`: a model that fits compiles and says what is left; one that
/// does not fails with exit code 5 before writing anything, naming each
/// overflow with its parts and excess, and what to try.
#[test]
fn budget_names_what_overflows() {
    let dir = std::env::temp_dir().join(format!("kiln-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let kiln = |model: &str, budget: &str, target: &str, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["compile", "--target", target, "--budget", budget, "-o"])
            .arg(dir.join(out))
            .arg(corpus.join(model))
            .output()
            .expect("kiln runs")
    };
    let ok = kiln(
        "mlperf-tiny/kws_ref_model.tflite",
        "flash=256K,ram=64K",
        "mcu",
        "kws.kiln",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let artifact = std::fs::read(dir.join("kws.kiln")).expect("written");
    let needs = kiln_cli::mcu::Needs::of(&artifact).expect("needs");
    assert_eq!(
        needs.weights + needs.graph,
        artifact.len() as u64,
        "{needs:?}"
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        stdout.contains(&format!("{} B left of 262144 B", 262144 - needs.flash())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} B left of 65536 B", 65536 - needs.ram())),
        "{stdout}"
    );

    // person_detect (int8) overflows both: nothing is written.
    let over = kiln(
        "tflite-micro/person_detect.tflite",
        "flash=256K,ram=64K",
        "mcu",
        "pd.kiln",
    );
    assert_eq!(over.status.code(), Some(5));
    assert!(!dir.join("pd.kiln").exists() && !dir.join("pd.rs").exists());
    let err = String::from_utf8_lossy(&over.stderr);
    let pd = kiln(
        "tflite-micro/person_detect.tflite",
        "flash=1M,ram=1M",
        "mcu",
        "pd.kiln",
    );
    assert!(
        pd.status.success(),
        "{}",
        String::from_utf8_lossy(&pd.stderr)
    );
    let needs =
        kiln_cli::mcu::Needs::of(&std::fs::read(dir.join("pd.kiln")).expect("pd")).expect("needs");
    for (what, need, limit) in [
        ("flash", needs.flash(), 262144),
        ("ram", needs.ram(), 65536),
    ] {
        assert!(
            err.contains(&format!(
                "{what}: {}",
                if what == "flash" { "weights" } else { "arena" }
            )) && err.contains(&format!("{} B over the {limit} B budget", need - limit)),
            "{what}: {err}"
        );
    }
    assert!(err.contains("already int8"), "{err}");

    // A float model over its flash is told to quantize.
    let float = kiln(
        "mlperf-tiny/ad01_fp32.tflite",
        "flash=300K",
        "mcu",
        "ad.kiln",
    );
    assert_eq!(float.status.code(), Some(5));
    let err = String::from_utf8_lossy(&float.stderr);
    assert!(
        err.contains("--quantize int8") && !err.contains("ram:"),
        "{err}"
    );

    // Only with --target mcu, and only well-formed.
    let wrong = kiln(
        "tflite-micro/hello_world_int8.tflite",
        "flash=1M",
        "kiln",
        "hw.kiln",
    );
    assert_eq!(wrong.status.code(), Some(2));
    for bad in ["flash=12Q", "rom=1K", "flash", ""] {
        assert!(bad.parse::<kiln_cli::mcu::Budget>().is_err(), "{bad:?}");
    }
    assert_eq!(
        "flash=256K, ram=1M".parse::<kiln_cli::mcu::Budget>().ok(),
        Some(kiln_cli::mcu::Budget {
            flash: Some(256 << 10),
            ram: Some(1 << 20)
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model compiled with `--reference` for `--target mcu`: the module
/// carries the drift baseline's bins as plain statics (and still compiles
/// on its own) for the embedded runtime's telemetry.
#[test]
fn mcu_target_module_carries_the_drift_baseline() {
    let dir = std::env::temp_dir().join(format!("kiln-mcu-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sklearn");
    let out = dir.join("cancer.kiln");
    let run = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["compile", "--target", "mcu", "-o"])
        .arg(&out)
        .arg(sk.join("rf_breast_cancer.onnx"))
        .arg("--reference")
        .arg(sk.join("rf_breast_cancer_train.csv"))
        .args(["--labels", "target"])
        .output()
        .expect("kiln runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rs = std::fs::read_to_string(dir.join("cancer.rs")).expect("cancer.rs");
    let baseline = kiln_runtime_native::Model::load(&std::fs::read(&out).expect("artifact"))
        .expect("loads")
        .drift_baseline()
        .expect("a baseline");
    assert!(
        rs.contains("pub const TELEMETRY_FEATURES: usize = 30;"),
        "{rs}"
    );
    assert!(rs.contains("pub const TELEMETRY_BINS: usize = 32;"), "{rs}");
    // Every feature's bins, exactly (Debug prints f64 round-trip).
    for f in &baseline.features {
        let line = match f.as_bins() {
            kiln_protocol::Bins::Edges(v) => format!("(true, &{v:?}),"),
            kiln_protocol::Bins::Values(v) => format!("(false, &{v:?}),"),
        };
        assert!(rs.contains(&line), "{line} missing");
    }
    // The classifier's predictions: argmax of its probabilities (output
    // 1), classes 0 and 1.
    let p = baseline.prediction.as_ref().expect("predictions");
    assert_eq!((p.output, p.argmax), (1, true));
    assert!(
        rs.contains("pub static BASELINE_PREDICTION: Option<(u32, bool, bool, &[f64])> = Some((1, true, false, &[0.0, 1.0]));"),
        "{rs}"
    );
    assert!(
        rs.contains("pub static BASELINE_CHANNELS: Option<u32> = None;"),
        "{rs}"
    );
    assert_compiles(&dir, "cancer");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An int8 tensor input (KWS, `[1, 49, 10, 1]`) with a reference of its
/// codes: the module carries the per-channel baseline (two features, the
/// channel axis) for the firmware's telemetry.
#[test]
fn mcu_target_module_carries_a_tensor_baseline() {
    let dir = std::env::temp_dir().join(format!("kiln-mcu-tensor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let codes: Vec<u8> = common::kws_codes(100, 0, 7)
        .iter()
        .map(|&q| q as u8)
        .collect();
    let reference = dir.join("reference.npy");
    std::fs::write(
        &reference,
        common::npy(kiln_format::DType::I8, &[100, 49, 10, 1], &codes),
    )
    .unwrap();
    let out = dir.join("kws.kiln");
    let run = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["compile", "--target", "mcu", "-o"])
        .arg(&out)
        .arg(corpus.join("mlperf-tiny/kws_ref_model.tflite"))
        .arg("--reference")
        .arg(&reference)
        .output()
        .expect("kiln runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let rs = std::fs::read_to_string(dir.join("kws.rs")).expect("kws.rs");
    assert!(
        rs.contains("pub const TELEMETRY_FEATURES: usize = 2;"),
        "{rs}"
    );
    assert!(
        rs.contains("    // c0.mean\n") && rs.contains("    // c0.std\n"),
        "{rs}"
    );
    assert!(
        rs.contains("pub static BASELINE_CHANNELS: Option<u32> = Some(3);"),
        "{rs}"
    );
    // The int8 scores' argmax (output 0) is the prediction.
    assert!(
        rs.contains("pub static BASELINE_PREDICTION: Option<(u32, bool, bool, &[f64])> = Some((0, true, false, &["),
        "{rs}"
    );
    assert_compiles(&dir, "kws");
    let _ = std::fs::remove_dir_all(&dir);
}
