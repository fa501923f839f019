//! `kiln_runtime_native::Model::load` on untrusted bytes and, when it loads,
//! one `Session::run` on zero-filled inputs of the schema shapes (batch 1).
//!
//! Mutated artifacts almost never keep a valid sha256, which `Model::load`
//! enforces; so each input is loaded twice: as is (the checksum path) and
//! with the header checksum recomputed (everything after it).
#![no_main]

use kiln_fuzz::{MAX_ARENA, with_fixed_checksum, zero_inputs};
use kiln_runtime_native::{Model, TensorValue};
use libfuzzer_sys::fuzz_target;

fn exercise(data: &[u8]) {
    let Ok(model) = Model::load(data) else {
        return;
    };
    let _ = (model.name(), model.version(), model.artifact_bytes().len());
    for s in model.inputs().iter().chain(model.outputs()) {
        let _ = s.shape_string();
    }
    if model.arena_size() > MAX_ARENA {
        return;
    }
    let Some(inputs) = zero_inputs(&model) else {
        return;
    };
    let refs: Vec<&TensorValue> = inputs.iter().collect();
    let mut session = model.session();
    let _ = session.run(&refs);
    // Input validation on wrong input counts.
    let _ = session.run(&refs[..refs.len().saturating_sub(1)]);
    let _ = session.check_inputs(&[]);
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if let Some(fixed) = with_fixed_checksum(data) {
        exercise(&fixed);
    }
});
