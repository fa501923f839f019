//! The embedded runtime against the native one on corpus models (int8
//! bit for bit, float to the same bits too: same engine, same kernels),
//! and every way a caller or a corrupted flash image can get it wrong.

use kiln_runtime_embedded::{Error, Model};
use kiln_runtime_native::TensorValue;
use proptest::prelude::*;

fn corpus(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(rel)
}

/// `bytes` copied into 16-byte aligned storage (as `include_bytes!` into
/// an aligned static gives on a device).
fn aligned(bytes: &[u8]) -> Vec<u128> {
    let mut v = vec![0u128; bytes.len().div_ceil(16)];
    bytemuck::cast_slice_mut::<u128, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

fn compile(rel: &str) -> Vec<u8> {
    let bytes = std::fs::read(corpus(rel)).expect("corpus model");
    kiln_compiler::compile_model(&bytes, rel, &Default::default())
        .expect("compiles")
        .bytes
}

/// A deterministic input of `len` bytes: any byte for integer tensors,
/// small finite floats for float32.
fn input_bytes(dtype: kiln_format::DType, len: usize, salt: usize) -> Vec<u8> {
    match dtype {
        kiln_format::DType::F32 => (0..len / 4)
            .flat_map(|i| (((i * 7 + salt) % 13) as f32 * 0.05 - 0.3).to_le_bytes())
            .collect(),
        _ => (0..len)
            .map(|i| ((i * 37 + salt * 11) % 251) as u8)
            .collect(),
    }
}

#[test]
fn matches_the_native_runtime_on_corpus_models() {
    for rel in [
        "mlperf-tiny/kws_ref_model.tflite",
        "mlperf-tiny/ad01_int8.tflite",
        "tflite-micro/hello_world_int8.tflite",
        "tflite-micro/hello_world_float.tflite",
        "mlperf-tiny/ad01_fp32.tflite",
    ] {
        let artifact = compile(rel);
        let flash = aligned(&artifact);
        let flash = &bytemuck::cast_slice::<u128, u8>(&flash)[..artifact.len()];
        let model = Model::new(flash).expect("loads");
        model.verify_checksum().expect("checksum");
        let native = kiln_runtime_native::Model::load(&artifact).expect("native loads");

        let mut arena = vec![0u128; model.arena_size().div_ceil(16)];
        let arena = bytemuck::cast_slice_mut::<u128, u8>(&mut arena);
        for salt in 0..3 {
            let infos: Vec<_> = (0..model.input_count())
                .map(|i| model.input(i).expect("input"))
                .collect();
            let data: Vec<Vec<u8>> = infos
                .iter()
                .map(|t| input_bytes(t.dtype, t.byte_len as usize, salt))
                .collect();
            let values: Vec<TensorValue> = infos
                .iter()
                .zip(&data)
                .map(|(t, d)| TensorValue {
                    dtype: t.dtype,
                    shape: t.shape().iter().map(|&d| d as usize).collect(),
                    data: d.clone(),
                })
                .collect();
            let want = native
                .session()
                .run(&values.iter().collect::<Vec<_>>())
                .expect("native runs");
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let got = model.run(arena, &refs).expect("embedded runs");
            for (i, w) in want.iter().enumerate() {
                assert_eq!(got.get(i).expect("output"), &w.data[..], "{rel} output {i}");
            }
        }
    }
}

#[test]
fn bad_calls_are_typed_errors() {
    let artifact = compile("tflite-micro/hello_world_float.tflite");
    let flash = aligned(&artifact);
    let flash = &bytemuck::cast_slice::<u128, u8>(&flash)[..artifact.len()];
    let model = Model::new(flash).expect("loads");
    let need = model.arena_size();
    let mut storage = vec![0u128; need.div_ceil(16) + 1];
    let buf = bytemuck::cast_slice_mut::<u128, u8>(&mut storage);
    let x = 0.5f32.to_le_bytes();

    let e = model
        .run(&mut buf[..need - 1], &[&x])
        .expect_err("small arena");
    assert_eq!(
        e,
        Error::ArenaTooSmall {
            needed: need,
            got: need - 1
        }
    );
    assert!(e.to_string().contains("ARENA_SIZE"), "{e}");
    let e = model
        .run(&mut buf[1..], &[&x])
        .expect_err("misaligned arena");
    assert_eq!(e, Error::ArenaMisaligned);
    let e = model.run(buf, &[]).expect_err("no inputs");
    assert_eq!(
        e,
        Error::InputCount {
            expected: 1,
            got: 0
        }
    );
    let e = model.run(buf, &[&x[..3]]).expect_err("short input");
    assert_eq!(
        e,
        Error::InputSize {
            input: 0,
            expected: 4,
            got: 3
        }
    );
    let nan = f32::NAN.to_le_bytes();
    let e = model.run(buf, &[&nan]).expect_err("NaN");
    assert_eq!(
        e,
        Error::NonFinite {
            input: 0,
            element: 0
        }
    );
    assert!(e.to_string().contains("NaN"), "{e}");
    // A firmware built without the model's ops refuses to run it.
    let e = model.run_ops::<0>(buf, &[&x]).expect_err("no ops built in");
    assert!(matches!(e, Error::Run(_)), "{e:?}");
    assert!(e.to_string().contains("op set"), "{e}");
    assert_ne!(model.op_set().expect("op set"), 0);
    // ... and so does loading it with that op set.
    let e = Model::new_ops::<0>(flash).expect_err("no ops built in");
    assert!(e.to_string().contains("op set"), "{e}");
    assert!(Model::new_ops::<{ u128::MAX }>(flash).is_ok());
    let out = model.run(buf, &[&x]).expect("runs");
    assert_eq!(out.get(0).expect("output 0").len(), 4);
    assert_eq!(
        out.get(1).expect_err("output 1"),
        Error::NoSuchOutput { index: 1, count: 1 }
    );
    assert!(matches!(model.output(3), Err(Error::NoSuchOutput { .. })));
}

#[test]
fn every_truncation_of_an_artifact_is_rejected() {
    let artifact = compile("tflite-micro/hello_world_int8.tflite");
    let flash = aligned(&artifact);
    let flash = &bytemuck::cast_slice::<u128, u8>(&flash)[..artifact.len()];
    for len in 0..artifact.len() {
        assert!(
            matches!(Model::new(&flash[..len]), Err(Error::InvalidModel(_))),
            "a {len}-byte prefix loaded"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Flipped bytes load and run or fail with an error, never a panic.
    #[test]
    fn corrupted_artifacts_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let artifact = compile_cached();
        let mut bad = artifact.to_vec();
        for (at, v) in flips {
            let i = at.index(bad.len());
            bad[i] ^= v | 1;
        }
        let flash = aligned(&bad);
        let flash = &bytemuck::cast_slice::<u128, u8>(&flash)[..bad.len()];
        if let Ok(model) = Model::new(flash) {
            let size = model.arena_size().min(1 << 20);
            let mut storage = vec![0u128; size.div_ceil(16)];
            let arena = bytemuck::cast_slice_mut::<u128, u8>(&mut storage);
            let inputs: Vec<Vec<u8>> = (0..model.input_count().min(4))
                .map(|i| model.input(i).map_or(vec![], |t| vec![1; (t.byte_len as usize).min(1 << 16)]))
                .collect();
            let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
            let _ = model.run(arena, &refs);
        }
    }
}

/// The int8 sine model, compiled once for the property test.
fn compile_cached() -> &'static [u8] {
    static ARTIFACT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ARTIFACT.get_or_init(|| compile("tflite-micro/hello_world_int8.tflite"))
}
