//! `kiln_runtime_embedded::Model` on untrusted bytes, as firmware would
//! get them from flash after a bad update: load, describe every input and
//! output, run on inputs made of the fuzz data (right sizes, then one wrong
//! size), and run with an empty op set. Typed errors are fine; panics,
//! aborts and hangs are bugs.
#![no_main]

use kiln_fuzz::{Aligned, MAX_ARENA, MAX_INPUT_BYTES, within_run_bounds};
use kiln_runtime_embedded::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let flash = Aligned::from_slice(data);
    let Ok(model) = Model::new(flash.as_ref()) else {
        return;
    };
    for i in 0..model.input_count() {
        let _ = model.input(i);
    }
    for i in 0..model.output_count() + 1 {
        let _ = (model.output(i), model.output_name(i));
    }
    let _ = model.op_set();
    let Ok(view) = kiln_format::View::parse(flash.as_ref()) else {
        return;
    };
    if model.arena_size() > MAX_ARENA || !within_run_bounds(&view) {
        return;
    }
    // Inputs of the declared sizes, filled with the artifact's own bytes.
    let mut inputs = vec![];
    for i in 0..model.input_count() {
        let Ok(t) = model.input(i) else { return };
        let len = t.byte_len as usize;
        if len > MAX_INPUT_BYTES {
            return;
        }
        inputs.push(data.iter().copied().cycle().take(len).collect::<Vec<u8>>());
    }
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let mut arena = Aligned::zeroed(model.arena_size());
    if let Ok(out) = model.run(arena.as_mut(), &refs) {
        for i in 0..model.output_count() + 1 {
            let _ = out.get(i);
        }
    }
    let _ = model.run_ops::<0>(arena.as_mut(), &refs);
    if let Some((last, rest)) = refs.split_last() {
        let short = &last[..last.len().saturating_sub(1)];
        let mut wrong = rest.to_vec();
        wrong.push(short);
        let _ = model.run(arena.as_mut(), &wrong);
    }
});
