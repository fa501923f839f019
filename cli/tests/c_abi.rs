//! libkiln's C ABI end to end: the checked-in `ffi/include/kiln.h` is what
//! cbindgen generates from `ffi/src/lib.rs`; `demos/c/example.c`, compiled
//! with the system C compiler against `libkiln.a` (warnings as errors),
//! prints the same outputs as `kiln run --json` (int8 bit for bit, float32
//! exactly); a truncated artifact and a short input give the CLI's status
//! codes and readable messages; and valgrind finds no leak or memory error
//! on any of those paths.
//! Needs `cc`, `cbindgen` and `valgrind`: `scripts/test.sh` installs them
//! and runs it.

mod common;
use common::npy;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `{name: (dtype, shape, values as f32 bits or integers)}` of a
/// `kiln run --json`-style line.
fn outputs(json: &str) -> Vec<(String, String, Vec<u64>, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    let mut out = vec![];
    for (name, t) in v.as_object().expect("an object") {
        let dtype = t["dtype"].as_str().expect("dtype").to_string();
        let shape = t["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim"))
            .collect();
        // float32 printed by Rust (shortest f64) and by C (%.9g) are the
        // same f32 once parsed back.
        let data = t["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|x| match dtype.as_str() {
                "float32" => format!("{:?}", x.as_f64().expect("number") as f32),
                _ => x.to_string(),
            })
            .collect();
        out.push((name.clone(), dtype, shape, data));
    }
    out.sort();
    out
}

#[test]
#[ignore = "needs cc, cbindgen and valgrind: scripts/test.sh runs it"]
fn c_example_matches_kiln_run() {
    let root = root();
    let dir = std::env::temp_dir().join(format!("kiln-c-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // The header is cbindgen's output, as checked in.
    let fresh = dir.join("kiln.h");
    let generated = run(Command::new("cbindgen")
        .args([
            "--config",
            "ffi/cbindgen.toml",
            "--crate",
            "kiln-ffi",
            "--quiet",
            "--output",
        ])
        .arg(&fresh)
        .current_dir(&root));
    assert!(
        generated.status.success(),
        "cbindgen: {}",
        text(&generated.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&fresh).expect("generated"),
        std::fs::read_to_string(root.join("ffi/include/kiln.h")).expect("checked in"),
        "ffi/include/kiln.h is stale: regenerate it with cbindgen (see ffi/cbindgen.toml)"
    );

    // libkiln.a, built in the target directory and profile this test runs
    // from (`target/<profile>/deps/c_abi-…`).
    let target = std::env::current_exe()
        .expect("test path")
        .ancestors()
        .nth(2)
        .expect("target/<profile>")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = run(Command::new(&cargo)
        .args(["build", "-q", "-p", "kiln-ffi"])
        .args(target.ends_with("release").then_some("--release"))
        .current_dir(&root));
    assert!(built.status.success(), "{}", text(&built.stderr));
    let lib = target.join("libkiln.a");
    assert!(lib.exists(), "no {}", lib.display());
    let exe = dir.join("example");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let compiled = run(Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(root.join("demos/c/example.c"))
        .arg("-I")
        .arg(root.join("ffi/include"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm"]));
    assert!(compiled.status.success(), "{}", text(&compiled.stderr));

    let corpus = root.join("../shared/corpus");
    let kiln = env!("CARGO_BIN_EXE_kiln");
    for (model, dtype) in [
        ("mlperf-tiny/kws_ref_model.tflite", kiln_format::DType::I8),
        ("mlperf-tiny/ad01_fp32.tflite", kiln_format::DType::F32),
    ] {
        let size = dtype.size();
        let stem = Path::new(model)
            .file_stem()
            .expect("stem")
            .to_string_lossy();
        let artifact = dir.join(format!("{stem}.kiln"));
        let c = run(Command::new(kiln)
            .args(["compile", "-o"])
            .arg(&artifact)
            .arg(corpus.join(model)));
        assert!(c.status.success(), "{model}: {}", text(&c.stderr));
        let loaded = kiln_runtime_native::Model::load(&std::fs::read(&artifact).expect("artifact"))
            .expect("loads");
        let shape = loaded.inputs()[0].shape(1);
        let n: usize = shape.iter().product();
        let data: Vec<u8> = match dtype {
            kiln_format::DType::I8 => (0..n).map(|i| ((i * 37) % 251) as u8).collect(),
            _ => (0..n)
                .flat_map(|i| ((i % 13) as f32 * 0.25 - 1.5).to_le_bytes())
                .collect(),
        };
        let x = dir.join(format!("{stem}.npy"));
        std::fs::write(&x, npy(dtype, &shape, &data)).expect("npy");

        let want = run(Command::new(kiln)
            .arg("run")
            .arg(&artifact)
            .arg("--input")
            .arg(&x)
            .arg("--json"));
        assert!(want.status.success(), "{model}: {}", text(&want.stderr));
        let got = run(Command::new(&exe).arg(&artifact).arg(&x));
        assert!(got.status.success(), "{model}: {}", text(&got.stderr));
        assert_eq!(
            outputs(&text(&got.stdout)),
            outputs(&text(&want.stdout)),
            "{model}: the C example and kiln run disagree"
        );

        // A truncated artifact, and an input one element short.
        let bad = dir.join(format!("{stem}-truncated.kiln"));
        let bytes = std::fs::read(&artifact).expect("artifact");
        std::fs::write(&bad, &bytes[..bytes.len() / 2]).expect("bad");
        let short = dir.join(format!("{stem}-short.npy"));
        std::fs::write(&short, npy(dtype, &[n - 1], &data[..data.len() - size])).expect("short");
        for (a, input, code, says) in [(&bad, &x, 3, "truncated"), (&artifact, &short, 4, "input")]
        {
            let out = run(Command::new(&exe).arg(a).arg(input));
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{model}: {err}");
            assert!(err.contains(says), "{model}: {err}");
        }

        // No leaks and no invalid accesses, on success and on failure.
        for (a, input) in [(&artifact, &x), (&bad, &x), (&artifact, &short)] {
            let v = run(Command::new("valgrind")
                .args([
                    "--leak-check=full",
                    "--errors-for-leak-kinds=definite,indirect,possible",
                    "--error-exitcode=99",
                    "-q",
                ])
                .arg(&exe)
                .arg(a)
                .arg(input));
            assert_ne!(
                v.status.code(),
                Some(99),
                "{model}: valgrind: {}",
                text(&v.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
