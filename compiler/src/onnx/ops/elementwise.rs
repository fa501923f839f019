//! Element-wise ops: unary, binary with broadcasting, variadic, Where, Cast, Clip.

use super::broadcast;
use crate::error::Result;
use crate::onnx::{Attrs, Ctx, Registry};
use kiln_format::{Binary, DType, Op, Unary};
use tract_onnx::pb::NodeProto;

pub(super) fn register(r: &mut Registry) {
    for name in [
        "Relu",
        "Sigmoid",
        "Tanh",
        "Exp",
        "Log",
        "Neg",
        "Abs",
        "Sqrt",
        "Reciprocal",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Sin",
        "Cos",
        "Tan",
        "Asin",
        "Acos",
        "Atan",
        "Sinh",
        "Cosh",
        "Asinh",
        "Acosh",
        "Atanh",
        "Erf",
        "Softplus",
        "Softsign",
        "Not",
        "IsNaN",
        "IsInf",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Celu",
        "HardSigmoid",
        "HardSwish",
        "ThresholdedRelu",
        "Mish",
        "Gelu",
        "Shrink",
    ] {
        r.insert("", name, unary);
    }
    for name in [
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Mod",
        "Equal",
        "Less",
        "LessOrEqual",
        "Greater",
        "GreaterOrEqual",
        "And",
        "Or",
        "Xor",
        "BitShift",
        "BitwiseAnd",
        "BitwiseOr",
        "BitwiseXor",
        "PRelu",
    ] {
        r.insert("", name, binary);
    }
    for name in ["Max", "Min", "Sum", "Mean"] {
        r.insert("", name, variadic);
    }
    r.insert("", "Where", where_);
    r.insert("", "Cast", cast);
    r.insert("", "CastLike", cast);
    r.insert("", "Clip", clip);
    r.insert("", "Identity", identity);
    r.insert("", "Dropout", identity);
}

fn unary_of(cx: &Ctx, node: &NodeProto) -> Result<Unary> {
    let a = Attrs::new(node);
    Ok(match node.op_type.as_str() {
        "Relu" => Unary::Relu,
        "Sigmoid" => Unary::Sigmoid,
        "Tanh" => Unary::Tanh,
        "Exp" => Unary::Exp,
        "Log" => Unary::Log,
        "Neg" => Unary::Neg,
        "Abs" => Unary::Abs,
        "Sqrt" => Unary::Sqrt,
        "Reciprocal" => Unary::Reciprocal,
        "Floor" => Unary::Floor,
        "Ceil" => Unary::Ceil,
        "Round" => Unary::Round,
        "Sign" => Unary::Sign,
        "Sin" => Unary::Sin,
        "Cos" => Unary::Cos,
        "Tan" => Unary::Tan,
        "Asin" => Unary::Asin,
        "Acos" => Unary::Acos,
        "Atan" => Unary::Atan,
        "Sinh" => Unary::Sinh,
        "Cosh" => Unary::Cosh,
        "Asinh" => Unary::Asinh,
        "Acosh" => Unary::Acosh,
        "Atanh" => Unary::Atanh,
        "Erf" => Unary::Erf,
        "Softplus" => Unary::Softplus,
        "Softsign" => Unary::Softsign,
        "Not" => Unary::Not,
        "IsNaN" => Unary::IsNaN,
        "IsInf" => Unary::IsInf {
            pos: a.int("detect_positive", 1) != 0,
            neg: a.int("detect_negative", 1) != 0,
        },
        "LeakyRelu" => Unary::LeakyRelu {
            alpha: a.float("alpha", 0.01),
        },
        "Elu" => Unary::Elu {
            alpha: a.float("alpha", 1.0),
        },
        "Selu" => Unary::Selu {
            alpha: a.float("alpha", 1.673_263_2),
            gamma: a.float("gamma", 1.050_701),
        },
        "Celu" => Unary::Celu {
            alpha: a.float("alpha", 1.0),
        },
        "HardSigmoid" => Unary::HardSigmoid {
            alpha: a.float("alpha", 0.2),
            beta: a.float("beta", 0.5),
        },
        "HardSwish" => Unary::HardSwish,
        "ThresholdedRelu" => Unary::ThresholdedRelu {
            alpha: a.float("alpha", 1.0),
        },
        "Mish" => Unary::Mish,
        "Gelu" => Unary::Gelu {
            tanh_approx: a.string("approximate").as_deref() == Some("tanh"),
        },
        "Shrink" => Unary::Shrink {
            bias: a.float("bias", 0.0),
            lambd: a.float("lambd", 0.5),
        },
        other => return Err(cx.err(node, format!("{other} is not a unary op"))),
    })
}

