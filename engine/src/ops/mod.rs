//! Op dispatch. One file per op family; each exposes `run(op, io)`.

mod conv;
mod elementwise;
mod linalg;
mod ml;
pub(crate) use ml::validate_tree;
mod movement;
mod quant;
mod reduce;
mod rnn;

use crate::MAX_IO;
use crate::arena::Regions;
use crate::error::{EngineError, bad};
use crate::tensor::{Tensor, TensorMut};
use kiln_format::{Ids, Node, Op, TensorInfo, TensorKind, View};

/// A node's inputs, outputs and scratch. Tensors are resolved when an op
/// asks for them (after `run_node` checked every input resolves), not held
/// in arrays of `MAX_IO`: a microcontroller's stack pays for every byte of
/// this frame.
pub(crate) struct Io<'x> {
    view: &'x View<'x>,
    /// Decoded tensor table entries when the caller has them.
    tensors: &'x [TensorInfo],
    inputs: Ids<'x>,
    outputs: Ids<'x>,
    regions: Regions<'x>,
    scratch: &'x mut [u8],
    /// This node's weights repacked by `Plan::prepack` (empty if none).
    packed: &'x [f32],
}

impl<'x> Io<'x> {
    pub fn n_in(&self) -> usize {
        self.inputs.len()
    }

    pub fn n_out(&self) -> usize {
        self.outputs.len()
    }

    fn info(&self, id: u32) -> Result<TensorInfo, EngineError> {
        match self.tensors.get(id as usize) {
            Some(t) => Ok(*t),
            None => Ok(self.view.tensor(id as usize)?),
        }
    }

    /// Input `i`, `None` if the node has no such input or it is absent.
    fn resolve_input(&self, i: usize) -> Result<Option<Tensor<'x>>, EngineError> {
        let Some(id) = self.inputs.get(i).filter(|&id| id != Ids::ABSENT) else {
            return Ok(None);
        };
        let info = self.info(id)?;
        let data = match info.kind {
            TensorKind::Const => self.view.const_bytes(&info),
            TensorKind::Arena => self
                .regions
                .get(info.offset as usize, info.byte_len as usize)?,
        };
        Ok(Some(Tensor { info, data }))
    }

    /// A required input.
    pub fn input(&self, i: usize) -> Result<Tensor<'x>, EngineError> {
        self.resolve_input(i)?
            .ok_or(bad("a required input is missing"))
    }

    pub fn opt_input(&self, i: usize) -> Option<Tensor<'x>> {
        // `run_node` checked that every input resolves.
        self.resolve_input(i).ok().flatten()
    }

    /// Takes a required output (once).
    pub fn output(&mut self, i: usize) -> Result<TensorMut<'x>, EngineError> {
        self.opt_output(i)
            .ok_or(bad("a required output is missing"))
    }

    pub fn opt_output(&mut self, i: usize) -> Option<TensorMut<'x>> {
        let id = self.outputs.get(i).filter(|&id| id != Ids::ABSENT)?;
        let info = self.info(id).ok()?;
        let data = self.regions.take_mut(i)?;
        Some(TensorMut { info, data })
    }

    /// This node's repacked weights (see [`prepack`]).
    pub fn packed(&self) -> &'x [f32] {
        self.packed
    }

    /// All the node's scratch as f32, which must be at least `n`
    /// elements (for kernels that pick a path by how much they get).
    pub fn scratch_f32_at_least(&mut self, n: usize) -> Result<&mut [f32], EngineError> {
        if self.scratch.is_empty() && n == 0 {
            // A node with no scratch (its empty slice may sit anywhere).
            return Ok(&mut []);
        }
        let s: &mut [f32] = bytemuck::try_cast_slice_mut(&mut *self.scratch)
            .map_err(|_| bad("misaligned scratch"))?;
        if s.len() < n {
            return Err(bad("scratch is smaller than the op needs"));
        }
        Ok(s)
    }

    /// The node's scratch as f32, at least `n` elements.
    pub fn scratch_f32(&mut self, n: usize) -> Result<&mut [f32], EngineError> {
        if n == 0 {
            return Ok(&mut []);
        }
        let s: &mut [f32] = bytemuck::try_cast_slice_mut(&mut *self.scratch)
            .map_err(|_| bad("misaligned scratch"))?;
        s.get_mut(..n)
            .ok_or(bad("scratch is smaller than the op needs"))
    }
}

