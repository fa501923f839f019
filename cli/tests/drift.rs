//! `kiln drift` against Evidently 0.7.23 (legacy `DataDriftPreset`,
//! defaults) on the corpus's drift scenarios: the same test per column,
//! the same thresholds and verdicts, the same dataset verdict, p-values to
//! 1e-6 and distances to 1e-6 relative; exit code 6 exactly when the
//! dataset drifts.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn drift_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/drift")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Runs `kiln drift --json` (plus `extra`) on every corpus drift scenario
/// and batch; hands `check` the scenario, the batch, Evidently's stored
/// result and the command's output.
fn each_scenario(extra: &[&str], mut check: impl FnMut(&str, &str, Value, Output)) {
    for scenario in ["breast_cancer", "randhie"] {
        let dir = drift_dir().join(scenario);
        let spec = read_json(&dir.join("drift_spec.json"));
        let categorical: Vec<&str> = spec["categorical_columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for batch in [
            "current_no_drift",
            "current_mild_drift",
            "current_strong_drift",
        ] {
            let want = read_json(&dir.join(format!("evidently_{batch}.json")));
            let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
                .arg("drift")
                .arg("--reference")
                .arg(dir.join("reference.csv"))
                .arg("--current")
                .arg(dir.join(format!("{batch}.csv")))
                .args(["--categorical", &categorical.join(","), "--json"])
                .args(extra)
                .output()
                .unwrap();
            check(scenario, batch, want, out);
        }
    }
}

#[test]
fn kiln_drift_reproduces_evidently_on_the_corpus_scenarios() {
    let mut checked = 0;
    each_scenario(&[], |scenario, batch, want, out| {
        let got: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{scenario}/{batch}: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let dataset = &want["dataset_drift"];
        assert_eq!(
            got["dataset_drift"], dataset["dataset_drift"],
            "{scenario}/{batch}"
        );
        assert_eq!(
            out.status.code(),
            Some(if dataset["dataset_drift"].as_bool().unwrap() {
                6
            } else {
                0
            }),
            "{scenario}/{batch}"
        );
        assert_eq!(got["number_of_columns"], dataset["number_of_columns"]);
        assert_eq!(
            got["number_of_drifted_columns"],
            dataset["number_of_drifted_columns"]
        );
        let share = |v: &Value| v["share_of_drifted_columns"].as_f64().unwrap();
        assert!((share(&got) - share(dataset)).abs() < 1e-12);
        let columns = want["columns"].as_object().unwrap();
        assert_eq!(got["columns"].as_array().unwrap().len(), columns.len());
        let mut worst = 0.0f64;
        for c in got["columns"].as_array().unwrap() {
            let name = c["column"].as_str().unwrap();
            let w = &columns[name];
            let at = format!("{scenario}/{batch}/{name}");
            for field in [
                "column_type",
                "stattest_name",
                "stattest_threshold",
                "drift_detected",
            ] {
                assert_eq!(c[field], w[field], "{at}: {field}");
            }
            let (g, e) = (
                c["drift_score"].as_f64().unwrap(),
                w["drift_score"].as_f64().unwrap(),
            );
            let off = if w["stattest_name"].as_str().unwrap().ends_with("p_value") {
                (g - e).abs()
            } else {
                (g - e).abs() / e.abs().max(1e-300)
            };
            assert!(off <= 1e-6, "{at}: Kiln {g}, Evidently {e}");
            worst = worst.max(off);
            checked += 1;
        }
        eprintln!("{scenario}/{batch}: worst score difference {worst:.1e}");
    });
    assert_eq!(checked, 3 * 31 + 3 * 10);
}

