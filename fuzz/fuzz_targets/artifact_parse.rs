//! `View::parse` on untrusted bytes, then every accessor and `Plan::new`.
#![no_main]

use kiln_format::View;
use kiln_fuzz::{Aligned, plan_view, walk_view};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Aligned::from_slice(data);
    if let Ok(view) = View::parse(buf.as_ref()) {
        walk_view(&view);
        let _ = plan_view(view);
    }
});
