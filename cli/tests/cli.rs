//! The `kiln` binary end to end: exit codes, one-line errors, and snapshots
//! of what people read. Bless snapshots with `INSTA_UPDATE=always` (or
//! `cargo insta review`).

use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tract_onnx::pb;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .expect("kiln runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn iris() -> String {
    repo()
        .join("demos/iris/logreg_iris.onnx")
        .display()
        .to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d.join(name)
}

/// Exit code and the single stderr line.
fn failure(o: &Output) -> (i32, String) {
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(
        err.lines().count(),
        1,
        "expected a one-line reason, got:\n{err}"
    );
    (o.status.code().unwrap_or(-1), err)
}

fn npy(name: &str, dtype: &str, shape: &[usize], data: &[u8]) -> String {
    let t = kiln_runtime_native::TensorValue {
        dtype: match dtype {
            "f32" => kiln_format::DType::F32,
            "i8" => kiln_format::DType::I8,
            _ => kiln_format::DType::I64,
        },
        shape: shape.to_vec(),
        data: data.to_vec(),
    };
    let p = tmp(name);
    std::fs::write(&p, kiln_cli::npy_bytes(&t)).expect("write npy");
    p.display().to_string()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A fresh artifact per call: tests run in parallel, and a shared path would
/// let one test read the file while another rewrites it.
fn compiled_iris() -> String {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = tmp(&format!("iris-{n}.kiln"));
    let o = kiln(&["compile", &iris(), "-o", &out.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.display().to_string()
}

#[test]
fn inspect_snapshot() {
    let o = kiln(&["inspect", &iris()]);
    assert!(o.status.success());
    insta::assert_snapshot!(String::from_utf8_lossy(&o.stdout));
}

#[test]
fn compile_report_snapshot() {
    let out = tmp("iris-report.kiln");
    let o = kiln(&["compile", &iris(), "-o", &out.display().to_string()]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout).replace(&out.display().to_string(), "[OUT]");
    insta::assert_snapshot!(text);
}

#[test]
fn onnx_and_artifact_give_identical_bytes() {
    let art = compiled_iris();
    let x = npy(
        "x.npy",
        "f32",
        &[2, 4],
        &f32s(&[5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]),
    );
    let (a, b) = (tmp("out-onnx"), tmp("out-kiln"));
    for (model, dir) in [(iris(), &a), (art, &b)] {
        let o = kiln(&[
            "run",
            &model,
            "--input",
            &x,
            "--output-dir",
            &dir.display().to_string(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for name in ["label.npy", "probabilities.npy"] {
        let (x, y) = (
            std::fs::read(a.join(name)).expect("onnx output"),
            std::fs::read(b.join(name)).expect("kiln output"),
        );
        assert_eq!(x, y, "{name} differs between .onnx and .kiln");
    }
}

#[test]
fn json_output_has_labels_and_scores() {
    let x = npy("one.npy", "f32", &[1, 4], &f32s(&[5.1, 3.5, 1.4, 0.2]));
    let o = kiln(&["run", &iris(), "--input", &x, "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["label"]["data"][0], 0.0, "a setosa flower: {v}");
    assert_eq!(v["probabilities"]["shape"], serde_json::json!([1, 3]));
}

#[test]
fn profile_times_every_node_and_keeps_the_outputs() {
    let x = npy("prof.npy", "f32", &[1, 4], &f32s(&[5.1, 3.5, 1.4, 0.2]));
    let art = compiled_iris();
    let o = kiln(&["run", &art, "--input", &x, "--json", "--profile", "20"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json on stdout");
    assert_eq!(v["label"]["data"][0], 0.0);
    let err = String::from_utf8_lossy(&o.stderr);
    let head = err.lines().next().unwrap_or_default();
    let nodes: usize = head
        .strip_prefix("profile: ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no profile header in {err}"));
    assert!(nodes > 0 && head.ends_with("over 20 runs"), "{head}");
    // One line per node (at most 25), each naming a Kiln op with a time.
    let per_node: Vec<&str> = err
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with("op "))
        .collect();
    assert_eq!(per_node.len(), nodes.min(25), "{err}");
    for l in per_node {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(
            f.len() >= 4 && f[2].parse::<f64>().is_ok_and(|us| us >= 0.0),
            "{l}"
        );
    }
}

#[test]
fn malformed_models_exit_3() {
    let art = std::fs::read(compiled_iris()).expect("artifact");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.kiln", art[..art.len() / 2].to_vec()),
        ("header-only.kiln", art[..100].to_vec()),
        (
            "random.onnx",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        (
            "wrong-magic.kiln",
            [b"NOTKILN\0".as_slice(), &art[8..]].concat(),
        ),
        ("empty.onnx", vec![]),
    ];
    let x = npy("m.npy", "f32", &[1, 4], &f32s(&[1.0, 2.0, 3.0, 4.0]));
    for (name, bytes) in cases {
        let p = tmp(name);
        std::fs::write(&p, bytes).expect("write");
        for args in [
            vec!["inspect", p.to_str().unwrap_or("")],
            vec!["run", p.to_str().unwrap_or(""), "--input", &x],
        ] {
            let (code, err) = failure(&kiln(&args));
            assert_eq!(code, 3, "{name} {args:?}: {err}");
            assert!(err.starts_with("error: "), "{err}");
        }
    }
    // A flipped weight byte is caught by the checksum.
    let mut flipped = art.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    let p = tmp("flipped.kiln");
    std::fs::write(&p, flipped).expect("write");
    let (code, err) = failure(&kiln(&["inspect", p.to_str().unwrap_or("")]));
    assert_eq!(code, 3);
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn tflite_models_compile_or_fail_cleanly() {
    let corpus = repo().join("../shared/corpus");
    let float = corpus.join("tflite-micro/hello_world_float.tflite");
    let x = npy("hw.npy", "f32", &[1, 1], &f32s(&[1.5]));
    let o = kiln(&["run", float.to_str().unwrap_or(""), "--input", &x, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let y = v["StatefulPartitionedCall:0"]["data"][0]
        .as_f64()
        .expect("a number");
    assert!((y - 1.5f64.sin()).abs() < 0.2, "the sine model gives {y}");
    // inspect --layers shows each layer's precision (int8 here).
    let int8 = corpus.join("tflite-micro/hello_world_int8.tflite");
    let o = kiln(&["inspect", int8.to_str().unwrap_or(""), "--layers", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["precision"]["int8"], 3, "{v}");
    assert_eq!(v["layers"][0]["op"], "QFullyConnected", "{v}");
    assert_eq!(v["layers"][0]["weights"], "int8", "{v}");
    assert_eq!(v["parameters"], 288, "{v}"); // 16 + 16·16 + 16 int8 weights
    // The int8 sine model runs in integer arithmetic: LiteRT 2.3.0 maps
    // -87 to 104 (the golden pair).
    let int8 = corpus.join("tflite-micro/hello_world_int8.tflite");
    let x = npy("hw8.npy", "i8", &[1, 1], &[(-87i8) as u8]);
    let o = kiln(&["run", int8.to_str().unwrap_or(""), "--input", &x, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["StatefulPartitionedCall:0"]["data"][0], 104, "{v}");
    // person_detect's known quirk is tolerated with a warning.
    let pd = corpus.join("tflite-micro/person_detect.tflite");
    let out = tmp("pd.kiln");
    let o = kiln(&[
        "compile",
        pd.to_str().unwrap_or(""),
        "-o",
        out.to_str().unwrap_or(""),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("quantized_dimension 3 beyond their rank"),
        "{err}"
    );
    // Models Kiln cannot import yet are refused with the reason, not run
    // wrongly: the int16 SVDF keyword model (LiteRT 2.3.0 crashes on it).
    let svdf = corpus.join("tflite-micro/keyword_scrambled_8bit.tflite");
    let (code, err) = failure(&kiln(&["inspect", svdf.to_str().unwrap_or("")]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("int16 model input"), "{err}");
    // Every truncation of a real flatbuffer is an error (exit 3), never a panic.
    let bytes = std::fs::read(&float).expect("model");
    for cut in [8, 16, 40, 100, 200, bytes.len() / 2, bytes.len() - 7] {
        let p = tmp(&format!("cut{cut}.tflite"));
        std::fs::write(&p, &bytes[..cut]).expect("write");
        let (code, err) = failure(&kiln(&["inspect", p.to_str().unwrap_or("")]));
        assert_eq!(code, 3, "cut at {cut}: {err}");
    }
}

#[test]
fn unknown_op_is_named_at_compile_time() {
    let vi = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![pb::tensor_shape_proto::Dimension {
                        denotation: String::new(),
                        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(4)),
                    }],
                }),
            })),
        }),
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            node: vec![pb::NodeProto {
                input: vec!["x".into()],
                output: vec!["y".into()],
                name: "mystery".into(),
                op_type: "FrobnicateV2".into(),
                ..Default::default()
            }],
            name: "g".into(),
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = tmp("unknown-op.onnx");
    std::fs::write(&p, model.encode_to_vec()).expect("write");
    let (code, err) = failure(&kiln(&[
        "compile",
        p.to_str().unwrap_or(""),
        "-o",
        tmp("u.kiln").to_str().unwrap_or(""),
    ]));
    assert_eq!(code, 3);
    assert!(
        err.contains("FrobnicateV2") && err.contains("mystery") && err.contains("opset 17"),
        "{err}"
    );
}

#[test]
fn rejected_inputs_exit_4_and_name_the_input() {
    let art = compiled_iris();
    let wrong_shape = npy("shape.npy", "f32", &[1, 5], &f32s(&[1.0; 5]));
    let nan = npy("nan.npy", "f32", &[1, 4], &f32s(&[1.0, f32::NAN, 3.0, 4.0]));
    let inf = npy(
        "inf.npy",
        "f32",
        &[1, 4],
        &f32s(&[1.0, 2.0, f32::INFINITY, 4.0]),
    );
    let ints = npy("int.npy", "i64", &[1, 4], &[0u8; 32]);
    for (file, needle) in [
        (&wrong_shape, "shape"),
        (&nan, "NaN"),
        (&inf, "infinite"),
        (&ints, "dtype"),
    ] {
        for model in [&art, &iris()] {
            let (code, err) = failure(&kiln(&["run", model, "--input", file]));
            assert_eq!(code, 4, "{file}: {err}");
            assert!(err.contains("'X'") && err.contains(needle), "{err}");
        }
    }
    // Opting in to NaN/Inf (missing values) runs the model.
    assert!(
        kiln(&["run", &art, "--input", &nan, "--allow-non-finite"])
            .status
            .success()
    );
    let (code, err) = failure(&kiln(&["run", &art, "--input", &format!("nope={}", nan)]));
    assert_eq!(code, 4, "{err}");
}

#[test]
fn usage_and_io_errors() {
    let (code, _) = (kiln(&["frobnicate"]).status.code(), ());
    assert_eq!(code, Some(2));
    let (code, err) = failure(&kiln(&["run", &iris()]));
    assert_eq!(code, 2, "{err}");
    let (code, err) = failure(&kiln(&["inspect", "/nonexistent/model.kiln"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/model.kiln"), "{err}");
    let bad = tmp("bad.npy");
    std::fs::write(&bad, b"\x93NUMPY garbage").expect("write");
    let (code, err) = failure(&kiln(&[
        "run",
        &iris(),
        "--input",
        bad.to_str().unwrap_or(""),
    ]));
    assert_eq!(code, 1, "{err}");
}

#[test]
fn compare_reports_differences_and_agreement() {
    let corpus = repo().join("../shared/corpus");
    let tfl = corpus.join("tflite-micro/hello_world_float.tflite");
    let art = tmp("hw_cmp.kiln");
    let o = kiln(&[
        "compile",
        tfl.to_str().unwrap_or(""),
        "-o",
        art.to_str().unwrap_or(""),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let x = npy("hw_cmp.npy", "f32", &[3, 1], &f32s(&[0.5, 1.5, 3.0]));
    // The source model and its compiled artifact agree exactly.
    let o = kiln(&[
        "compare",
        tfl.to_str().unwrap_or(""),
        art.to_str().unwrap_or(""),
        "--input",
        &x,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["max_abs"], 0.0, "{v}");
    // Models that cannot take the same input are refused with the reason.
    let other = corpus.join("mlperf-tiny/ad01_fp32.tflite");
    let (code, err) = failure(&kiln(&[
        "compare",
        tfl.to_str().unwrap_or(""),
        other.to_str().unwrap_or(""),
        "--input",
        &x,
    ]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("rejected"), "{err}");
}
