//! Control flow: Scan, unrolled at compile time (the trip count is static
//! once shapes are), so devices never interpret subgraphs.

use super::axis_or;
use crate::error::Result;
use crate::onnx::{Attrs, Ctx, Registry, import_node, registry, tensor_from_proto};
use kiln_format::{OP_RANK, Op};
use tract_onnx::pb::NodeProto;

/// Unrolling beyond this many steps would bloat the artifact.
const MAX_UNROLL: usize = 4096;

pub(super) fn register(r: &mut Registry) {
    r.insert("", "Scan", scan);
}

fn scan(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    if cx.opset < 9 {
        return Err(cx.err(
            node,
            "Scan before opset 9 (with a batch dim) is not supported",
        ));
    }
    let a = Attrs::new(node);
    let body = a
        .graph("body")
        .ok_or_else(|| cx.err(node, "the body graph is missing"))?;
    let m = a.int("num_scan_inputs", 0).max(0) as usize;
    let ins: Vec<usize> = (0..node.input.len())
        .map(|i| cx.input(node, i))
        .collect::<Result<_>>()?;
    if m == 0 || m > ins.len() || body.input.len() != ins.len() {
        return Err(cx.err(
            node,
            "num_scan_inputs disagrees with the inputs and the body",
        ));
    }
    let n_state = ins.len() - m;
    let k_out = body
        .output
        .len()
        .checked_sub(n_state)
        .ok_or_else(|| cx.err(node, "the body has fewer outputs than states"))?;
    let in_axes = a.ints("scan_input_axes").unwrap_or_else(|| vec![0; m]);
    let in_dirs = a
        .ints("scan_input_directions")
        .unwrap_or_else(|| vec![0; m]);
    let out_axes = a.ints("scan_output_axes").unwrap_or_else(|| vec![0; k_out]);
    let out_dirs = a
        .ints("scan_output_directions")
        .unwrap_or_else(|| vec![0; k_out]);
    if in_axes.len() != m
        || in_dirs.len() != m
        || out_axes.len() != k_out
        || out_dirs.len() != k_out
    {
        return Err(cx.err(node, "scan axes/directions have the wrong length"));
    }
    let mut axes = vec![];
    let mut steps = None;
    for j in 0..m {
        let s = cx.shape(ins[n_state + j]);
        let ax = axis_or(cx, node, in_axes[j], s.len())?;
        match steps {
            Some(t) if t != s[ax] => return Err(cx.err(node, "scan inputs have different lengths")),
            _ => steps = Some(s[ax]),
        }
        axes.push(ax);
    }
    let steps = steps.unwrap_or(0);
    if steps == 0 || steps > MAX_UNROLL {
        return Err(cx.err(
            node,
            format!("{steps} scan steps cannot be unrolled (1..={MAX_UNROLL})"),
        ));
    }
    // The trip count is fixed by the shapes at compile time, so a symbolic
    // dim 0 cannot be treated as an independent batch.
    cx.batch_unsafe.get_or_insert_with(|| {
        format!(
            "Scan node '{}' is unrolled over its inputs",
            crate::onnx::node_name(node)
        )
    });
    let reg = registry();
    // The body's own initializers, imported once and bound in every step.
    let mut body_consts = vec![];
    for init in &body.initializer {
        let (dt, shape, bytes) = tensor_from_proto(init)?;
        body_consts.push((init.name.clone(), cx.const_bytes(dt, shape, bytes)));
    }
    let mut state: Vec<usize> = ins[..n_state].to_vec();
    let mut per_step: Vec<Vec<usize>> = vec![vec![]; k_out];
    for t in 0..steps {
        let saved = cx.names.clone();
        for (name, id) in &body_consts {
            cx.bind(name, *id);
        }
        for (i, &s) in state.iter().enumerate() {
            cx.bind(&body.input[i].name, s);
        }
        for j in 0..m {
            let x = ins[n_state + j];
            let shape = cx.shape(x);
            let idx = if in_dirs[j] != 0 { steps - 1 - t } else { t };
            let mut start = [0i64; OP_RANK];
            let step = [1i64; OP_RANK];
            start[axes[j]] = idx as i64;
            let mut one = shape.clone();
            one[axes[j]] = 1;
            let dt = cx.dtype(x);
            let sl = cx.emit_tmp(node, Op::Slice { start, step }, vec![Some(x)], dt, one)?;
            let mut squeezed = shape.clone();
            squeezed.remove(axes[j]);
            let sq = cx.emit_tmp(node, Op::Reshape, vec![Some(sl)], dt, squeezed)?;
            cx.bind(&body.input[n_state + j].name, sq);
        }
        for bn in &body.node {
            import_node(cx, &reg, bn)?;
        }
        let outs: Vec<usize> = body
            .output
            .iter()
            .map(|o| cx.get(&o.name))
            .collect::<Result<_>>()?;
        cx.names = saved;
        state = outs[..n_state].to_vec();
        for k in 0..k_out {
            per_step[k].push(outs[n_state + k]);
        }
    }
    for (i, &s) in state.iter().enumerate() {
        if let Some(name) = node.output.get(i) {
            cx.bind(name, s);
        }
    }
    for k in 0..k_out {
        let Some(name) = node.output.get(n_state + k).filter(|n| !n.is_empty()) else {
            continue;
        };
        let mut parts = per_step[k].clone();
        if out_dirs[k] != 0 {
            parts.reverse();
        }
        let s = cx.shape(parts[0]);
        let ax = axis_or(cx, node, out_axes[k], s.len() + 1)?;
        let dt = cx.dtype(parts[0]);
        let mut pieces = vec![];
        for p in parts {
            let mut us = cx.shape(p);
            us.insert(ax, 1);
            pieces.push(Some(cx.emit_tmp(
                node,
                Op::Reshape,
                vec![Some(p)],
                dt,
                us,
            )?));
        }
        let mut out = s.clone();
        out.insert(ax, steps);
        let stacked = if pieces.len() == 1 {
            pieces[0].unwrap_or(0)
        } else {
            // Concat takes at most 32 inputs: stack in chunks.
            let mut level = pieces;
            while level.len() > 1 {
                let mut next = vec![];
                for chunk in level.chunks(kiln_engine::MAX_IO) {
                    let total: usize = chunk.iter().flatten().map(|&i| cx.shape(i)[ax]).sum();
                    let mut cs = s.clone();
                    cs.insert(ax, total);
                    next.push(Some(cx.emit_tmp(
                        node,
                        Op::Concat { axis: ax as u8 },
                        chunk.to_vec(),
                        dt,
                        cs,
                    )?));
                }
                level = next;
            }
            level[0].unwrap_or(0)
        };
        debug_assert_eq!(cx.shape(stacked), out);
        cx.bind(name, stacked);
    }
    Ok(())
}