pub(crate) fn run_node<'x, const OPS: u128>(
    view: &'x View<'x>,
    tensors: &'x [TensorInfo],
    node: &'x Node<'x>,
    arena: &'x mut [u8],
    packed: &'x [f32],
) -> Result<(), EngineError> {
    let mut ranges = [(0usize, 0usize); MAX_IO + 1];
    let n_out = node.outputs.len();
    let mut io = Io {
        view,
        tensors,
        inputs: node.inputs,
        outputs: node.outputs,
        regions: Regions::empty(),
        scratch: &mut [],
        packed,
    };
    for (k, id) in node.outputs.iter().enumerate() {
        if id != Ids::ABSENT {
            let t = io.info(id)?;
            *ranges.get_mut(k).ok_or(bad("too many outputs"))? =
                (t.offset as usize, t.byte_len as usize);
        }
    }
    *ranges.get_mut(n_out).ok_or(bad("too many outputs"))? =
        (node.scratch_offset as usize, node.scratch_len as usize);
    io.regions.split(arena, &ranges[..n_out + 1])?;
    io.scratch = io.regions.take_mut(n_out).unwrap_or(&mut []);
    // Every input resolves: one overlapping an output is an error here,
    // never an optional input silently taken as absent.
    for k in 0..node.inputs.len() {
        io.resolve_input(k)?;
    }
    dispatch::<OPS>(&node.op, &mut io)
}

/// Floats `Plan::prepack` repacks for `node` (0: none on this build).
pub(crate) fn prepack_len(
    tensor: impl Fn(u32) -> Option<TensorInfo> + Copy,
    node: &Node<'_>,
) -> usize {
    if let Some((_, n, k)) = linalg::rows8_weights(tensor, node) {
        return n * k;
    }
    rnn::lstm_prepack_params(tensor, node).map_or(0, |p| kiln_kernels::rnn::lstm_prepack_len(&p))
}

/// Writes `node`'s repacked weights into `out` (`prepack_len` floats).
pub(crate) fn prepack(
    view: &View<'_>,
    tensor: impl Fn(u32) -> Option<TensorInfo> + Copy,
    node: &Node<'_>,
    out: &mut [f32],
) -> Result<(), EngineError> {
    let floats = |t: &TensorInfo| -> Result<&[f32], EngineError> {
        bytemuck::try_cast_slice(view.const_bytes(t)).map_err(|_| bad("misaligned weights"))
    };
    if let Some((b, n, k)) = linalg::rows8_weights(tensor, node) {
        kiln_kernels::gemm::pack_rows8(floats(&b)?, n, k, out);
    } else if let Some(p) = rnn::lstm_prepack_params(tensor, node) {
        let [w, r] = [1, 2].map(|i| node.inputs.get(i).and_then(tensor));
        let missing = || bad("LSTM weights W or R are missing");
        let (w, r) = (w.ok_or_else(missing)?, r.ok_or_else(missing)?);
        kiln_kernels::rnn::lstm_prepack(&p, floats(&w)?, floats(&r)?, out);
    }
    Ok(())
}

/// Runs `op` if its bit ([`Op::tag`]) is in `OPS`. Each arm's guard folds
/// to a constant (the variant, hence the tag, is known there), so a constant
/// set leaves the other ops' kernels out of the binary: firmware links only
/// the kernels its model uses.
#[inline(always)]
fn on<const OPS: u128>(op: &Op) -> bool {
    OPS & (1u128 << op.tag()) != 0
}

