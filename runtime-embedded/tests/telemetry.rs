//! Telemetry on the embedded runtime (on the host): the fixed-size window
//! a firmware streams out decodes to the sketch the native runtime
//! records for the same calls, rejected calls included.

use kiln_protocol::{BaselineRef, Bins, FeatureBaseline, Sketch, SketchError};
use kiln_runtime_embedded::telemetry::{self, Telemetry};
use kiln_runtime_embedded::{Error, Model};
use kiln_runtime_native::TensorValue;

fn sklearn(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/sklearn")
        .join(file)
}

/// The rows of a corpus CSV without its `target` column.
fn rows(file: &str) -> (Vec<f32>, usize) {
    let text = std::fs::read_to_string(sklearn(file)).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let target = head.iter().position(|h| *h == "target").unwrap();
    let mut values = vec![];
    for line in lines.filter(|l| !l.is_empty()) {
        for (k, v) in line.split(',').enumerate() {
            if k != target {
                values.push(v.parse::<f32>().unwrap());
            }
        }
    }
    (values, head.len() - 1)
}

fn aligned(bytes: &[u8]) -> Vec<u128> {
    let mut v = vec![0u128; bytes.len().div_ceil(16)];
    bytemuck::cast_slice_mut::<u128, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

#[test]
fn mcu_window_decodes_to_the_native_sketch() {
    let (train, features) = rows("rf_breast_cancer_train.csv");
    let (test, _) = rows("rf_breast_cancer_test.csv");
    let opts = kiln_compiler::Options {
        reference: Some(kiln_compiler::Reference {
            samples: kiln_compiler::run::Samples::new(train.clone(), train.len() / features),
            ..Default::default()
        }),
        ..Default::default()
    };
    let onnx = std::fs::read(sklearn("rf_breast_cancer.onnx")).unwrap();
    let artifact = kiln_compiler::compile_model(&onnx, "cancer", &opts)
        .unwrap()
        .bytes;

    // Native, every call recorded.
    let native = kiln_runtime_native::Model::load(&artifact).unwrap();
    let mut session = native.session();
    session.record_telemetry(1).unwrap();
    // The embedded runtime from "flash", its baseline borrowed from the
    // heap one (firmware gets it as statics from `--target mcu`).
    let flash = aligned(&artifact);
    let flash = &bytemuck::cast_slice::<u128, u8>(&flash)[..artifact.len()];
    let model = Model::new(flash).unwrap();
    let baseline = native.drift_baseline().unwrap();
    // As the generated module's statics give it: `(edges?, values)`.
    let spec: [(bool, &'static [f64]); 30] =
        std::array::from_fn(|k| match baseline.features[k].as_bins() {
            Bins::Edges(v) => (true, &*Vec::leak(v.to_vec())),
            Bins::Values(v) => (false, &*Vec::leak(v.to_vec())),
        });
    let p = baseline.prediction.as_ref().unwrap();
    let Bins::Values(classes) = p.feature.as_bins() else {
        panic!("class values")
    };
    let classes: &'static [f64] = Vec::leak(classes.to_vec());
    let bins = telemetry::bins(&spec);
    let borrowed = BaselineRef {
        features: &bins,
        prediction: telemetry::prediction(Some((p.output, p.argmax, false, classes))),
        channels: None,
    };
    let mut t = Telemetry::<30, 32>::new(&model, borrowed, 1).unwrap();
    let mut arena = vec![0u128; model.arena_size().div_ceil(16)];
    let arena = bytemuck::cast_slice_mut::<u128, u8>(&mut arena);

    let mut calls: Vec<Vec<f32>> = test.chunks(features).map(<[f32]>::to_vec).collect();
    // Two calls every runtime rejects: a NaN, and a short row.
    let mut bad = calls[0].clone();
    bad[3] = f32::NAN;
    calls.insert(5, bad);
    for row in &calls {
        let shape = vec![1, row.len()];
        let n = session.run(&[&TensorValue::from_f32(shape, row)]).is_ok();
        let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
        let e = t.run(&model, arena, &[&bytes]).is_ok();
        assert_eq!(n, e);
    }
    let short = [0u8; 8];
    assert!(matches!(
        t.run(&model, arena, &[&short]),
        Err(Error::InputSize { .. })
    ));
    let _ = session.run(&[&TensorValue::from_f32(vec![1, 2], &[0.0, 0.0])]);

    let want = session.take_sketch().unwrap();
    assert_eq!(t.rows() as usize, test.len() / features);
    // Too small a writer: an error, and the window is kept.
    assert_eq!(
        t.write_to(&mut [0u8; 16][..]).unwrap_err(),
        Error::Telemetry(SketchError::Write)
    );
    let mut buf = [0u8; 4096];
    let left = t.write_to(&mut buf[..]).unwrap().len();
    let written = buf.len() - left;
    assert_eq!(t.rows(), 0, "a written window starts again");
    let mut got = Sketch::from_bytes(&buf[..written]).unwrap();
    assert_eq!(
        got.to_bytes(),
        &buf[..written],
        "the heap sketch's own bytes"
    );
    assert_eq!(got.rejected, 2);
    assert_eq!(got.rows, want.rows);
    // The run times are the host's to measure (the firmware reports its
    // timer's); everything else matches.
    got.latency_us = want.latency_us.clone();
    assert_eq!(got, want);
    eprintln!(
        "{} rows, 2 rejected: a {written}-byte window, equal to the native sketch",
        want.rows
    );

    // Sampling one call in 3, rejected calls included in the count: the
    // same calls are counted on both runtimes.
    session.record_telemetry(3).unwrap();
    let mut t = Telemetry::<30, 32>::new(&model, borrowed, 3).unwrap();
    for row in &calls {
        let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
        let _ = session.run(&[&TensorValue::from_f32(vec![1, row.len()], row)]);
        let _ = t.run(&model, arena, &[&bytes]);
    }
    let want = session.take_sketch().unwrap();
    let mut buf = [0u8; 4096];
    let left = t.write_to(&mut buf[..]).unwrap().len();
    let mut got = Sketch::from_bytes(&buf[..buf.len() - left]).unwrap();
    got.latency_us = want.latency_us.clone();
    assert!(got.rows as usize >= calls.len() / 3 - 1, "{}", got.rows);
    assert_eq!(got, want);
}

#[test]
fn telemetry_refuses_a_baseline_it_cannot_hold() {
    let (train, features) = rows("logreg_iris_train.csv");
    let opts = kiln_compiler::Options {
        reference: Some(kiln_compiler::Reference {
            samples: kiln_compiler::run::Samples::new(train.clone(), train.len() / features),
            ..Default::default()
        }),
        ..Default::default()
    };
    let onnx = std::fs::read(sklearn("logreg_iris.onnx")).unwrap();
    let artifact = kiln_compiler::compile_model(&onnx, "iris", &opts)
        .unwrap()
        .bytes;
    let baseline = kiln_runtime_native::Model::load(&artifact)
        .unwrap()
        .drift_baseline()
        .unwrap();
    let flash = aligned(&artifact);
    let flash = &bytemuck::cast_slice::<u128, u8>(&flash)[..artifact.len()];
    let model = Model::new(flash).unwrap();
    let bins: Vec<Bins<'_>> = baseline
        .features
        .iter()
        .map(FeatureBaseline::as_bins)
        .collect();
    let r = BaselineRef {
        features: &bins,
        prediction: None,
        channels: None,
    };
    // Four features: three slots are too few, eight bins too narrow.
    assert!(matches!(
        Telemetry::<3, 32>::new(&model, r, 1),
        Err(Error::Telemetry(SketchError::Shape { .. }))
    ));
    assert!(Telemetry::<4, 8>::new(&model, r, 1).is_err());
    // A baseline of another width than the model's input.
    let r3 = BaselineRef {
        features: &bins[..3],
        prediction: None,
        channels: None,
    };
    assert!(Telemetry::<4, 32>::new(&model, r3, 1).is_err());
    assert!(Telemetry::<4, 32>::new(&model, r, 1).is_ok());
}

/// KWS's 49×10 MFCC codes, `n` variants of the corpus sample: each value
/// moved by `shift` plus noise in -6..=6 (a fixed generator), clamped.
fn kws_variants(n: usize, shift: i32, seed: u64) -> Vec<i8> {
    let npy = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus/mlperf-tiny/samples/kws_sample_input_int8.npy"),
    )
    .unwrap();
    // An int8 .npy of 490 values: the data is its last 490 bytes.
    let sample = &npy[npy.len() - 490..];
    let mut state = seed;
    let mut out = Vec::with_capacity(n * 490);
    for _ in 0..n {
        for &b in sample {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = ((state >> 33) % 13) as i32 - 6;
            out.push((i32::from(b as i8) + shift + noise).clamp(-128, 127) as i8);
        }
    }
    out
}

/// A tensor input of int8 codes (KWS: `[1, 49, 10, 1]`, int8 class
/// scores): the firmware counts each sample's per-channel mean and
/// deviation of the codes and the argmax of the int8 scores, the very
/// sketch the native session records; a reference that is not the
/// input's codes is refused at compile time.
#[test]
fn an_int8_tensor_window_decodes_to_the_native_sketch() {
    let tflite = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus/mlperf-tiny/kws_ref_model.tflite"),
    )
    .unwrap();
    let reference: Vec<f32> = kws_variants(300, 0, 1)
        .iter()
        .map(|&q| f32::from(q))
        .collect();
    let opts = |data: Vec<f32>| kiln_compiler::Options {
        reference: Some(kiln_compiler::Reference {
            samples: kiln_compiler::run::Samples::new(data, 300),
            ..Default::default()
        }),
        ..Default::default()
    };
    let real: Vec<f32> = reference.iter().map(|&q| q * 0.5 + 0.25).collect();
    let refused = kiln_compiler::compile_model(&tflite, "kws", &opts(real)).unwrap_err();
    assert!(refused.to_string().contains("codes"), "{refused}");
    let artifact = kiln_compiler::compile_model(&tflite, "kws", &opts(reference))
        .unwrap()
        .bytes;

    let native = kiln_runtime_native::Model::load(&artifact).unwrap();
    let baseline = native.drift_baseline().unwrap();
    // NHWC with one channel: the last axis.
    assert_eq!(baseline.channels, Some(3));
    assert_eq!(baseline.names, ["c0.mean", "c0.std"]);
    let p = baseline
        .prediction
        .as_ref()
        .expect("the int8 scores' classes");
    assert!(p.argmax && p.output == 0);
    let mut session = native.session();
    session.record_telemetry(1).unwrap();
    let flash = aligned(&artifact);
    let flash = &bytemuck::cast_slice::<u128, u8>(&flash)[..artifact.len()];
    let model = Model::new(flash).unwrap();
    let bins = baseline.feature_bins();
    let mut t = Telemetry::<2, 32>::new(&model, baseline.borrowed(&bins), 1).unwrap();
    let mut arena = vec![0u128; model.arena_size().div_ceil(16)];
    let arena = bytemuck::cast_slice_mut::<u128, u8>(&mut arena);

    // 40 calls like the reference, 40 louder ones.
    let mut calls = kws_variants(40, 0, 2);
    calls.extend(kws_variants(40, 25, 3));
    for sample in calls.chunks(490) {
        let bytes: Vec<u8> = sample.iter().map(|&q| q as u8).collect();
        let input = TensorValue {
            dtype: kiln_format::DType::I8,
            shape: vec![1, 49, 10, 1],
            data: bytes.clone(),
        };
        session.run(&[&input]).unwrap();
        t.run(&model, arena, &[&bytes]).unwrap();
    }
    let want = session.take_sketch().unwrap();
    let mut buf = [0u8; 1024];
    let left = t.write_to(&mut buf[..]).unwrap().len();
    let mut got = Sketch::from_bytes(&buf[..buf.len() - left]).unwrap();
    got.latency_us = want.latency_us.clone();
    assert_eq!(want.rows, 80);
    let predicted: u64 = want.prediction.as_ref().unwrap().bins.iter().sum();
    assert_eq!(predicted, 80);
    assert_eq!(got, want);
    // The louder half moved the mean's distribution: the top bins fill.
    let means = &want.features[0];
    let top: u64 = means.bins[means.bins.len() - 4..].iter().sum();
    assert!(top >= 40, "{:?}", means.bins);
    eprintln!(
        "int8 tensor: {} samples, a {}-byte window equal to the native sketch; mean bins {:?}, classes {:?}",
        want.rows,
        buf.len() - left,
        means.bins,
        want.prediction.as_ref().unwrap().bins
    );
}
