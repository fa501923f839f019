//! The npm package against the native runtime, in Node and in a real
//! headless Chromium.
//!
//! Every corpus model with a golden file is compiled here and run natively;
//! the artifacts, golden inputs and native outputs go to a fixture
//! directory, and two JavaScript runners load them through the package
//! (`runtime-wasm/pkg`, built by `cargo xtask wasm`):
//! `node --test runtime-wasm/tests/node/` and
//! `runtime-wasm/tests/browser.mjs` (Chromium via playwright-core, pages
//! served on 127.0.0.1). Both require integer outputs to be bit-identical
//! and float outputs within 1e-5 of the output's magnitude, check that bad
//! input throws a `KilnError`, and the browser runner screenshots the demo.
//!
//! Ignored in plain `cargo test` (it needs the package, Node and Chromium);
//! `scripts/test.sh` builds the package and runs it with `--ignored`.

mod common;

use kiln_cli::write_wasm_fixtures;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn node(args: &[&str], fixtures: &Path) {
    let status = Command::new("node")
        .args(args)
        .env("KILN_WASM_FIXTURES", fixtures)
        .env(
            "KILN_WASM_SHOT",
            std::env::temp_dir().join("kiln-wasm-demo.png"),
        )
        .current_dir(root())
        .status()
        .expect("node runs (Node >= 20 is needed)");
    assert!(status.success(), "node {args:?} failed ({status})");
}

