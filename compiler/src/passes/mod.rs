//! Graph passes. Each pass is a small function over the graph that returns
//! how many rewrites it made; `optimize` runs them to a fixed point.

mod batch;
mod dce;
mod fuse;
mod pack;
mod sparse;
mod transpose;

pub use batch::per_sample_batch_ok;
pub use dce::dead_nodes;
pub use pack::{pack_int8_conv, pack_int8_fc};
pub use sparse::sparse_weights;

use crate::ir::Graph;

/// A pass and its name, for the compile report.
pub type Pass = (&'static str, fn(&mut Graph) -> usize);

pub const PASSES: &[Pass] = &[
    ("fold-batchnorm", fuse::fold_batchnorm),
    ("fold-batchnorm-fc", fuse::fold_batchnorm_fc),
    ("fuse-bias", fuse::fuse_bias),
    ("fuse-conv-bias", fuse::fuse_conv_bias),
    ("fuse-activation", fuse::fuse_activation),
    ("transpose-as-reshape", transpose::transpose_as_reshape),
    ("dead-nodes", dead_nodes),
];

/// Runs every pass until nothing changes; returns (pass, rewrites) totals.
pub fn optimize(g: &mut Graph) -> Vec<(&'static str, usize)> {
    let mut totals: Vec<(&'static str, usize)> = PASSES.iter().map(|p| (p.0, 0)).collect();
    for _ in 0..16 {
        let mut changed = 0;
        for (k, (_, pass)) in PASSES.iter().enumerate() {
            let n = pass(g);
            totals[k].1 += n;
            changed += n;
        }
        if changed == 0 {
            break;
        }
    }
    totals
}
