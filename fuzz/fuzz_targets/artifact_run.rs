//! Parse, plan and execute an untrusted artifact on a zeroed arena.
//! Engine errors are fine; panics, aborts and hangs are bugs.
#![no_main]

use kiln_format::View;
use kiln_fuzz::{Aligned, plan_view, walk_view, within_run_bounds};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Aligned::from_slice(data);
    let Ok(view) = View::parse(buf.as_ref()) else {
        return;
    };
    walk_view(&view);
    let Some(plan) = plan_view(view) else {
        return;
    };
    if !within_run_bounds(&view) {
        return;
    }
    let mut arena = Aligned::zeroed(plan.arena_size());
    let _ = plan.run(arena.as_mut());
    // A second run on the dirty arena must behave as well.
    let _ = plan.run(arena.as_mut());
});
