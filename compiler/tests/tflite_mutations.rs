//! The TFLite importer on damaged flatbuffers: every truncation and many
//! byte mutations of real models either import or give a `CompileError`;
//! none may panic. This deterministic sweep runs in the ordinary test tier;
//! the cargo-fuzz target `tflite_import` (fuzz/) searches further, and the
//! inputs it once crashed on (fuzz/regressions/tflite_import/) are replayed
//! here through the whole compiler.

use kiln_compiler::{ImportOptions, tflite};
use std::path::Path;

fn model(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// xorshift64: a fixed, seedable stream of positions and values.
fn rng(mut s: u64) -> impl FnMut() -> u64 {
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fn import(bytes: &[u8]) {
    let _ = tflite::import(bytes, &ImportOptions::default());
}

#[test]
fn intact_models_import() {
    for rel in [
        "tflite-micro/hello_world_float.tflite",
        "mlperf-tiny/pretrainedResnet.tflite",
    ] {
        let b = model(rel);
        let imported =
            tflite::import(&b, &ImportOptions::default()).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(!imported.graph.nodes.is_empty(), "{rel}");
    }
}

#[test]
fn truncations_and_mutations_never_panic() {
    let small = model("tflite-micro/hello_world_float.tflite");
    for cut in 0..small.len() {
        import(&small[..cut]);
    }
    let mut next = rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let mut b = small.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        import(&b);
    }
    // The ResNet's metadata and graph live in its first and last few KB
    // (the weights in between are plain bytes): mutate there.
    let big = model("mlperf-tiny/pretrainedResnet.tflite");
    let n = big.len();
    for _ in 0..300 {
        let mut b = big.clone();
        let head = (next() % 4096) as usize;
        let tail = n - 1 - (next() % 8192) as usize;
        let i = if next().is_multiple_of(2) { head } else { tail };
        b[i] = next() as u8;
        import(&b);
    }
}

/// Inputs `tflite_import` crashed on: compiling them (import, passes,
/// packing, planning) must give an error or an artifact, never panic.
#[test]
fn fuzz_regressions_compile_or_fail_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/tflite_import");
    let mut n = 0;
    for f in std::fs::read_dir(&dir).expect("fuzz/regressions/tflite_import exists") {
        let path = f.expect("entry").path();
        let bytes = std::fs::read(&path).expect("readable");
        let r = kiln_compiler::compile_model(&bytes, "regression.tflite", &Default::default());
        if let Err(e) = r {
            assert!(!e.to_string().is_empty(), "{}", path.display());
        }
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}
