//! The Cortex-M4F firmware (`cargo xtask firmware`) in QEMU against the
//! native runtime: int8 outputs bit for bit, float outputs within 1e-5
//! relative (the native build fuses multiply-adds, the firmware does not),
//! on every int8 corpus model Kiln compiles (MLPerf Tiny KWS, AD, ResNet-8
//! and streaming wake word; TFLM hello_world, micro_speech, person_detect,
//! the MNIST LSTM and DTLN) and the float hello_world; and the DSP
//! kernels' self-check against the portable ones on the target.
//! Needs `qemu-system-arm`, `arm-none-eabi-size` and the thumbv7em target:
//! `scripts/test.sh` installs them and runs it.

mod common;
use common::npy;
use kiln_runtime_native::{Model, TensorValue};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
#[ignore = "needs qemu-system-arm and the thumbv7em target: scripts/test.sh runs it"]
fn firmware_in_qemu_matches_native() {
    let dir = std::env::temp_dir().join(format!("kiln-firmware-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for rel in [
        "mlperf-tiny/kws_ref_model.tflite",
        "mlperf-tiny/ad01_int8.tflite",
        "tflite-micro/hello_world_int8.tflite",
        "tflite-micro/hello_world_float.tflite",
        "tflite-micro/micro_speech_quantized.tflite",
        "tflite-micro/person_detect.tflite",
        "mlperf-tiny/pretrainedResnet_quant.tflite",
        "mlperf-tiny/str_ww_ref_model.tflite",
        "tflite-micro/trained_lstm_int8.tflite",
        "tflite-micro/dtln_noise_suppression.tflite",
    ] {
        let src = std::fs::read(root().join("../shared/corpus").join(rel)).expect("corpus");
        // As `kiln compile --target mcu` does: scratch for the lean paths.
        let opts = kiln_compiler::Options {
            lean_scratch: true,
            ..Default::default()
        };
        let artifact = kiln_compiler::compile_model(&src, rel, &opts)
            .expect("compiles")
            .bytes;
        let model = Model::load(&artifact).expect("loads");
        let spec = &model.inputs()[0];
        let shape = spec.shape(1);
        let n: usize = shape.iter().product();
        let dtype = spec.dtype;
        let data: Vec<u8> = match dtype {
            kiln_format::DType::F32 => (0..n)
                .flat_map(|i| ((i % 7) as f32 * 0.3 - 0.9).to_le_bytes())
                .collect(),
            kiln_format::DType::I8 => (0..n).map(|i| ((i * 37) % 251) as u8).collect(),
            other => panic!("{rel}: input dtype {other:?} not covered"),
        };
        let stem = rel.replace('/', "_");
        let (a, x) = (
            dir.join(format!("{stem}.kiln")),
            dir.join(format!("{stem}.npy")),
        );
        std::fs::write(&a, &artifact).expect("artifact");
        std::fs::write(&x, npy(dtype, &shape, &data)).expect("input");
        let want = model
            .session()
            .run(&[&TensorValue {
                dtype: spec.dtype,
                shape: shape.clone(),
                data,
            }])
            .expect("native runs");

        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["xtask", "firmware", "--run", "--artifact"])
            .arg(&a)
            .arg("--input")
            .arg(&x)
            .current_dir(root())
            .output()
            .expect("cargo xtask firmware");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{rel}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        println!("{rel}: {v}");
        for (spec, w) in model.outputs().iter().zip(&want) {
            let got = v["outputs"][spec.name.as_str()]
                .as_array()
                .unwrap_or_else(|| panic!("{rel}: no output {}", spec.name));
            match w.dtype {
                kiln_format::DType::I8 => {
                    let got: Vec<u8> = got
                        .iter()
                        .map(|e| e.as_i64().expect("integer") as i8 as u8)
                        .collect();
                    assert_eq!(
                        got, w.data,
                        "{rel}: output {} differs from native",
                        spec.name
                    );
                }
                kiln_format::DType::F32 => {
                    let want: Vec<f32> = w.f32_values().collect();
                    assert_eq!(got.len(), want.len(), "{rel}");
                    for (g, &w) in got.iter().zip(&want) {
                        let g = g.as_f64().expect("number") as f32;
                        assert!(
                            (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
                            "{rel}: output {}: {g} against native {w}",
                            spec.name
                        );
                    }
                }
                other => panic!("{rel}: output dtype {other:?} not covered"),
            }
        }
        // The arena the compiler reports is the one a run touches (up to
        // the 16-byte alignment of its end).
        let ram = &v["static_ram"];
        assert_eq!(ram["arena"], model.arena_size(), "{rel}");
        let touched = ram["arena_touched"].as_u64().expect("arena_touched") as usize;
        assert!(
            touched <= model.arena_size() && touched + 16 > model.arena_size(),
            "{rel}: a run touched {touched} of {} arena bytes",
            model.arena_size()
        );
        // `kiln compile --budget` estimates the runtime's flash and the
        // stack: both must hold for every model.
        let stack = ram["stack"].as_u64().expect("stack");
        assert!(
            stack > 0 && stack <= kiln_cli::mcu::STACK_ESTIMATE,
            "{rel}: stack {stack} B over the --budget estimate"
        );
        let ops = kiln_format::View::parse(&artifact)
            .and_then(|v| v.op_set())
            .expect("op set");
        let code = v["flash"]["runtime_code"].as_u64().expect("runtime_code");
        assert!(
            code > 0 && code <= kiln_cli::mcu::runtime_estimate(ops),
            "{rel}: runtime code {code} B over the --budget estimate {} B",
            kiln_cli::mcu::runtime_estimate(ops)
        );
        assert!(v["instructions"].as_u64().is_some_and(|n| n > 0), "{rel}");
        // Once: the DSP kernels against the portable ones, on the target.
        if rel.ends_with("hello_world_int8.tflite") {
            let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["xtask", "firmware", "--dsp-check", "--artifact"])
                .arg(&a)
                .arg("--input")
                .arg(&x)
                .current_dir(root())
                .output()
                .expect("cargo xtask firmware --dsp-check");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
            assert_eq!(v["dsp_mismatches"], 0, "DSP self-check: {v}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