fn dispatch<const OPS: u128>(op: &Op, io: &mut Io<'_>) -> Result<(), EngineError> {
    match op {
        Op::Unary(u) if on::<OPS>(op) => elementwise::unary(u, io),
        Op::Binary(b) if on::<OPS>(op) => elementwise::binary(*b, io),
        Op::Variadic { kind, mean } if on::<OPS>(op) => elementwise::variadic(*kind, *mean, io),
        Op::Where if on::<OPS>(op) => elementwise::where_(io),
        Op::Cast { to, saturate } if on::<OPS>(op) => elementwise::cast(*to, *saturate, io),
        Op::Reshape if on::<OPS>(op) => movement::reshape(io),
        Op::Densify if on::<OPS>(op) => movement::densify(io),
        Op::Transpose { perm } if on::<OPS>(op) => movement::transpose(perm, io),
        Op::Concat { axis } if on::<OPS>(op) => movement::concat(*axis as usize, io),
        Op::Slice { start, step } if on::<OPS>(op) => movement::slice(start, step, io),
        Op::Split { axis } if on::<OPS>(op) => movement::split(*axis as usize, io),
        Op::Gather { axis } if on::<OPS>(op) => movement::gather(*axis as usize, io),
        Op::GatherElements { axis } if on::<OPS>(op) => {
            movement::gather_elements(*axis as usize, io)
        }
        Op::ScatterElements { axis } if on::<OPS>(op) => {
            movement::scatter_elements(*axis as usize, io)
        }
        Op::Pad { mode, pads, value } if on::<OPS>(op) => movement::pad(*mode, pads, *value, io),
        Op::Expand if on::<OPS>(op) => movement::expand(io),
        Op::Tile if on::<OPS>(op) => movement::tile(io),
        Op::DepthToSpace { block, crd } if on::<OPS>(op) => {
            movement::depth_to_space(*block as usize, *crd, io)
        }
        Op::SpaceToDepth { block } if on::<OPS>(op) => {
            movement::space_to_depth(*block as usize, io)
        }
        Op::Trilu { upper, k } if on::<OPS>(op) => movement::trilu(*upper, *k, io),
        Op::OneHot { axis } if on::<OPS>(op) => movement::one_hot(*axis as usize, io),
        Op::Gemm {
            trans_a,
            trans_b,
            alpha,
            beta,
            act,
        } if on::<OPS>(op) => linalg::gemm(*trans_a, *trans_b, *alpha, *beta, act, io),
        Op::MatMul { act } if on::<OPS>(op) => linalg::matmul(act, io),
        Op::Conv { window, group, act } if on::<OPS>(op) => {
            conv::conv(window, *group as usize, act, io)
        }
        Op::ConvTranspose { window, group } if on::<OPS>(op) => {
            conv::conv_transpose(window, *group as usize, io)
        }
        Op::MaxPool { window } if on::<OPS>(op) => conv::max_pool(window, io),
        Op::AveragePool {
            window,
            count_include_pad,
        } if on::<OPS>(op) => conv::avg_pool(window, *count_include_pad, io),
        Op::LpPool { window, p } if on::<OPS>(op) => conv::lp_pool(window, *p, io),
        Op::GlobalAveragePool if on::<OPS>(op) => conv::global_pool(false, io),
        Op::GlobalMaxPool if on::<OPS>(op) => conv::global_pool(true, io),
        Op::Softmax {
            axis,
            coerce_2d,
            log,
        } if on::<OPS>(op) => reduce::softmax(*axis as usize, *coerce_2d, *log, io),
        Op::Reduce { kind, axes } if on::<OPS>(op) => reduce::reduce(*kind, *axes, io),
        Op::ArgMax {
            axis,
            select_last,
            min,
        } if on::<OPS>(op) => reduce::argmax(*axis as usize, *select_last, *min, io),
        Op::LayerNorm { axis, epsilon } if on::<OPS>(op) => {
            reduce::layer_norm(*axis as usize, *epsilon, io)
        }
        Op::BatchNorm { epsilon } if on::<OPS>(op) => reduce::batch_norm(*epsilon, io),
        Op::InstanceNorm { epsilon } if on::<OPS>(op) => reduce::instance_norm(*epsilon, io),
        Op::LRN {
            size,
            alpha,
            beta,
            bias,
        } if on::<OPS>(op) => reduce::lrn(*size as usize, *alpha, *beta, *bias, io),
        Op::CumSum {
            axis,
            exclusive,
            reverse,
        } if on::<OPS>(op) => reduce::cumsum(*axis as usize, *exclusive, *reverse, io),
        Op::Lstm {
            hidden,
            direction,
            batch_first,
            acts,
            clip,
            input_forget,
        } if on::<OPS>(op) => rnn::lstm(
            *hidden as usize,
            *direction,
            *batch_first,
            acts,
            *clip,
            *input_forget,
            None,
            io,
        ),
        Op::LstmCellClip {
            hidden,
            acts,
            cell_clip,
        } if on::<OPS>(op) => rnn::lstm(
            *hidden as usize,
            kiln_format::RnnDirection::Forward,
            false,
            acts,
            None,
            false,
            Some(*cell_clip),
            io,
        ),
        Op::Gru {
            hidden,
            direction,
            batch_first,
            acts,
            linear_before_reset,
            clip,
        } if on::<OPS>(op) => rnn::gru(
            *hidden as usize,
            *direction,
            *batch_first,
            acts,
            *linear_before_reset,
            *clip,
            io,
        ),
        Op::Normalizer { norm } if on::<OPS>(op) => ml::normalizer(*norm, io),
        Op::TreeEnsemble {
            aggregate,
            post,
            binary_single_score,
        } if on::<OPS>(op) => ml::tree_ensemble(*aggregate, *post, *binary_single_score, io),
        Op::ArgMaxLabel if on::<OPS>(op) => ml::argmax_label(io),
        Op::PostTransform { post } if on::<OPS>(op) => ml::post_transform(*post, io),
        Op::Dequantize { axis } if on::<OPS>(op) => quant::dequantize(*axis as usize, io),
        Op::Quantize { axis } if on::<OPS>(op) => quant::quantize(*axis as usize, io),
        Op::QLinearConv { window, group } if on::<OPS>(op) => {
            quant::qlinear_conv(window, *group as usize, io)
        }
        Op::QFullyConnected {
            x_zp,
            y_zp,
            act_min,
            act_max,
        }
        | Op::QFullyConnectedPacked {
            x_zp,
            y_zp,
            act_min,
            act_max,
        } if on::<OPS>(op) => {
            act_range_ok(*act_min, *act_max)?;
            let packed = matches!(op, Op::QFullyConnectedPacked { .. });
            quant::q_fully_connected([*x_zp, *y_zp, *act_min, *act_max], packed, io)
        }
        Op::QSoftmax { y_scale, y_zp } if on::<OPS>(op) => quant::q_softmax(*y_scale, *y_zp, io),
        Op::QLookup if on::<OPS>(op) => quant::q_lookup(io),
        Op::HybridConv {
            window,
            group,
            act_min,
            act_max,
        } if on::<OPS>(op) => conv::hybrid_conv(window, *group as usize, [*act_min, *act_max], io),
        Op::QLstm { .. } if on::<OPS>(op) => rnn::q_lstm(op, io),
        Op::QAdd {
            a_zp,
            b_zp,
            y_zp,
            a_rq,
            b_rq,
            y_rq,
            act_min,
            act_max,
        } if on::<OPS>(op) => act_range_ok(*act_min, *act_max).and_then(|()| {
            quant::q_add(
                &kiln_kernels::quant::QAdd {
                    a_zp: *a_zp,
                    b_zp: *b_zp,
                    y_zp: *y_zp,
                    a_rq: *a_rq,
                    b_rq: *b_rq,
                    y_rq: *y_rq,
                    act_min: *act_min,
                    act_max: *act_max,
                },
                io,
            )
        }),
        Op::DynamicQuantize if on::<OPS>(op) => quant::dynamic_quantize(io),
        Op::QMatMul { linear } if on::<OPS>(op) => quant::q_matmul(*linear, io),
        Op::ConvInteger { window, group } if on::<OPS>(op) => {
            quant::conv_integer(window, *group as usize, io)
        }
        Op::DynFullyConnected { act } if on::<OPS>(op) => quant::dyn_fully_connected(act, io),
        Op::QAvgPool {
            window,
            act_min,
            act_max,
        } if on::<OPS>(op) => {
            act_range_ok(*act_min, *act_max)?;
            conv::q_avg_pool(window, *act_min, *act_max, io)
        }
        Op::QConv {
            window,
            group,
            x_zp,
            y_zp,
            act_min,
            act_max,
        }
        | Op::QConvPacked {
            window,
            group,
            x_zp,
            y_zp,
            act_min,
            act_max,
        } if on::<OPS>(op) => act_range_ok(*act_min, *act_max).and_then(|()| {
            let q = kiln_kernels::quant::QOut {
                x_zp: *x_zp,
                y_zp: *y_zp,
                act_min: *act_min,
                act_max: *act_max,
            };
            let packed = matches!(op, Op::QConvPacked { .. });
            quant::q_conv(window, *group as usize, q, packed, io)
        }),
        _ => Err(bad("op not built into this runtime (outside its op set)")),
    }
}

