//! Zero allocations per inference after load, measured with a counting
//! global allocator around `Session::run_into`.

use kiln_runtime_native::Model;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn corpus(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(rel)
}

#[test]
fn run_into_does_not_allocate() {
    for rel in [
        "onnx-real/mnist-8_cntk.onnx",
        "sklearn/rf_breast_cancer.onnx",
        "onnx-real/burn_pico_sine.onnx",
    ] {
        let bytes = std::fs::read(corpus(rel)).expect("corpus model");
        let compiled =
            kiln_compiler::compile_onnx(&bytes, rel, &Default::default()).expect("compiles");
        let model = Model::load(&compiled.bytes).expect("loads");
        let mut session = model.session();
        let inputs: Vec<Vec<u8>> = model
            .inputs()
            .iter()
            .map(|s| vec![0u8; s.shape(1).iter().product::<usize>() * s.dtype.size()])
            .collect();
        let mut outputs: Vec<Vec<u8>> = model
            .outputs()
            .iter()
            .map(|s| vec![0u8; s.shape(1).iter().product::<usize>() * s.dtype.size()])
            .collect();
        let ins: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let mut outs: Vec<&mut [u8]> = outputs.iter_mut().map(Vec::as_mut_slice).collect();
        session.run_into(1, &ins, &mut outs).expect("warm-up run");
        let region = Region::new(GLOBAL);
        for _ in 0..10 {
            session.run_into(1, &ins, &mut outs).expect("run");
        }
        let stats = region.change();
        assert_eq!(
            stats.allocations + stats.reallocations,
            0,
            "{rel}: allocations in 10 runs: {stats:?}"
        );
    }
}
