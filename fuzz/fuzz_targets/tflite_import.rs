//! The TFLite importer and the rest of the compiler on untrusted
//! `.tflite` bytes: `compile_model` must return an error or an artifact,
//! never panic; an artifact it returns must load and run on zero inputs.
//!
//! Seeds: the small `.tflite` models of the shared corpus (see
//! `scripts/fuzz.sh`), so mutations start from real flatbuffers.
#![no_main]

use kiln_compiler::{Options, compile_model};
use kiln_fuzz::{MAX_ARENA, zero_inputs};
use kiln_runtime_native::{Model, TensorValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(compiled) = compile_model(data, "fuzz.tflite", &Options::default()) else {
        return;
    };
    let model = Model::load(&compiled.bytes).expect("the compiler's artifacts load");
    if model.arena_size() > MAX_ARENA {
        return;
    }
    let Some(inputs) = zero_inputs(&model) else {
        return;
    };
    let refs: Vec<&TensorValue> = inputs.iter().collect();
    let _ = model.session().run(&refs);
});
