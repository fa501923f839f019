//! LSTM and GRU (ONNX layout 0: sequence-major).

use super::Io;
use crate::error::{EngineError, bad};
use kiln_format::{DType, Node, Op, RnnAct, RnnDirection, TensorInfo, TensorKind};
use kiln_kernels::rnn::{self as krnn, Act, Rnn};

fn act(a: &RnnAct) -> Act {
    match *a {
        RnnAct::Sigmoid => Act::Sigmoid,
        RnnAct::Tanh => Act::Tanh,
        RnnAct::Relu => Act::Relu,
        RnnAct::HardSigmoid { alpha, beta } => Act::HardSigmoid { alpha, beta },
        RnnAct::Affine { alpha, beta } => Act::Affine { alpha, beta },
        RnnAct::LeakyRelu { alpha } => Act::LeakyRelu { alpha },
        RnnAct::ScaledTanh { alpha, beta } => Act::ScaledTanh { alpha, beta },
        RnnAct::Elu { alpha } => Act::Elu { alpha },
        RnnAct::Softsign => Act::Softsign,
        RnnAct::Softplus => Act::Softplus,
        RnnAct::ThresholdedRelu { alpha } => Act::ThresholdedRelu { alpha },
    }
}

/// Shared shape checks; `gates` = 4 for LSTM, 3 for GRU.
fn params(
    hidden: usize,
    direction: RnnDirection,
    batch_first: bool,
    gates: usize,
    io: &Io<'_>,
) -> Result<Rnn, EngineError> {
    if batch_first {
        return Err(bad(
            "batch-first (layout = 1) recurrent ops are not supported",
        ));
    }
    let sx = io.input(0)?.shape();
    if sx.rank != 3 {
        return Err(bad("recurrent input must be [seq, batch, input]"));
    }
    let dirs = if direction == RnnDirection::Bidirectional {
        2
    } else {
        1
    };
    let p = Rnn {
        seq: sx.dims[0],
        batch: sx.dims[1],
        input: sx.dims[2],
        hidden,
        directions: dirs,
        reverse: direction == RnnDirection::Reverse,
        clip: None,
        cell_clip: None,
    };
    let (w, r) = (io.input(1)?.info.numel(), io.input(2)?.info.numel());
    if w != dirs * gates * hidden * p.input || r != dirs * gates * hidden * hidden {
        return Err(bad("recurrent weights disagree with hidden_size"));
    }
    let state = dirs * p.batch * hidden;
    let check = |i: usize, n: usize| -> Result<(), EngineError> {
        match io.opt_input(i) {
            Some(t) if t.info.numel() != n => {
                Err(bad("recurrent optional input has the wrong size"))
            }
            _ => Ok(()),
        }
    };
    check(3, dirs * 2 * gates * hidden)?;
    check(4, p.batch)?;
    check(5, state)?;
    if gates == 4 {
        check(6, state)?;
        check(7, dirs * 3 * hidden)?;
    }
    Ok(p)
}

fn f32_opt<'x>(io: &Io<'x>, i: usize) -> Result<Option<&'x [f32]>, EngineError> {
    io.opt_input(i).map(|t| t.f32()).transpose()
}