#[test]
fn kiln_drift_refuses_what_it_cannot_compare() {
    let dir = drift_dir().join("breast_cancer");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("drift")
            .arg("--reference")
            .arg(dir.join("reference.csv"))
            .arg("--current")
            .arg(dir.join("current_no_drift.csv"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--categorical", "no_such_column"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'no_such_column' is not in"));
    let out = run(&["--stattest", "mean_radius=median"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown drift test 'median'"));
    let out = run(&["--stattest", "diagnosis=ks", "--categorical", "diagnosis"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a numerical column"));
    // An overridden threshold changes the verdict and is reported.
    let out = run(&["--threshold", "mean_radius=1.0", "--json"]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = got["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == "mean_radius")
        .unwrap();
    assert_eq!(c["stattest_threshold"], 1.0);
    assert_eq!(c["drift_detected"], true, "every p-value is below 1");
}

/// `kiln drift --sketch`: the current window only as a device reports it
/// (counts in the reference's 32 quantile bins or per value), on the same
/// scenarios: the same test per column as Evidently, the same dataset
/// verdict, at least 90% of the column verdicts (122 of 123 when written:
/// breast_cancer's worst_concavity under strong drift has p = 0.029 from
/// the raw rows, 0.094 from the bins), in a sketch of at most 4 KB for
/// breast_cancer's 31 features.
#[test]
fn sketch_mode_keeps_the_verdicts_in_a_few_kilobytes() {
    let (mut agree, mut total) = (0, 0);
    each_scenario(&["--sketch"], |scenario, batch, want, out| {
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            got["dataset_drift"], want["dataset_drift"]["dataset_drift"],
            "{scenario}/{batch}"
        );
        let bytes = got["sketch_bytes"].as_u64().unwrap();
        assert!(bytes <= 4096, "{scenario}/{batch}: {bytes} bytes");
        let columns = want["columns"].as_object().unwrap();
        for c in got["columns"].as_array().unwrap() {
            let w = &columns[c["column"].as_str().unwrap()];
            assert_eq!(
                c["stattest_name"], w["stattest_name"],
                "{scenario}/{batch}: {c}"
            );
            agree += usize::from(c["drift_detected"] == w["drift_detected"]);
            total += 1;
        }
        eprintln!("{scenario}/{batch}: sketch {bytes} bytes");
    });
    eprintln!("sketch verdicts agree with Evidently on {agree} of {total} columns");
    assert!(agree * 10 >= total * 9, "{agree} of {total}");
}

/// A model compiled with `--reference` carries its drift baseline; a
/// session recording telemetry counts every row it runs into a sketch
/// (with rejected calls and latencies), and the collector's verdict on
/// that sketch tells the held-out test rows (no drift) from the same rows
/// rescaled (drift).
#[test]
fn native_sessions_record_sketches_the_collector_judges() {
    use kiln_collector::drift::{DriftOptions, detect_sketch};
    use kiln_runtime_native::{Model, TelemetryError, TensorValue};
    let sk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sklearn");
    let tmp = std::env::temp_dir().join(format!("kiln-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let artifact = tmp.join("digits.kiln");
    common::compile_sklearn_with_reference("mlp_digits", &artifact);
    let model = Model::load(&std::fs::read(&artifact).unwrap()).unwrap();
    let baseline = model.drift_baseline().unwrap();
    assert_eq!(baseline.features.len(), 64);
    let p = baseline.prediction.as_ref().unwrap();
    assert!(
        p.argmax && p.output == 1,
        "the probabilities output, by class"
    );
    assert_eq!(baseline.names[0], "pixel_0_0");
    let test = kiln_cli::read_dataset(&sk.join("mlp_digits_test.csv"), Some("target")).unwrap();
    let judge = |scale: f32| {
        let mut s = model.session();
        s.record_telemetry(1).unwrap();
        for row in test.values.chunks(64) {
            let v: Vec<f32> = row.iter().map(|x| x * scale).collect();
            s.run(&[&TensorValue::from_f32(vec![1, 64], &v)]).unwrap();
        }
        // A rejected call is counted, not run.
        assert!(
            s.run(&[&TensorValue::from_f32(vec![1, 3], &[0.0; 3])])
                .is_err()
        );
        let sketch = s.take_sketch().unwrap();
        assert_eq!(sketch.rows as usize, test.count);
        // Every run's prediction counted too (the class of the
        // probabilities output).
        let predictions = sketch.prediction.as_ref().unwrap();
        assert_eq!(predictions.bins.iter().sum::<u64>() as usize, test.count);
        assert_eq!(sketch.rejected, 1);
        assert_eq!(sketch.latency_us.iter().sum::<u64>() as usize, test.count);
        // Taking starts a new window.
        assert_eq!(s.take_sketch().unwrap().rows, 0);
        detect_sketch(&baseline, &sketch, &DriftOptions::default()).unwrap()
    };
    let same = judge(1.0);
    let scaled = judge(2.0);
    let prediction = |r: &kiln_collector::drift::DriftReport| {
        r.columns
            .iter()
            .find(|c| c.column == "prediction")
            .unwrap()
            .clone()
    };
    // The test rows' predicted classes are distributed as the reference
    // rows' are. Doubling the pixels barely moves a ReLU network's argmax
    // (the inputs drift, the predictions do not); blank images all get one
    // class (the predictions drift).
    assert!(!prediction(&same).drift_detected);
    assert!(!prediction(&scaled).drift_detected);
    let blank = judge(0.0);
    assert!(
        prediction(&blank).drift_detected,
        "{:?}",
        prediction(&blank)
    );
    eprintln!(
        "digits test rows: {} of 65 columns drift; rescaled x2: {}",
        same.number_of_drifted_columns, scaled.number_of_drifted_columns
    );
    assert!(
        !same.dataset_drift,
        "{} columns drifted",
        same.number_of_drifted_columns
    );
    assert!(scaled.dataset_drift);
    // `kiln drift --baseline` counts the same CSV rows into the same bins:
    // the session's report.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("drift")
        .arg("--baseline")
        .arg(&artifact)
        .arg("--current")
        .arg(sk.join("mlp_digits_test.csv"))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (JSON text parses back to within an ulp: serde_json's default float
    // parsing is not correctly rounded.)
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli = cli["columns"].as_array().unwrap();
    assert_eq!(cli.len(), same.columns.len());
    for (c, s) in cli.iter().zip(&same.columns) {
        assert_eq!(c["stattest_name"], s.stattest_name);
        assert_eq!(c["drift_detected"], s.drift_detected);
        let score = c["drift_score"].as_f64().unwrap();
        assert!((score - s.drift_score).abs() <= 1e-15 * s.drift_score.abs().max(1.0));
    }
    // A model without a baseline says how to get one.
    let plain = kiln_compiler::compile_model(
        &std::fs::read(sk.join("mlp_digits.onnx")).unwrap(),
        "mlp_digits.onnx",
        &kiln_compiler::Options::default(),
    )
    .unwrap();
    let plain = Model::load(&plain.bytes).unwrap();
    assert_eq!(
        plain.session().record_telemetry(1),
        Err(TelemetryError::NoBaseline)
    );
    std::fs::remove_dir_all(&tmp).ok();
}
