//! `pack-int8-conv` and `pack-int8-fc`: int8 convolutions and fully
//! connected layers get their weights packed at compile time into the
//! layouts the integer kernels read (convolutions: OHWI, input channels
//! padded to a multiple of 4; fully connected: blocks of 16 units × words
//! of 4 inputs) and their bias folded with the input zero point
//! (`kiln_format::Op::QConvPacked`, `Op::QFullyConnectedPacked`), so no run
//! pays for it. Same output bytes either way. Left as they are: depthwise
//! convolutions, non-constant weights, shapes the kernel cannot lay out,
//! and layers whose padding would grow the artifact (convolution input
//! channels off a multiple of 4; fully connected tails adding more than an
//! eighth), which are small and pack per call. A compile for a
//! microcontroller (`Options::lean_scratch`) skips both passes: its
//! scratch-free kernels read the weights as they are.

use crate::ir::Graph;
use kiln_format::{DType, Op};
use kiln_kernels::conv::Conv2d;
use kiln_kernels::quant::QFullyConnected;

/// Rewrites every packable `QConv`; returns how many.
pub fn pack_int8_conv(g: &mut Graph) -> usize {
    let mut packed = 0;
    for n in 0..g.nodes.len() {
        let Op::QConv {
            window,
            group,
            x_zp,
            y_zp,
            act_min,
            act_max,
        } = g.nodes[n].op.clone()
        else {
            continue;
        };
        let node = &g.nodes[n];
        let (Some(Some(x)), Some(Some(w)), Some(Some(y))) = (
            node.inputs.first(),
            node.inputs.get(1),
            node.outputs.first(),
        ) else {
            continue;
        };
        let bias = node.inputs.get(2).copied().flatten();
        let (xt, wt, yt) = (&g.tensors[*x], &g.tensors[*w], &g.tensors[*y]);
        let (Some(wd), &[nb, c, h, wi], &[m, cg, kh, kw], &[_, _, oh, ow]) = (
            wt.data.clone().filter(|_| wt.dtype == DType::I8),
            &xt.shape[..],
            &wt.shape[..],
            &yt.shape[..],
        ) else {
            continue;
        };
        let Some(bias_vals) = const_bias(g, bias, m) else {
            continue;
        };
        let p = Conv2d {
            n: nb,
            c,
            h,
            w: wi,
            m,
            kh,
            kw,
            oh,
            ow,
            group: group as usize,
            stride: window.strides.map(|v| v as usize),
            dilation: window.dilations.map(|v| v as usize),
            pad: window.pads.map(|v| v as usize),
        };
        let Some(len) = kiln_kernels::quant::conv2d_i8_packable(&p, x_zp) else {
            continue;
        };
        // Channel counts off a multiple of 4 would store padding (up to 4x
        // the weights of a 1-channel first layer); those layers are small
        // and pack per call instead.
        if cg * p.group != c || cg % 4 != 0 || wd.len() != m * cg * kh * kw {
            continue;
        }
        let w8: Vec<i8> = wd.iter().map(|&b| b as i8).collect();
        let (mut out, mut fold) = (vec![0i8; len], vec![0i32; m]);
        kiln_kernels::quant::conv2d_i8_pack(
            &p,
            x_zp,
            &w8,
            bias_vals.as_deref(),
            &mut out,
            &mut fold,
        );
        let cpad = len / (m * kh * kw).max(1);
        let op = Op::QConvPacked {
            window,
            group,
            x_zp,
            y_zp,
            act_min,
            act_max,
        };
        install(g, n, op, vec![m, kh, kw, cpad], &out, &fold);
        packed += 1;
    }
    packed
}

/// Makes node `n` the packed `op`: packed weights (`shape`) as input 1,
/// the folded bias as input 2.
fn install(g: &mut Graph, n: usize, op: Op, shape: Vec<usize>, packed: &[i8], fold: &[i32]) {
    let name = g.nodes[n].name.clone();
    let bytes = packed.iter().map(|&v| v as u8).collect();
    let wid = g.add_const(format!("{name}:w_packed"), DType::I8, shape, bytes);
    let fid = g.const_i32(format!("{name}:bias_folded"), vec![fold.len()], fold);
    let node = &mut g.nodes[n];
    node.op = op;
    if node.inputs.len() < 3 {
        node.inputs.resize(3, None);
    }
    node.inputs[1] = Some(wid);
    node.inputs[2] = Some(fid);
}

/// The bias of a layer with `n` outputs: `Some(None)` when it has none,
/// `Some(Some(values))` for a constant int32 bias, `None` (leave the layer
/// unpacked) for anything else.
fn const_bias(g: &Graph, bias: Option<usize>, n: usize) -> Option<Option<Vec<i32>>> {
    match bias {
        None => Some(None),
        Some(b) => const_i32s(g, b, n).map(Some),
    }
}

/// The constant i32 values of tensor `t` when it holds `n` of them.
fn const_i32s(g: &Graph, t: usize, n: usize) -> Option<Vec<i32>> {
    match (&g.tensors[t].data, g.tensors[t].dtype) {
        (Some(d), DType::I32) if d.len() == 4 * n => Some(
            d.chunks_exact(4)
                .map(|v| i32::from_le_bytes([v[0], v[1], v[2], v[3]]))
                .collect(),
        ),
        _ => None,
    }
}

/// Rewrites every `QFullyConnected` with constant weights (and bias) whose
/// packing pads little as `QFullyConnectedPacked`; returns how many.
pub fn pack_int8_fc(g: &mut Graph) -> usize {
    let mut packed = 0;
    for n in 0..g.nodes.len() {
        let Op::QFullyConnected {
            x_zp,
            y_zp,
            act_min,
            act_max,
        } = g.nodes[n].op.clone()
        else {
            continue;
        };
        let node = &g.nodes[n];
        let (Some(Some(x)), Some(Some(w))) = (node.inputs.first(), node.inputs.get(1)) else {
            continue;
        };
        let bias = node.inputs.get(2).copied().flatten();
        let (xt, wt) = (&g.tensors[*x], &g.tensors[*w]);
        let (Some(wd), &[rows, depth], &[units, wdepth]) = (
            wt.data.clone().filter(|_| wt.dtype == DType::I8),
            &xt.shape[..],
            &wt.shape[..],
        ) else {
            continue;
        };
        let p = QFullyConnected {
            rows,
            depth,
            units,
            x_zp,
            y_zp,
            act_min,
            act_max,
        };
        let Some(len) = kiln_kernels::quant::fully_connected_i8_packable(&p) else {
            continue;
        };
        // Blocks of 16 units and words of 4 pad the tails: where that
        // would grow the weights by more than an eighth (narrow or tiny
        // layers, which are cheap anyway), the layer stays unpacked.
        if wdepth != depth || wd.len() != units * depth || len > wd.len() + wd.len() / 8 {
            continue;
        }
        let Some(bias_vals) = const_bias(g, bias, units) else {
            continue;
        };
        let w8: Vec<i8> = wd.iter().map(|&b| b as i8).collect();
        let (mut out, mut fold) = (vec![0i8; len], vec![0i32; units]);
        kiln_kernels::quant::fully_connected_i8_pack(
            &p,
            &w8,
            bias_vals.as_deref(),
            &mut out,
            &mut fold,
        );
        let op = Op::QFullyConnectedPacked {
            x_zp,
            y_zp,
            act_min,
            act_max,
        };
        let shape = vec![units.div_ceil(16), depth.div_ceil(4), 16, 4];
        install(g, n, op, shape, &out, &fold);
        packed += 1;
    }
    packed
}