fn seq_lens<'x>(io: &Io<'x>, seq: usize) -> Result<Option<&'x [i32]>, EngineError> {
    match io.opt_input(4) {
        Some(t) => {
            let v = t.i32()?;
            if v.iter().any(|&l| l < 0 || l as usize > seq) {
                return Err(bad("sequence_lens outside [0, seq_length]"));
            }
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

fn check_out(t: &Option<crate::TensorMut<'_>>, n: usize) -> Result<(), EngineError> {
    match t {
        Some(t) if t.info.numel() != n => Err(bad("recurrent output has the wrong size")),
        _ => Ok(()),
    }
}

pub(crate) fn lstm(
    hidden: usize,
    direction: RnnDirection,
    batch_first: bool,
    acts: &[RnnAct; 3],
    clip: Option<f32>,
    input_forget: bool,
    cell_clip: Option<f32>,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let mut p = params(hidden, direction, batch_first, 4, io)?;
    p.clip = clip;
    if cell_clip.is_some_and(|c| c.is_nan() || c <= 0.0) {
        return Err(bad("LSTM cell_clip must be positive"));
    }
    p.cell_clip = cell_clip;
    let (x, w, r) = (
        io.input(0)?.f32()?,
        io.input(1)?.f32()?,
        io.input(2)?.f32()?,
    );
    let (b, sl, h0, c0, peep) = (
        f32_opt(io, 3)?,
        seq_lens(io, p.seq)?,
        f32_opt(io, 5)?,
        f32_opt(io, 6)?,
        f32_opt(io, 7)?,
    );
    let mut y = io.opt_output(0);
    let mut yh = io.opt_output(1);
    let mut yc = io.opt_output(2);
    let state = p.directions * p.batch * hidden;
    check_out(&y, p.seq * state)?;
    check_out(&yh, state)?;
    check_out(&yc, state)?;
    let need = krnn::lstm_scratch_len(&p);
    let ys = y.as_mut().map(|t| t.f32_mut()).transpose()?;
    let yhs = yh.as_mut().map(|t| t.f32_mut()).transpose()?;
    let ycs = yc.as_mut().map(|t| t.f32_mut()).transpose()?;
    let packed = io.packed();
    let scratch = io.scratch_f32(need)?;
    krnn::lstm_prepacked(
        &p,
        [act(&acts[0]), act(&acts[1]), act(&acts[2])],
        input_forget,
        x,
        [w, r, packed],
        b,
        sl,
        h0,
        c0,
        peep,
        ys,
        yhs,
        ycs,
        scratch,
    );
    Ok(())
}

/// The LSTM shape `Plan::prepack` repacks the weights of, for an LSTM node
/// with constant f32 `W` and `R` (see `kiln_kernels::rnn::lstm_prepack`).
pub(crate) fn lstm_prepack_params(
    tensor: impl Fn(u32) -> Option<TensorInfo>,
    node: &Node<'_>,
) -> Option<Rnn> {
    let (hidden, dirs) = match node.op {
        Op::Lstm {
            hidden,
            direction,
            batch_first: false,
            ..
        } => (
            hidden,
            if direction == RnnDirection::Bidirectional {
                2
            } else {
                1
            },
        ),
        Op::LstmCellClip { hidden, .. } => (hidden, 1),
        _ => return None,
    };
    let h = hidden as usize;
    let [x, w, r] = [0, 1, 2].map(|i| node.inputs.get(i).and_then(&tensor));
    let (x, w, r) = (x?, w?, r?);
    let p = Rnn {
        seq: x.dims[0] as usize,
        batch: x.dims[1] as usize,
        input: x.dims[2] as usize,
        hidden: h,
        directions: dirs,
        reverse: false,
        clip: None,
        cell_clip: None,
    };
    let weights = |t: &TensorInfo, n: usize| {
        t.kind == TensorKind::Const && t.dtype == DType::F32 && t.numel() == n
    };
    (x.rank == 3 && weights(&w, dirs * 4 * h * p.input) && weights(&r, dirs * 4 * h * h))
        .then_some(p)
}

pub(crate) fn gru(
    hidden: usize,
    direction: RnnDirection,
    batch_first: bool,
    acts: &[RnnAct; 2],
    linear_before_reset: bool,
    clip: Option<f32>,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let mut p = params(hidden, direction, batch_first, 3, io)?;
    p.clip = clip;
    let (x, w, r) = (
        io.input(0)?.f32()?,
        io.input(1)?.f32()?,
        io.input(2)?.f32()?,
    );
    let (b, sl, h0) = (f32_opt(io, 3)?, seq_lens(io, p.seq)?, f32_opt(io, 5)?);
    let mut y = io.opt_output(0);
    let mut yh = io.opt_output(1);
    let state = p.directions * p.batch * hidden;
    check_out(&y, p.seq * state)?;
    check_out(&yh, state)?;
    let need = krnn::gru_scratch_len(&p);
    let ys = y.as_mut().map(|t| t.f32_mut()).transpose()?;
    let yhs = yh.as_mut().map(|t| t.f32_mut()).transpose()?;
    let scratch = io.scratch_f32(need)?;
    krnn::gru(
        &p,
        [act(&acts[0]), act(&acts[1])],
        linear_before_reset,
        x,
        w,
        r,
        b,
        sl,
        h0,
        ys,
        yhs,
        scratch,
    );
    Ok(())
}

/// The shapes of a `QLstm` node (see `kiln_format::Op::QLstm`), checked
/// against its operands.
pub(crate) fn q_lstm_params(
    op: &kiln_format::Op,
    sx: &crate::tensor::Shape,
    sw: &crate::tensor::Shape,
    sr: &crate::tensor::Shape,
) -> Result<kiln_kernels::qlstm::QLstm, EngineError> {
    let &kiln_format::Op::QLstm {
        time_major,
        cifg,
        cell_log2,
        cell_clip,
        hidden_zp,
        state_zp,
    } = op
    else {
        return Err(bad("not a QLstm node"));
    };
    if sx.rank != 3 || sw.rank != 3 || sr.rank != 3 {
        return Err(bad("QLstm input and weights must be rank 3"));
    }
    let (input, cell) = (sx.dims[2], sw.dims[1]);
    if sw.dims[0] != 4 || sw.dims[2] != input || sr.dims[..3] != [4, cell, cell] {
        return Err(bad(
            "QLstm weights must be [4, cell, input] and [4, cell, cell]",
        ));
    }
    let int8 = -128..=127;
    if !(-15..=-9).contains(&cell_log2)
        || cell_clip < 0
        || !int8.contains(&hidden_zp)
        || !int8.contains(&state_zp)
    {
        return Err(bad(
            "QLstm cell scale must be 2^-15..2^-9, its clip non-negative and its zero points int8",
        ));
    }
    let (steps, batch) = if time_major {
        (sx.dims[0], sx.dims[1])
    } else {
        (sx.dims[1], sx.dims[0])
    };
    Ok(kiln_kernels::qlstm::QLstm {
        batch,
        steps,
        input,
        cell,
        time_major,
        cifg,
        cell_log2: i32::from(cell_log2),
        cell_clip,
        hidden_zp,
        state_zp,
    })
}

/// TFLite int8x8_16 LSTM (see `kiln_format::Op::QLstm`).
pub(crate) fn q_lstm(op: &kiln_format::Op, io: &mut Io<'_>) -> Result<(), EngineError> {
    use kiln_kernels::fixed::Multiplier;
    use kiln_kernels::qlstm as kq;
    let (x, w, r) = (io.input(0)?, io.input(1)?, io.input(2)?);
    let (bias, rq) = (io.input(3)?.i32()?, io.input(4)?.i32()?);
    let mut y = io.output(0)?;
    let p = q_lstm_params(op, &x.shape(), &w.shape(), &r.shape())?;
    let rows = p.batch * p.steps;
    let (xd, wd, rd) = (x.i8()?, w.i8()?, r.i8()?);
    let yd = y.i8_mut()?;
    if xd.len() != rows * p.input
        || wd.len() != 4 * p.cell * p.input
        || rd.len() != 4 * p.cell * p.cell
        || bias.len() != 8 * p.cell
        || rq.len() != 18
        || yd.len() != rows * p.cell
    {
        return Err(bad("QLstm operand sizes disagree with its shapes"));
    }
    let rq: [Multiplier; 9] = core::array::from_fn(|k| Multiplier {
        mantissa: rq[2 * k],
        shift: rq[2 * k + 1],
    });
    let need = kq::q_lstm_scratch_len(&p);
    // i16 scratch carved from the f32-aligned node scratch.
    let scratch: &mut [i16] = bytemuck::cast_slice_mut(io.scratch_f32(need.div_ceil(2))?);
    kq::q_lstm(&p, xd, wd, rd, bias, &rq, yd, scratch);
    Ok(())
}
