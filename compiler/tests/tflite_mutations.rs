//! The TFLite importer on damaged flatbuffers: every truncation and many
//! byte mutations of real models either import or give a `CompileError`;
//! none may panic. (A cargo-fuzz target would need the compiler, and with
//! it tract, in the fuzz workspace; this deterministic sweep runs in the
//! ordinary test tier instead.)

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
