//! Recurrent ops: LSTM and GRU.

use crate::error::Result;
use crate::onnx::{Attrs, Ctx, Registry};
use kiln_format::{DType, Op, RnnAct, RnnDirection};
use tract_onnx::pb::NodeProto;

pub(super) fn register(r: &mut Registry) {
    r.insert("", "LSTM", lstm);
    r.insert("", "GRU", gru);
}

fn act(
    cx: &Ctx,
    node: &NodeProto,
    name: &str,
    alpha: Option<f32>,
    beta: Option<f32>,
) -> Result<RnnAct> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "sigmoid" => RnnAct::Sigmoid,
        "tanh" => RnnAct::Tanh,
        "relu" => RnnAct::Relu,
        "hardsigmoid" => RnnAct::HardSigmoid {
            alpha: alpha.unwrap_or(0.2),
            beta: beta.unwrap_or(0.5),
        },
        "affine" => RnnAct::Affine {
            alpha: alpha.unwrap_or(1.0),
            beta: beta.unwrap_or(0.0),
        },
        "leakyrelu" => RnnAct::LeakyRelu {
            alpha: alpha.unwrap_or(0.01),
        },
        "scaledtanh" => RnnAct::ScaledTanh {
            alpha: alpha.unwrap_or(1.0),
            beta: beta.unwrap_or(1.0),
        },
        "elu" => RnnAct::Elu {
            alpha: alpha.unwrap_or(1.0),
        },
        "softsign" => RnnAct::Softsign,
        "softplus" => RnnAct::Softplus,
        "thresholdedrelu" => RnnAct::ThresholdedRelu {
            alpha: alpha.unwrap_or(1.0),
        },
        other => return Err(cx.err(node, format!("activation '{other}' is not supported"))),
    })
}

/// Shared attribute handling; returns (hidden, direction, dirs, acts).
fn common(
    cx: &Ctx,
    node: &NodeProto,
    n_acts: usize,
    defaults: &[&str],
) -> Result<(usize, RnnDirection, usize, Vec<RnnAct>)> {
    let a = Attrs::new(node);
    if a.int("layout", 0) != 0 {
        return Err(cx.err(node, "layout = 1 (batch first) is not supported"));
    }
    let direction = match a.string("direction").as_deref().unwrap_or("forward") {
        "forward" => RnnDirection::Forward,
        "reverse" => RnnDirection::Reverse,
        "bidirectional" => RnnDirection::Bidirectional,
        d => return Err(cx.err(node, format!("direction '{d}' is not supported"))),
    };
    let dirs = if direction == RnnDirection::Bidirectional {
        2
    } else {
        1
    };
    let w = cx.input(node, 1)?;
    let hidden = match a.int("hidden_size", 0) {
        h if h > 0 => h as usize,
        _ => cx.shape(cx.input(node, 2)?).last().copied().unwrap_or(0),
    };
    let names = a.strings("activations").unwrap_or_default();
    let alphas = a.floats("activation_alpha").unwrap_or_default();
    let betas = a.floats("activation_beta").unwrap_or_default();
    let mut acts = vec![];
    for k in 0..n_acts {
        let name = names.get(k).map(String::as_str).unwrap_or(defaults[k]);
        acts.push(act(
            cx,
            node,
            name,
            alphas.get(k).copied(),
            betas.get(k).copied(),
        )?);
    }
    if dirs == 2 && names.len() == 2 * n_acts && names[..n_acts] != names[n_acts..] {
        return Err(cx.err(
            node,
            "different activations per direction are not supported",
        ));
    }
    let sw = cx.shape(w);
    if sw.len() != 3 || sw[0] != dirs || !sw[1].is_multiple_of(hidden.max(1)) {
        return Err(cx.err(
            node,
            format!("W shape {sw:?} disagrees with hidden_size {hidden}"),
        ));
    }
    Ok((hidden, direction, dirs, acts))
}

