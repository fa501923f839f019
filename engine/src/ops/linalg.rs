//! Gemm and MatMul.

use super::Io;
use super::elementwise::activate;
use crate::error::{EngineError, bad};
use kiln_format::{DType, Node, Op, TensorInfo, TensorKind, Unary};
use kiln_kernels::gemm::gemm as kgemm;

pub(crate) fn gemm(
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
    act: &Unary,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let a = io.input(0)?;
    let b = io.input(1)?;
    let c = io.opt_input(2);
    let mut y = io.output(0)?;
    let (sa, sb, sy) = (a.shape(), b.shape(), y.shape());
    if sa.rank != 2 || sb.rank != 2 || sy.rank != 2 {
        return Err(bad("Gemm needs rank-2 A, B and Y"));
    }
    let (m, k) = if trans_a {
        (sa.dims[1], sa.dims[0])
    } else {
        (sa.dims[0], sa.dims[1])
    };
    let (k2, n) = if trans_b {
        (sb.dims[1], sb.dims[0])
    } else {
        (sb.dims[0], sb.dims[1])
    };
    if k != k2 || sy.dims[0] != m || sy.dims[1] != n {
        return Err(bad("Gemm shapes disagree"));
    }
    let out = y.f32_mut()?;
    let mut beta_eff = 0.0;
    if let Some(c) = c
        && beta != 0.0
    {
        let sc = c.shape();
        let xc = c.f32()?;
        // C broadcasts to [m, n] (unidirectional).
        let (cr, cc) = match sc.rank {
            0 => (1, 1),
            1 => (1, sc.dims[0]),
            2 => (sc.dims[0], sc.dims[1]),
            _ => return Err(bad("Gemm C has rank above 2")),
        };
        if (cr != 1 && cr != m) || (cc != 1 && cc != n) {
            return Err(bad("Gemm C does not broadcast to [M, N]"));
        }
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] =
                    xc[(if cr == 1 { 0 } else { i }) * cc + if cc == 1 { 0 } else { j }];
            }
        }
        beta_eff = beta;
    }
    let packed = io.packed();
    if m == 1
        && !packed.is_empty()
        && alpha == 1.0
        && (beta_eff == 0.0 || beta_eff == 1.0)
        && packed.len() >= n * k
    {
        // B repacked by `Plan::prepack` (the same sums as the unpacked
        // one-row product: `alpha = 1`, `beta` 0 or 1).
        if beta_eff == 0.0 {
            out.fill(0.0);
        }
        kiln_kernels::gemm::gemv_rows8(n, k, a.f32()?, packed, out);
    } else {
        kgemm(
            m,
            n,
            k,
            alpha,
            a.f32()?,
            trans_a,
            b.f32()?,
            trans_b,
            beta_eff,
            out,
        );
    }
    activate(act, out)
}

/// The repacking [`Plan::prepack`](crate::Plan::prepack) does for node
/// `node`, if any: a one-row Gemm `x · Bᵀ` (alpha 1) with a constant f32
/// `B` of `n x k` that this build's [`kiln_kernels::gemm::rows8`] takes.
/// Returns B's record, `n` and `k`.
pub(crate) fn rows8_weights(
    tensor: impl Fn(u32) -> Option<TensorInfo>,
    node: &Node<'_>,
) -> Option<(TensorInfo, usize, usize)> {
    let Op::Gemm {
        trans_a: false,
        trans_b: true,
        alpha,
        ..
    } = node.op
    else {
        return None;
    };
    let (a, b) = (tensor(node.inputs.get(0)?)?, tensor(node.inputs.get(1)?)?);
    let (n, k) = (b.dims[0] as usize, b.dims[1] as usize);
    (alpha == 1.0
        && a.rank == 2
        && a.dims[0] == 1
        && a.dims[1] as usize == k
        && b.rank == 2
        && b.kind == TensorKind::Const
        && b.dtype == DType::F32
        && kiln_kernels::gemm::rows8(n, k))
    .then_some((b, n, k))
}

pub(crate) fn matmul(act: &Unary, io: &mut Io<'_>) -> Result<(), EngineError> {
    let a = io.input(0)?;
    let b = io.input(1)?;
    let bias = io.opt_input(2);
    let mut y = io.output(0)?;
    let (sa, sb, sy) = (a.shape(), b.shape(), y.shape());
    if sa.rank == 0 || sb.rank == 0 {
        return Err(bad("MatMul inputs must have rank >= 1"));
    }
    let (m, k) = if sa.rank == 1 {
        (1, sa.dims[0])
    } else {
        (sa.dims[sa.rank - 2], sa.dims[sa.rank - 1])
    };
    let (k2, n) = if sb.rank == 1 {
        (sb.dims[0], 1)
    } else {
        (sb.dims[sb.rank - 2], sb.dims[sb.rank - 1])
    };
    if k != k2 {
        return Err(bad("MatMul inner dimensions disagree"));
    }
    // Batch dims: everything before the matrix dims, broadcast.
    let ba = sa.rank.saturating_sub(2);
    let bb = sb.rank.saturating_sub(2);
    let out_mat = if sa.rank == 1 && sb.rank == 1 {
        0
    } else if sa.rank == 1 || sb.rank == 1 {
        1
    } else {
        2
    };
    if sy.rank < out_mat {
        return Err(bad("MatMul output rank too small"));
    }
    let by = sy.rank - out_mat;
    if by < ba.max(bb) {
        return Err(bad("MatMul output batch rank too small"));
    }
    let batch = sy.prod(0, by);
    if sy.numel() != batch * m * n {
        return Err(bad("MatMul output shape disagrees"));
    }
    let (xa, xb) = (a.f32()?, b.f32()?);
    let out = y.f32_mut()?;
    let bias = match bias {
        Some(t) => {
            let v = t.f32()?;
            if v.len() != n {
                return Err(bad("MatMul bias must have N elements"));
            }
            Some(v)
        }
        None => None,
    };
    for bi in 0..batch {
        // Map the output batch index to each input's batch index (broadcast).
        let mut rem = bi;
        let (mut ia, mut ib) = (0usize, 0usize);
        let (mut sta, mut stb) = (1usize, 1usize);
        for d in (0..by).rev() {
            let c = rem % sy.dims[d];
            rem /= sy.dims[d];
            let da = (d + ba).checked_sub(by);
            if let Some(da) = da {
                let n_a = sa.dims[da];
                if n_a != 1 && n_a != sy.dims[d] {
                    return Err(bad("MatMul batch dims do not broadcast"));
                }
                ia += if n_a == 1 { 0 } else { c } * sta;
                sta *= n_a;
            }
            if let Some(db) = (d + bb).checked_sub(by) {
                let n_b = sb.dims[db];
                if n_b != 1 && n_b != sy.dims[d] {
                    return Err(bad("MatMul batch dims do not broadcast"));
                }
                ib += if n_b == 1 { 0 } else { c } * stb;
                stb *= n_b;
            }
        }
        let am = &xa[ia * m * k..(ia + 1) * m * k];
        let bm = &xb[ib * k * n..(ib + 1) * k * n];
        let om = &mut out[bi * m * n..(bi + 1) * m * n];
        let beta = match bias {
            Some(bv) => {
                for row in om.chunks_exact_mut(n) {
                    row.copy_from_slice(bv);
                }
                1.0
            }
            None => 0.0,
        };
        kgemm(m, n, k, 1.0, am, false, bm, false, beta, om);
    }
    activate(act, out)
}
