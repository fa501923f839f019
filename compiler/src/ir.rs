//! The compiler's graph: owned, mutable, with static shapes.

use kiln_format::{DType, Op};
use std::sync::Arc;

pub type TensorId = usize;

/// A value in the graph. Constants carry their little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Option<Arc<Vec<u8>>>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    pub fn is_const(&self) -> bool {
        self.data.is_some()
    }

    /// Constant as f32 values (the tensor must be an f32 constant).
    pub fn f32s(&self) -> Option<Vec<f32>> {
        match (&self.data, self.dtype) {
            (Some(d), DType::F32) => Some(
                d.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Constant integer values as i64 (any integer or bool dtype).
    pub fn ints(&self) -> Option<Vec<i64>> {
        let d = self.data.as_ref()?;
        let s = self.dtype.size();
        let v = d
            .chunks_exact(s)
            .map(|c| match self.dtype {
                DType::I64 | DType::U64 => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
                DType::I32 => i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64,
                DType::U32 => u32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64,
                DType::I16 => i16::from_le_bytes(c.try_into().unwrap_or([0; 2])) as i64,
                DType::U16 => u16::from_le_bytes(c.try_into().unwrap_or([0; 2])) as i64,
                DType::I8 => c[0] as i8 as i64,
                DType::U8 | DType::Bool => c[0] as i64,
                DType::F32 => f32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64,
                DType::F64 => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i64,
                DType::F16 => {
                    half::f16::from_le_bytes(c.try_into().unwrap_or([0; 2])).to_f32() as i64
                }
            })
            .collect();
        Some(v)
    }
}

/// One op application.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<Option<TensorId>>,
    pub outputs: Vec<Option<TensorId>>,
    /// Source node name(s), for errors and profiles.
    pub name: String,
}

/// The real-number meaning of an integer tensor, `real = scale · (q -
/// zero_point)`, per tensor or per channel along `axis`: what an int8
/// TFLite model declares, kept for writing one back (`--target tflite`).
/// The kernels never read it (they run on the requantization multipliers
/// computed from it at import).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantParams {
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    pub axis: usize,
}

/// The whole graph. Nodes are kept in a valid execution order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub tensors: Vec<Tensor>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
    /// Quantization of the integer tensors an importer knows it for.
    pub quant: std::collections::HashMap<TensorId, QuantParams>,
}

impl Graph {
    pub fn add_tensor(&mut self, t: Tensor) -> TensorId {
        self.tensors.push(t);
        self.tensors.len() - 1
    }

    /// Appends node `name` computing a new computed tensor `out` (dtype,
    /// shape) from `inputs` with `op`; returns that tensor (e.g. a weight
    /// widened right before its reader).
    pub fn push_computed(
        &mut self,
        op: Op,
        inputs: Vec<Option<TensorId>>,
        out: (String, DType, Vec<usize>),
        name: String,
    ) -> TensorId {
        let (tname, dtype, shape) = out;
        let y = self.add_tensor(Tensor {
            name: tname,
            dtype,
            shape,
            data: None,
        });
        self.nodes.push(Node {
            op,
            inputs,
            outputs: vec![Some(y)],
            name,
        });
        y
    }

    pub fn add_const(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> TensorId {
        self.add_tensor(Tensor {
            name: name.into(),
            dtype,
            shape,
            data: Some(Arc::new(bytes)),
        })
    }

    pub fn const_f32(&mut self, name: impl Into<String>, shape: Vec<usize>, v: &[f32]) -> TensorId {
        self.add_const(
            name,
            DType::F32,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    pub fn const_i64(&mut self, name: impl Into<String>, shape: Vec<usize>, v: &[i64]) -> TensorId {
        self.add_const(
            name,
            DType::I64,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    pub fn const_i32(&mut self, name: impl Into<String>, shape: Vec<usize>, v: &[i32]) -> TensorId {
        self.add_const(
            name,
            DType::I32,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    /// Number of nodes reading each tensor, plus one per graph output use.
    pub fn consumers(&self) -> Vec<usize> {
        let mut c = vec![0; self.tensors.len()];
        for n in &self.nodes {
            for i in n.inputs.iter().flatten() {
                c[*i] += 1;
            }
        }
        for &o in &self.outputs {
            c[o] += 1;
        }
        c
    }

    /// The single node reading `t` (once), if exactly one does and `t` is
    /// not a graph output.
    pub fn sole_consumer(&self, t: TensorId) -> Option<usize> {
        if self.outputs.contains(&t) {
            return None;
        }
        let mut found = None;
        for (k, n) in self.nodes.iter().enumerate() {
            for &i in n.inputs.iter().flatten() {
                if i == t {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(k);
                }
            }
        }
        found
    }

    /// Index of the node producing each tensor.
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.tensors.len()];
        for (k, n) in self.nodes.iter().enumerate() {
            for o in n.outputs.iter().flatten() {
                p[*o] = Some(k);
            }
        }
        p
    }

    /// Op histogram by op name, sorted.
    pub fn op_histogram(&self) -> Vec<(String, usize)> {
        let mut h = std::collections::BTreeMap::new();
        for n in &self.nodes {
            *h.entry(op_label(&n.op)).or_insert(0) += 1;
        }
        h.into_iter().collect()
    }
}

/// A readable op label (element-wise ops by their function).
pub fn op_label(op: &Op) -> String {
    match op {
        Op::Unary(u) => format!("{u:?}")
            .split([' ', '{'])
            .next()
            .unwrap_or("Unary")
            .to_string(),
        Op::Binary(b) => format!("{b:?}")
            .split([' ', '{'])
            .next()
            .unwrap_or("Binary")
            .to_string(),
        Op::Reduce { kind, .. } => format!("Reduce{kind:?}"),
        Op::Gemm {
            act: kiln_format::Unary::Identity,
            ..
        } => "Gemm".into(),
        Op::Gemm { act, .. } => format!("Gemm+{}", op_label(&Op::Unary(*act))),
        Op::Conv {
            act: kiln_format::Unary::Identity,
            ..
        } => "Conv".into(),
        Op::Conv { act, .. } => format!("Conv+{}", op_label(&Op::Unary(*act))),
        Op::MatMul {
            act: kiln_format::Unary::Identity,
        } => "MatMul".into(),
        Op::MatMul { act } => format!("MatMul+{}", op_label(&Op::Unary(*act))),
        other => other.name().to_string(),
    }
}
