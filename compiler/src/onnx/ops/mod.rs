//! ONNX op importers, one file per family. Each importer reads attributes,
//! computes static output shapes and emits IR nodes.

mod control;
mod elementwise;
mod ml;
mod nn;
mod quant;
mod rnn;
mod shape;

use super::Registry;
use crate::error::{CompileError, Result};

pub(super) fn register_all(r: &mut Registry) {
    control::register(r);
    elementwise::register(r);
    shape::register(r);
    nn::register(r);
    rnn::register(r);
    ml::register(r);
    quant::register(r);
}

/// numpy broadcast of shapes.
pub(crate) fn broadcast(shapes: &[Vec<usize>]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return None;
            }
        }
    }
    Some(out)
}

/// Normalises a possibly negative axis against `rank`.
pub(crate) fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r.max(1)).contains(&v) {
        Some(v as usize)
    } else {
        None
    }
}

pub(crate) fn axis_or(
    cx: &super::Ctx,
    node: &tract_onnx::pb::NodeProto,
    a: i64,
    rank: usize,
) -> Result<usize> {
    axis(a, rank).ok_or_else(|| cx.err(node, format!("axis {a} is out of range for rank {rank}")))
}

pub(crate) fn u8_axis(cx: &super::Ctx, node: &tract_onnx::pb::NodeProto, a: usize) -> Result<u8> {
    u8::try_from(a)
        .ok()
        .filter(|&v| (v as usize) < kiln_format::OP_RANK)
        .ok_or_else(|| cx.err(node, "rank above 8 is not supported"))
}

#[allow(dead_code, reason = "used by some families only")]
pub(crate) fn unsupported(
    cx: &super::Ctx,
    node: &tract_onnx::pb::NodeProto,
    what: &str,
) -> CompileError {
    cx.err(node, format!("{what} is not supported"))
}

/// Conv-style window and output spatial dims for a node (shared with QLinearConv).
pub(crate) fn nn_spatial(
    cx: &super::Ctx,
    node: &tract_onnx::pb::NodeProto,
    input: &[usize],
    kernel: &[usize],
) -> Result<(kiln_format::Window, Vec<usize>)> {
    nn::spatial_pub(cx, node, input, kernel)
}