fn unary(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let u = unary_of(cx, node)?;
    let x = cx.input(node, 0)?;
    let dt = cx.dtype(x);
    let out_dt = match u {
        Unary::Not => {
            if dt != DType::Bool {
                return Err(cx.err(node, "Not needs a bool input"));
            }
            DType::Bool
        }
        Unary::IsNaN | Unary::IsInf { .. } => DType::Bool,
        Unary::Neg | Unary::Abs | Unary::Sign | Unary::Relu
            if matches!(dt, DType::I64 | DType::I32) =>
        {
            dt
        }
        _ => {
            if dt != DType::F32 {
                return Err(cx.err(
                    node,
                    format!("{} inputs are not supported (float32 only)", dt),
                ));
            }
            DType::F32
        }
    };
    if matches!(u, Unary::IsNaN | Unary::IsInf { .. }) && dt != DType::F32 {
        return Err(cx.err(
            node,
            format!("{dt} inputs are not supported (float32 only)"),
        ));
    }
    let s = cx.shape(x);
    cx.emit(node, Op::Unary(u), vec![Some(x)], vec![(out_dt, s)])?;
    Ok(())
}

fn binary_of(cx: &Ctx, node: &NodeProto) -> Result<Binary> {
    let a = Attrs::new(node);
    Ok(match node.op_type.as_str() {
        "Add" | "Sum" => Binary::Add,
        "Sub" => Binary::Sub,
        "Mul" => Binary::Mul,
        "Div" => Binary::Div,
        "Pow" => Binary::Pow,
        "Max" => Binary::Max,
        "Min" => Binary::Min,
        "Mod" => Binary::Mod {
            fmod: a.int("fmod", 0) != 0,
        },
        "Equal" => Binary::Equal,
        "Less" => Binary::Less,
        "LessOrEqual" => Binary::LessOrEqual,
        "Greater" => Binary::Greater,
        "GreaterOrEqual" => Binary::GreaterOrEqual,
        "And" => Binary::And,
        "Or" => Binary::Or,
        "Xor" => Binary::Xor,
        "BitShift" => match a.string("direction").as_deref() {
            Some("LEFT") => Binary::BitShiftLeft,
            _ => Binary::BitShiftRight,
        },
        "BitwiseAnd" => Binary::BitAnd,
        "BitwiseOr" => Binary::BitOr,
        "BitwiseXor" => Binary::BitXor,
        "PRelu" => Binary::PRelu,
        other => return Err(cx.err(node, format!("{other} is not a binary op"))),
    })
}

fn binary(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let b = binary_of(cx, node)?;
    let x = cx.input(node, 0)?;
    let y = cx.input(node, 1)?;
    let (dx, dy) = (cx.dtype(x), cx.dtype(y));
    let ints = [
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
    ];
    let ok = match b {
        Binary::And | Binary::Or | Binary::Xor => dx == DType::Bool && dy == DType::Bool,
        Binary::Equal => dx == dy && (dx == DType::F32 || dx == DType::Bool || ints.contains(&dx)),
        Binary::Less | Binary::LessOrEqual | Binary::Greater | Binary::GreaterOrEqual => {
            dx == dy && (dx == DType::F32 || ints.contains(&dx))
        }
        Binary::BitShiftLeft
        | Binary::BitShiftRight
        | Binary::BitAnd
        | Binary::BitOr
        | Binary::BitXor => dx == dy && ints.contains(&dx),
        Binary::Pow | Binary::PRelu => dx == DType::F32 && dy == DType::F32,
        _ => dx == dy && (dx == DType::F32 || ints.contains(&dx)),
    };
    if !ok {
        return Err(cx.err(
            node,
            format!("inputs of type {dx} and {dy} are not supported"),
        ));
    }
    let out_dt = match b {
        Binary::Equal
        | Binary::Less
        | Binary::LessOrEqual
        | Binary::Greater
        | Binary::GreaterOrEqual => DType::Bool,
        Binary::And | Binary::Or | Binary::Xor => DType::Bool,
        _ => dx,
    };
    let (sx, sy) = (cx.shape(x), cx.shape(y));
    let mut out = broadcast(&[sx.clone(), sy.clone()])
        .ok_or_else(|| cx.err(node, format!("shapes {sx:?} and {sy:?} do not broadcast")))?;
    if b == Binary::PRelu {
        // PRelu broadcasts the slope to x (unidirectional).
        if out != sx {
            return Err(cx.err(node, "slope does not broadcast to the input"));
        }
        out = sx;
    }
    cx.emit(
        node,
        Op::Binary(b),
        vec![Some(x), Some(y)],
        vec![(out_dt, out)],
    )?;
    Ok(())
}