/// An int8 op's output clamp must be a non-empty range.
fn act_range_ok(lo: i32, hi: i32) -> Result<(), EngineError> {
    if lo <= hi {
        Ok(())
    } else {
        Err(bad(
            "int8 op with an empty activation range (act_min > act_max)",
        ))
    }
}

/// Checks that two element counts agree.
pub(crate) fn same_len(a: usize, b: usize) -> Result<(), EngineError> {
    if a == b {
        Ok(())
    } else {
        Err(bad("tensor sizes disagree with the op"))
    }
}

/// Scratch bytes `op` needs for the given input and output tensors (the
/// compiler reserves this much in the arena for the node). `lean`: the
/// least the kernels take, for microcontroller arenas (int8 convolutions
/// and fully connected layers then take their scratch-free paths:
/// `kiln_kernels::compact` in firmware, the references elsewhere); else
/// what every fast path needs.
pub fn scratch_bytes(
    op: &Op,
    ins: &[Option<kiln_format::TensorInfo>],
    outs: &[Option<kiln_format::TensorInfo>],
    lean: bool,
) -> Result<usize, EngineError> {
    use crate::tensor::Shape;
    let shape = |v: &[Option<kiln_format::TensorInfo>], i: usize| -> Result<Shape, EngineError> {
        v.get(i)
            .copied()
            .flatten()
            .map(|t| Shape::of(&t))
            .ok_or(bad("a required tensor is missing"))
    };
    let elems = match op {
        Op::Conv { window, group, .. } | Op::HybridConv { window, group, .. } => {
            let p = conv::conv_params(
                window,
                *group as usize,
                &shape(ins, 0)?,
                &shape(ins, 1)?,
                &shape(outs, 0)?,
            )?;
            if matches!(op, Op::Conv { .. }) {
                kiln_kernels::conv::conv2d_scratch_len(&p)
            } else {
                // The quantized batch entry (i8) in whole f32 elements.
                kiln_kernels::quant::hybrid_conv2d_scratch_len(&p).div_ceil(4)
            }
        }

        Op::Lstm { hidden, .. } | Op::LstmCellClip { hidden, .. } | Op::Gru { hidden, .. } => {
            let sx = shape(ins, 0)?;
            if sx.rank != 3 {
                return Err(bad("recurrent input must be rank 3"));
            }
            let bidirectional = matches!(
                op,
                Op::Lstm { direction, .. } | Op::Gru { direction, .. }
                    if *direction == kiln_format::RnnDirection::Bidirectional
            );
            let p = kiln_kernels::rnn::Rnn {
                seq: sx.dims[0],
                batch: sx.dims[1],
                input: sx.dims[2],
                hidden: *hidden as usize,
                directions: if bidirectional { 2 } else { 1 },
                reverse: false,
                clip: None,
                cell_clip: None,
            };
            if matches!(op, Op::Gru { .. }) {
                kiln_kernels::rnn::gru_scratch_len(&p)
            } else {
                kiln_kernels::rnn::lstm_scratch_len(&p)
            }
        }
        Op::QLstm { .. } => {
            let p = rnn::q_lstm_params(op, &shape(ins, 0)?, &shape(ins, 1)?, &shape(ins, 2)?)?;
            // The i16 scratch in whole f32 elements.
            kiln_kernels::qlstm::q_lstm_scratch_len(&p).div_ceil(2)
        }
        Op::QConv { window, group, .. } | Op::QConvPacked { window, group, .. } => {
            let (sx, sw, sy) = (shape(ins, 0)?, shape(ins, 1)?, shape(outs, 0)?);
            if matches!(op, Op::QConvPacked { .. }) {
                let p = conv::packed_conv_params(window, *group as usize, &sx, &sw, &sy)?;
                kiln_kernels::quant::conv2d_i8_packed_scratch_len(&p)
            } else {
                let p = conv::conv_params(window, *group as usize, &sx, &sw, &sy)?;
                if lean {
                    0
                } else {
                    kiln_kernels::quant::conv2d_i8_scratch_len(&p)
                }
            }
        }
        Op::QFullyConnected { .. } | Op::QFullyConnectedPacked { .. } => {
            let (sx, sy) = (shape(ins, 0)?, shape(outs, 0)?);
            if sx.rank != 2 || sy.rank != 2 {
                return Err(bad("QFullyConnected operands must be 2-D"));
            }
            let p = kiln_kernels::quant::QFullyConnected {
                rows: sx.dims[0],
                depth: sx.dims[1],
                units: sy.dims[1],
                x_zp: 0,
                y_zp: 0,
                act_min: 0,
                act_max: 0,
            };
            if matches!(op, Op::QFullyConnectedPacked { .. }) {
                kiln_kernels::quant::fully_connected_i8_packed_scratch_len(&p)
            } else if lean {
                0
            } else {
                kiln_kernels::quant::fully_connected_i8_scratch_len(&p)
            }
        }
        Op::DynFullyConnected { .. } => shape(ins, 0)?.dims[1],
        _ => 0,
    };
    Ok(elems * 4)
}