#[test]
#[ignore = "needs runtime-wasm/pkg (cargo xtask wasm), Node and Chromium: scripts/test.sh runs it"]
fn package_matches_native_in_node_and_chromium() {
    let pkg = root().join("runtime-wasm/pkg/kiln.js");
    assert!(
        pkg.exists(),
        "{} is missing: run `cargo xtask wasm` first",
        pkg.display()
    );
    let dir = std::env::temp_dir().join(format!("kiln-wasm-fixtures-{}", std::process::id()));
    let n = write_wasm_fixtures(&root().join("../shared/corpus"), &dir).expect("fixtures");
    println!(
        "{n} corpus models compiled and run natively -> {}",
        dir.display()
    );
    node(&["--test", "runtime-wasm/tests/node/"], &dir);
    node(&["runtime-wasm/tests/browser.mjs"], &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The package's telemetry in Node: `Model.recordTelemetry` counts the
/// same calls into the same sketch as a native session (every call, and
/// one in three, rejected calls included; run times aside), and
/// `TelemetryUploader` gets a window to a live collector through two
/// failed attempts (backoff, then the batch once), ε-private windows carry
/// the documented noise, and sampled raw rows reach the collector.
#[test]
#[ignore = "needs runtime-wasm/pkg (cargo xtask wasm) and Node: scripts/test.sh runs it"]
fn package_records_telemetry_the_collector_takes() {
    use kiln_runtime_native::{Model, TensorValue};
    let pkg = root().join("runtime-wasm/pkg/kiln.js");
    assert!(
        pkg.exists(),
        "{} is missing: run `cargo xtask wasm` first",
        pkg.display()
    );
    let dir = std::env::temp_dir().join(format!("kiln-wasm-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let artifact = dir.join("wine.kiln");
    common::compile_sklearn_with_reference("gb_wine", &artifact);
    let bytes = std::fs::read(&artifact).unwrap();
    let model = Model::load(&bytes).unwrap();
    let test = kiln_cli::read_dataset(
        &root().join("../shared/corpus/sklearn/gb_wine_test.csv"),
        Some("target"),
    )
    .unwrap();
    let mut rows: Vec<Vec<f32>> = test.values.chunks(13).map(<[f32]>::to_vec).collect();
    // A call every runtime rejects.
    let mut bad = rows[0].clone();
    bad[2] = f32::NAN;
    rows.insert(5, bad);
    let flat: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(dir.join("rows.bin"), &flat).unwrap();
    for every in [1, 3] {
        let mut session = model.session();
        session.record_telemetry(every).unwrap();
        for row in &rows {
            let _ = session.run(&[&TensorValue::from_f32(vec![1, 13], row)]);
        }
        let mut sketch = session.take_sketch().unwrap();
        sketch.latency_us.iter_mut().for_each(|c| *c = 0);
        std::fs::write(
            dir.join(format!("native_{every}.json")),
            serde_json::to_vec(&sketch).unwrap(),
        )
        .unwrap();
    }
    // A tensor input (mnist-8, per-channel summaries): 200 reference
    // images, 60 others counted natively.
    let images = common::mnist_images(260);
    common::compile_mnist_with_reference(&images[..200 * 784], &dir.join("mnist.kiln"));
    let tensor = Model::load(&std::fs::read(dir.join("mnist.kiln")).unwrap()).unwrap();
    let mut session = tensor.session();
    session.record_telemetry(1).unwrap();
    for image in images[200 * 784..].chunks(784) {
        session
            .run(&[&TensorValue::from_f32(vec![1, 1, 28, 28], image)])
            .unwrap();
    }
    let mut sketch = session.take_sketch().unwrap();
    sketch.latency_us.iter_mut().for_each(|c| *c = 0);
    std::fs::write(
        dir.join("native_mnist.json"),
        serde_json::to_vec(&sketch).unwrap(),
    )
    .unwrap();
    let pixels: Vec<u8> = images[200 * 784..]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(dir.join("mnist.bin"), pixels).unwrap();
    // An int8 tensor input (KWS: codes and int8 class scores), its
    // reference given as an int8 .npy of the codes.
    common::compile_kws_with_reference(&common::kws_codes(200, 0, 1), &dir.join("kws.kiln"));
    let kws = Model::load(&std::fs::read(dir.join("kws.kiln")).unwrap()).unwrap();
    let mut session = kws.session();
    session.record_telemetry(1).unwrap();
    let mut codes = common::kws_codes(20, 0, 2);
    codes.extend(common::kws_codes(20, 25, 3));
    let codes: Vec<u8> = codes.iter().map(|&q| q as u8).collect();
    for sample in codes.chunks(490) {
        let input = TensorValue {
            dtype: kiln_format::DType::I8,
            shape: vec![1, 49, 10, 1],
            data: sample.to_vec(),
        };
        session.run(&[&input]).unwrap();
    }
    let mut sketch = session.take_sketch().unwrap();
    assert_eq!(sketch.rows, 40);
    sketch.latency_us.iter_mut().for_each(|c| *c = 0);
    std::fs::write(
        dir.join("native_kws.json"),
        serde_json::to_vec(&sketch).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("kws.bin"), &codes).unwrap();
    // A signed copy of the wine artifact and its release key's public half.
    let secret = [3u8; 32];
    std::fs::write(
        dir.join("wine.signed.kiln"),
        kiln_format::sign(&bytes, &secret).unwrap(),
    )
    .unwrap();
    let public: String = kiln_format::public_key(&secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(dir.join("release.pub.hex"), public).unwrap();
    let admin = "admin-secret-token";
    let (_server, addr) = common::start_collector(
        &format!("sqlite://{}", dir.join("c.db").display()),
        admin,
        &[],
    );
    let token = common::register(&addr, admin, "wine", &bytes);
    std::fs::write(
        dir.join("collector.json"),
        serde_json::json!({
            "url": format!("http://{addr}"), "admin": admin, "token": token,
            "model": "wine", "version": "1", "features": 13, "rows": rows.len(),
        })
        .to_string(),
    )
    .unwrap();
    let status = Command::new("node")
        .args(["--test", "runtime-wasm/tests/telemetry.test.mjs"])
        .env("KILN_TELEMETRY_FIXTURES", &dir)
        .current_dir(root())
        .status()
        .expect("node runs (Node >= 20 is needed)");
    assert!(
        status.success(),
        "the Node telemetry test failed ({status})"
    );
    // What the collector holds: the window the uploader sent, and one of
    // three rows sent with those rows as samples.
    let (st, body) = common::http(
        &addr,
        "GET",
        "/v1/models/wine/drift?version=1&window=3600",
        Some(admin),
        b"",
    );
    assert_eq!(st, 200);
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["batches"], 2);
    assert_eq!(
        report["rows"].as_u64().unwrap() as usize,
        rows.len() - 1 + 3
    );
    assert_eq!(report["rejected"], 1);
    let (st, csv) = common::http(
        &addr,
        "GET",
        "/v1/models/wine/samples?version=1&window=3600",
        Some(admin),
        b"",
    );
    assert_eq!(st, 200);
    assert_eq!(String::from_utf8_lossy(&csv).lines().count(), 1 + 3);
    let _ = std::fs::remove_dir_all(&dir);
}