fn variadic(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let ids: Vec<usize> = (0..node.input.len())
        .map(|i| cx.input(node, i))
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        return Err(cx.err(node, "needs at least one input"));
    }
    let dt = cx.dtype(ids[0]);
    if ids.len() == 2 || dt != DType::F32 {
        if ids.len() == 1 {
            return identity(cx, node);
        }
        if ids.len() == 2 && node.op_type != "Mean" {
            return binary(cx, node);
        }
        if dt != DType::F32 {
            return Err(cx.err(
                node,
                format!("{dt} inputs with more than two operands are not supported"),
            ));
        }
    }
    let shapes: Vec<Vec<usize>> = ids.iter().map(|&i| cx.shape(i)).collect();
    let out = broadcast(&shapes).ok_or_else(|| cx.err(node, "input shapes do not broadcast"))?;
    let (kind, mean) = match node.op_type.as_str() {
        "Max" => (Binary::Max, false),
        "Min" => (Binary::Min, false),
        "Mean" => (Binary::Add, true),
        _ => (Binary::Add, false),
    };
    cx.emit(
        node,
        Op::Variadic { kind, mean },
        ids.into_iter().map(Some).collect(),
        vec![(DType::F32, out)],
    )?;
    Ok(())
}

fn where_(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let (c, a, b) = (cx.input(node, 0)?, cx.input(node, 1)?, cx.input(node, 2)?);
    if cx.dtype(c) != DType::Bool || cx.dtype(a) != cx.dtype(b) {
        return Err(cx.err(node, "needs a bool condition and two values of one type"));
    }
    let out = broadcast(&[cx.shape(c), cx.shape(a), cx.shape(b)])
        .ok_or_else(|| cx.err(node, "shapes do not broadcast"))?;
    let dt = cx.dtype(a);
    cx.emit(
        node,
        Op::Where,
        vec![Some(c), Some(a), Some(b)],
        vec![(dt, out)],
    )?;
    Ok(())
}

fn cast(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let to = if node.op_type == "CastLike" {
        let t = cx.input(node, 1)?;
        cx.dtype(t)
    } else {
        let v = Attrs::new(node).int("to", 0);
        crate::onnx::dtype_of(v as i32)
            .ok_or_else(|| cx.err(node, format!("cast to element type {v} is not supported")))?
    };
    let s = cx.shape(x);
    if cx.dtype(x) == to {
        cx.bind(&node.output[0], x);
        return Ok(());
    }
    let saturate = Attrs::new(node).int("saturate", 1) != 0;
    cx.emit(
        node,
        Op::Cast { to, saturate },
        vec![Some(x)],
        vec![(to, s)],
    )?;
    Ok(())
}

fn clip(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let a = Attrs::new(node);
    let (mut min, mut max) = (f32::NEG_INFINITY, f32::INFINITY);
    if cx.opset < 11 {
        min = a.float("min", min);
        max = a.float("max", max);
    } else {
        if let Some(m) = cx.opt_input(node, 1)? {
            min = *cx.const_f32(node, m, "min")?.first().unwrap_or(&min);
        }
        if let Some(m) = cx.opt_input(node, 2)? {
            max = *cx.const_f32(node, m, "max")?.first().unwrap_or(&max);
        }
    }
    if cx.dtype(x) != DType::F32 {
        return Err(cx.err(node, "only float32 Clip is supported"));
    }
    let s = cx.shape(x);
    cx.emit(
        node,
        Op::Unary(Unary::Clip { min, max }),
        vec![Some(x)],
        vec![(DType::F32, s)],
    )?;
    Ok(())
}

fn identity(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    if node.op_type == "Dropout" {
        // Inference only: a training-mode Dropout would silently change results.
        let training = match cx.opt_input(node, 2)? {
            Some(t) => {
                cx.const_ints(node, t, "training_mode")?
                    .first()
                    .copied()
                    .unwrap_or(0)
                    != 0
            }
            None => false,
        };
        if training || Attrs::new(node).int("is_test", 1) == 0 && cx.opset < 7 {
            return Err(cx.err(
                node,
                "training-mode Dropout is not supported (export the model in eval mode)",
            ));
        }
    }
    cx.bind(&node.output[0], x);
    if node.op_type == "Dropout" && node.output.len() > 1 && !node.output[1].is_empty() {
        // Inference: the mask is all true.
        let s = cx.shape(x);
        let n: usize = s.iter().product();
        let m = cx.const_bytes(DType::Bool, s, vec![1u8; n]);
        cx.bind(&node.output[1], m);
    }
    Ok(())
}
