//! LSTM and GRU (ONNX layout 0: sequence-major).

use super::Io;
use crate::error::{EngineError, bad};
use kiln_format::{RnnAct, RnnDirection};
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
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let mut p = params(hidden, direction, batch_first, 4, io)?;
    p.clip = clip;
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
    let scratch = io.scratch_f32(need)?;
    krnn::lstm(
        &p,
        [act(&acts[0]), act(&acts[1]), act(&acts[2])],
        input_forget,
        x,
        w,
        r,
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