fn inputs(cx: &mut Ctx, node: &NodeProto, n: usize) -> Result<Vec<Option<usize>>> {
    let mut v: Vec<Option<usize>> = (0..n)
        .map(|i| cx.opt_input(node, i))
        .collect::<Result<_>>()?;
    for &i in v.iter().flatten() {
        if !matches!(cx.dtype(i), DType::F32 | DType::I32) {
            return Err(cx.err(node, "only float32 recurrent ops are supported"));
        }
    }
    // sequence_lens must be int32.
    if let Some(s) = v[4] {
        if cx.dtype(s) != DType::I32 {
            return Err(cx.err(node, "sequence_lens must be int32"));
        }
        // A constant full-length vector is the same as none.
        let seq = cx.shape(cx.input(node, 0)?)[0] as i64;
        if cx.t(s).ints().is_some_and(|l| l.iter().all(|&x| x == seq)) {
            v[4] = None;
        }
    }
    Ok(v)
}

fn outputs(
    cx: &Ctx,
    node: &NodeProto,
    seq: usize,
    dirs: usize,
    batch: usize,
    hidden: usize,
    n: usize,
) -> Vec<(DType, Vec<usize>)> {
    let _ = cx;
    let mut o = vec![(DType::F32, vec![seq, dirs, batch, hidden])];
    for _ in 1..n {
        o.push((DType::F32, vec![dirs, batch, hidden]));
    }
    o.truncate(node.output.len().max(1));
    o
}

fn lstm(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let (hidden, direction, dirs, acts) = common(cx, node, 3, &["Sigmoid", "Tanh", "Tanh"])?;
    let ins = inputs(cx, node, 8)?;
    let sx = cx.shape(cx.input(node, 0)?);
    if sx.len() != 3 {
        return Err(cx.err(node, "X must be [seq, batch, input]"));
    }
    let a = Attrs::new(node);
    let clip = a.has("clip").then(|| a.float("clip", 0.0));
    let op = Op::Lstm {
        hidden: hidden as u32,
        direction,
        batch_first: false,
        acts: [acts[0], acts[1], acts[2]],
        clip,
        input_forget: a.int("input_forget", 0) != 0,
    };
    let outs = outputs(cx, node, sx[0], dirs, sx[1], hidden, 3);
    emit_optional_outputs(cx, node, op, ins, outs)
}

fn gru(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let (hidden, direction, dirs, acts) = common(cx, node, 2, &["Sigmoid", "Tanh"])?;
    let ins = inputs(cx, node, 6)?;
    let sx = cx.shape(cx.input(node, 0)?);
    if sx.len() != 3 {
        return Err(cx.err(node, "X must be [seq, batch, input]"));
    }
    let a = Attrs::new(node);
    let clip = a.has("clip").then(|| a.float("clip", 0.0));
    let op = Op::Gru {
        hidden: hidden as u32,
        direction,
        batch_first: false,
        acts: [acts[0], acts[1]],
        linear_before_reset: a.int("linear_before_reset", 0) != 0,
        clip,
    };
    let outs = outputs(cx, node, sx[0], dirs, sx[1], hidden, 2);
    emit_optional_outputs(cx, node, op, ins, outs)
}

/// Emits a node whose unnamed ONNX outputs stay absent.
fn emit_optional_outputs(
    cx: &mut Ctx,
    node: &NodeProto,
    op: Op,
    ins: Vec<Option<usize>>,
    outs: Vec<(DType, Vec<usize>)>,
) -> Result<()> {
    // Outputs named "" are not requested; they are still computed into
    // tensors (the planner drops what nobody reads).
    let ids = cx.emit_raw(node, op, ins, outs, node.output.clone())?;
    for (k, &id) in ids.iter().enumerate() {
        if let Some(n) = node.output.get(k) {
            cx.bind(n, id);
        }
    }
    Ok(())
}
