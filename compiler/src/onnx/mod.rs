//! ONNX import: protobuf (through tract-onnx's generated types) → IR.
//!
//! Shapes are made static while importing (symbolic dims are resolved from
//! the options; a symbolic batch dim becomes 1 and the artifact is marked
//! per-sample batched). Every node whose inputs are all constants is folded
//! on the spot by the engine itself, so Shape/Gather/Concat chains that
//! compute reshape targets disappear before planning.

mod attrs;
mod ops;

pub use attrs::Attrs;

use crate::error::{CompileError, Result};
use crate::eval;
use crate::ir::{Graph, Node, Tensor, TensorId};
use kiln_format::{DType, Op};
use std::collections::HashMap;
use std::sync::Arc;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

/// An importer for one ONNX op type.
pub type Importer = fn(&mut Ctx, &pb::NodeProto) -> Result<()>;

/// The table of supported ops: `(domain, op_type) → importer`.
#[derive(Debug)]
pub struct Registry {
    map: HashMap<(&'static str, &'static str), Importer>,
}

impl Registry {
    pub fn insert(&mut self, domain: &'static str, op: &'static str, f: Importer) {
        self.map.insert((domain, op), f);
    }

    /// Every supported op, as `domain::Op` (domain omitted for ai.onnx).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .map
            .keys()
            .map(|(d, o)| {
                if d.is_empty() {
                    o.to_string()
                } else {
                    format!("{d}::{o}")
                }
            })
            .collect();
        v.sort();
        v
    }
}

/// The registry with every op family registered.
pub fn registry() -> Registry {
    let mut r = Registry {
        map: HashMap::new(),
    };
    ops::register_all(&mut r);
    r
}

/// A symbolic dimension as found in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicDim {
    pub input: String,
    pub axis: usize,
    pub name: String,
}

/// Import options.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Values for symbolic dims, by name (`"length" → 58`).
    pub dims: HashMap<String, usize>,
    /// Concrete input shapes by input name (override everything else).
    pub input_shapes: HashMap<String, Vec<usize>>,
}

/// Import state.
#[derive(Debug)]
pub struct Ctx {
    pub g: Graph,
    names: HashMap<String, TensorId>,
    pub opset: i64,
    pub ml_opset: i64,
    /// Graph input names whose dim 0 was symbolic (treated as batch, set to 1).
    pub batch_inputs: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub preprocessing: Vec<(String, String, String)>,
    /// Why dim 0 cannot be run per sample, when an importer knows (e.g. a
    /// Scan whose unrolled steps would be counted per sample).
    pub batch_unsafe: Option<String>,
    node_counter: usize,
}

/// Result of importing a model.
#[derive(Debug)]
pub struct Imported {
    pub graph: Graph,
    pub input_names: Vec<String>,
    pub output_names: Vec<String>,
    /// The symbolic name of the batch dim, when inputs had one.
    pub batch_name: Option<String>,
    pub producer: String,
    pub properties: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub preprocessing: Vec<(String, String, String)>,
    pub opset: i64,
    pub labels: HashMap<String, Vec<String>>,
    pub batch_unsafe: Option<String>,
}

pub(crate) fn dtype_of(t: i32) -> Option<DType> {
    DType::from_u8(u8::try_from(t).ok()?).filter(|_| t != DataType::String as i32)
}

/// Decodes an ONNX TensorProto into (dtype, shape, little-endian bytes).
pub fn tensor_from_proto(t: &pb::TensorProto) -> Result<(DType, Vec<usize>, Vec<u8>)> {
    let dt = dtype_of(t.data_type).ok_or_else(|| {
        CompileError::Invalid(format!(
            "tensor '{}' has unsupported element type {}",
            t.name, t.data_type
        ))
    })?;
    if !t.external_data.is_empty() {
        return Err(CompileError::Invalid(format!(
            "tensor '{}' uses external data, which is not supported",
            t.name
        )));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                CompileError::Invalid(format!("tensor '{}' has a negative dim", t.name))
            })
        })
        .collect::<Result<_>>()?;
    let n: usize = shape.iter().product();
    let bytes: Vec<u8> = if !t.raw_data.is_empty() {
        t.raw_data.clone()
    } else {
        match dt {
            DType::F32 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F64 => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::U64 => t.uint64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::U32 => t
                .uint64_data
                .iter()
                .flat_map(|v| (*v as u32).to_le_bytes())
                .collect(),
            DType::I32 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I16 | DType::U16 | DType::F16 => t
                .int32_data
                .iter()
                .flat_map(|v| (*v as u16).to_le_bytes())
                .collect(),
            DType::I8 | DType::U8 | DType::Bool => t.int32_data.iter().map(|v| *v as u8).collect(),
        }
    };
    if bytes.len() != n * dt.size() {
        return Err(CompileError::Invalid(format!(
            "tensor '{}' holds {} bytes but its shape {:?} of {} needs {}",
            t.name,
            bytes.len(),
            shape,
            dt,
            n * dt.size()
        )));
    }
    Ok((dt, shape, bytes))
}

impl Ctx {
    /// The tensor bound to an ONNX value name.
    pub fn get(&self, name: &str) -> Result<TensorId> {
        self.names.get(name).copied().ok_or_else(|| {
            CompileError::Invalid(format!("value '{name}' is used before it is defined"))
        })
    }

    /// Required input `i` of `node`.
    pub fn input(&self, node: &pb::NodeProto, i: usize) -> Result<TensorId> {
        match node.input.get(i) {
            Some(n) if !n.is_empty() => self.get(n),
            _ => Err(self.err(node, format!("input {i} is required"))),
        }
    }

    /// Optional input `i` (absent when missing or named "").
    pub fn opt_input(&self, node: &pb::NodeProto, i: usize) -> Result<Option<TensorId>> {
        match node.input.get(i) {
            Some(n) if !n.is_empty() => Ok(Some(self.get(n)?)),
            _ => Ok(None),
        }
    }

    pub fn t(&self, id: TensorId) -> &Tensor {
        &self.g.tensors[id]
    }

    pub fn shape(&self, id: TensorId) -> Vec<usize> {
        self.g.tensors[id].shape.clone()
    }

    pub fn dtype(&self, id: TensorId) -> DType {
        self.g.tensors[id].dtype
    }

    /// Integer values of a constant input (error if not constant).
    pub fn const_ints(&self, node: &pb::NodeProto, id: TensorId, what: &str) -> Result<Vec<i64>> {
        self.g.tensors[id].ints().ok_or_else(|| {
            self.err(
                node,
                format!("{what} must be a constant (computed at compile time)"),
            )
        })
    }

    pub fn const_f32(&self, node: &pb::NodeProto, id: TensorId, what: &str) -> Result<Vec<f32>> {
        let t = &self.g.tensors[id];
        if t.dtype == DType::F32 {
            t.f32s()
        } else {
            t.ints().map(|v| v.into_iter().map(|x| x as f32).collect())
        }
        .ok_or_else(|| self.err(node, format!("{what} must be a constant")))
    }

    pub fn err(&self, node: &pb::NodeProto, detail: impl Into<String>) -> CompileError {
        CompileError::Node {
            node: node_name(node),
            op: node.op_type.clone(),
            detail: detail.into(),
        }
    }

    /// Binds an ONNX output name to an existing tensor (no node emitted).
    pub fn bind(&mut self, name: &str, id: TensorId) {
        if !name.is_empty() {
            self.names.insert(name.to_string(), id);
        }
    }

    pub fn const_f32_t(&mut self, shape: Vec<usize>, v: &[f32]) -> TensorId {
        let n = self.fresh("const");
        self.g.const_f32(n, shape, v)
    }

    pub fn const_i64_t(&mut self, shape: Vec<usize>, v: &[i64]) -> TensorId {
        let n = self.fresh("const");
        self.g.const_i64(n, shape, v)
    }

    pub fn const_i32_t(&mut self, shape: Vec<usize>, v: &[i32]) -> TensorId {
        let n = self.fresh("const");
        self.g.const_i32(n, shape, v)
    }

    pub fn const_bytes(&mut self, dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> TensorId {
        let n = self.fresh("const");
        self.g.add_const(n, dtype, shape, bytes)
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.node_counter += 1;
        format!("{prefix}#{}", self.node_counter)
    }

    /// Emits one IR node with fresh output tensors; folds it when every
    /// input is constant. Returns the output ids.
    pub fn emit_raw(
        &mut self,
        src: &pb::NodeProto,
        op: Op,
        inputs: Vec<Option<TensorId>>,
        outs: Vec<(DType, Vec<usize>)>,
        names: Vec<String>,
    ) -> Result<Vec<TensorId>> {
        let mut ids = Vec::with_capacity(outs.len());
        for (k, (dt, shape)) in outs.into_iter().enumerate() {
            let name = names
                .get(k)
                .filter(|n| !n.is_empty())
                .cloned()
                .unwrap_or_else(|| self.fresh(&node_name(src)));
            ids.push(self.g.add_tensor(Tensor {
                name,
                dtype: dt,
                shape,
                data: None,
            }));
        }
        let node = Node {
            op,
            inputs,
            outputs: ids.iter().map(|&i| Some(i)).collect(),
            name: node_name(src),
        };
        let foldable = node
            .inputs
            .iter()
            .flatten()
            .all(|&i| self.g.tensors[i].is_const());
        if foldable {
            let outs = eval::eval_node(&self.g, &node).map_err(|source| CompileError::Fold {
                node: node_name(src),
                source,
            })?;
            for (&id, bytes) in ids.iter().zip(outs) {
                self.g.tensors[id].data = Some(Arc::new(bytes));
            }
        } else {
            self.g.nodes.push(node);
        }
        Ok(ids)
    }

    /// Emits a node whose outputs are the ONNX node's outputs, in order.
    pub fn emit(
        &mut self,
        src: &pb::NodeProto,
        op: Op,
        inputs: Vec<Option<TensorId>>,
        outs: Vec<(DType, Vec<usize>)>,
    ) -> Result<Vec<TensorId>> {
        let names: Vec<String> = src.output.clone();
        let ids = self.emit_raw(src, op, inputs, outs, names)?;
        for (k, &id) in ids.iter().enumerate() {
            if let Some(n) = src.output.get(k) {
                self.bind(n, id);
            }
        }
        Ok(ids)
    }

    /// Emits an intermediate node (outputs not bound to ONNX names).
    pub fn emit_tmp(
        &mut self,
        src: &pb::NodeProto,
        op: Op,
        inputs: Vec<Option<TensorId>>,
        dt: DType,
        shape: Vec<usize>,
    ) -> Result<TensorId> {
        Ok(self.emit_raw(src, op, inputs, vec![(dt, shape)], vec![])?[0])
    }
}

pub fn node_name(n: &pb::NodeProto) -> String {
    if n.name.is_empty() {
        n.output
            .first()
            .cloned()
            .unwrap_or_else(|| n.op_type.clone())
    } else {
        n.name.clone()
    }
}

/// Imports one node through the registry.
pub(crate) fn import_node(cx: &mut Ctx, reg: &Registry, node: &pb::NodeProto) -> Result<()> {
    let dom: &str = match node.domain.as_str() {
        "ai.onnx" => "",
        d => d,
    };
    let key_dom: &'static str = match dom {
        "" => "",
        "ai.onnx.ml" => "ai.onnx.ml",
        _ => {
            return Err(CompileError::UnsupportedOp {
                op: node.op_type.clone(),
                domain: format!("{dom}::"),
                opset: 0,
                node: node_name(node),
            });
        }
    };
    let f = reg
        .map
        .get(&(key_dom, node.op_type.as_str()))
        .ok_or_else(|| CompileError::UnsupportedOp {
            op: node.op_type.clone(),
            domain: if dom.is_empty() {
                String::new()
            } else {
                format!("{dom}::")
            },
            opset: if dom.is_empty() {
                cx.opset
            } else {
                cx.ml_opset
            },
            node: node_name(node),
        })?;
    f(cx, node)
}

/// Parses ONNX bytes.
pub fn parse(bytes: &[u8]) -> Result<pb::ModelProto> {
    use tract_onnx::tract_hir::prelude::Framework;
    let mut r = bytes;
    tract_onnx::onnx()
        .proto_model_for_read(&mut r)
        .map_err(|e| CompileError::Parse(format!("{e:#}")))
}

/// Imports a parsed model.
pub fn import(model: &pb::ModelProto, opts: &ImportOptions) -> Result<Imported> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| CompileError::Parse("the model has no graph".into()))?;
    let mut opset = 0;
    let mut ml_opset = 0;
    for o in &model.opset_import {
        match o.domain.as_str() {
            "" | "ai.onnx" => opset = o.version,
            "ai.onnx.ml" => ml_opset = o.version,
            _ => {}
        }
    }
    if opset == 0 {
        opset = 1;
    }
    let mut cx = Ctx {
        g: Graph::default(),
        names: HashMap::new(),
        opset,
        ml_opset,
        batch_inputs: vec![],
        warnings: vec![],
        preprocessing: vec![],
        batch_unsafe: None,
        node_counter: 0,
    };
    for init in &graph.initializer {
        let (dt, shape, bytes) = tensor_from_proto(init)?;
        let id = cx.g.add_const(init.name.clone(), dt, shape, bytes);
        cx.names.insert(init.name.clone(), id);
    }
    let mut input_names = vec![];
    let mut batch_name = None;
    for vi in &graph.input {
        if cx.names.contains_key(&vi.name) {
            continue; // an initializer with a default value
        }
        let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(t)) => t,
            None => {
                return Err(CompileError::Input {
                    input: vi.name.clone(),
                    detail: "only tensor inputs are supported".into(),
                });
            }
        };
        let dt = dtype_of(tt.elem_type).ok_or_else(|| CompileError::Input {
            input: vi.name.clone(),
            detail: format!("element type {} is not supported", tt.elem_type),
        })?;
        let shape = if let Some(s) = opts.input_shapes.get(&vi.name) {
            s.clone()
        } else {
            let dims = tt.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
            let mut shape = Vec::with_capacity(dims.len());
            for (axis, d) in dims.iter().enumerate() {
                use pb::tensor_shape_proto::dimension::Value;
                let v = match &d.value {
                    Some(Value::DimValue(v)) if *v >= 0 => *v as usize,
                    other => {
                        let name = match other {
                            Some(Value::DimParam(p)) => p.clone(),
                            _ => String::new(),
                        };
                        if let Some(&v) = opts.dims.get(&name).filter(|_| !name.is_empty()) {
                            v
                        } else if axis == 0 {
                            let shown = if name.is_empty() {
                                "N".to_string()
                            } else {
                                name.clone()
                            };
                            cx.batch_inputs.push((vi.name.clone(), shown.clone()));
                            batch_name.get_or_insert(shown);
                            1
                        } else {
                            return Err(CompileError::Input {
                                input: vi.name.clone(),
                                detail: format!(
                                    "dim {axis} ('{}') is symbolic; give it a value with --dim {}=N",
                                    if name.is_empty() { "?" } else { &name },
                                    if name.is_empty() { "NAME" } else { &name }
                                ),
                            });
                        }
                    }
                };
                shape.push(v);
            }
            shape
        };
        let id = cx.g.add_tensor(Tensor {
            name: vi.name.clone(),
            dtype: dt,
            shape,
            data: None,
        });
        cx.names.insert(vi.name.clone(), id);
        cx.g.inputs.push(id);
        input_names.push(vi.name.clone());
    }
    let reg = registry();
    let mut labels = HashMap::new();
    for node in &graph.node {
        import_node(&mut cx, &reg, node)?;
        if node.op_type.ends_with("Classifier")
            && let Some(a) = Attrs::new(node).strings("classlabels_strings")
            && let Some(out) = node.output.get(1)
        {
            labels.insert(out.clone(), a);
        }
    }
    let mut output_names = vec![];
    for vo in &graph.output {
        let id = match cx.names.get(&vo.name) {
            Some(&id) => id,
            None => {
                cx.warnings.push(format!(
                    "output '{}' is not a tensor (e.g. a ZipMap sequence) and was dropped",
                    vo.name
                ));
                continue;
            }
        };
        if vo.r#type.as_ref().and_then(|t| t.value.as_ref()).is_none() && vo.r#type.is_some() {
            cx.warnings.push(format!(
                "output '{}' is not a tensor (e.g. a ZipMap sequence) and was dropped",
                vo.name
            ));
            continue;
        }
        // Graph outputs must live in the arena and be distinct tensors.
        let needs_copy =
            cx.g.tensors[id].is_const() || cx.g.outputs.contains(&id) || cx.g.inputs.contains(&id);
        let id = if needs_copy {
            let t = cx.g.tensors[id].clone();
            let out = cx.g.add_tensor(Tensor {
                name: vo.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                data: None,
            });
            cx.g.nodes.push(Node {
                op: Op::Reshape,
                inputs: vec![Some(id)],
                outputs: vec![Some(out)],
                name: format!("{}:copy", vo.name),
            });
            out
        } else {
            id
        };
        cx.g.tensors[id].name = vo.name.clone();
        cx.g.outputs.push(id);
        output_names.push(vo.name.clone());
    }
    if cx.g.outputs.is_empty() {
        return Err(CompileError::Invalid(
            "the model has no tensor outputs".into(),
        ));
    }
    let producer = [
        model.producer_name.as_str(),
        model.producer_version.as_str(),
    ]
    .join(" ")
    .trim()
    .to_string();
    Ok(Imported {
        graph: cx.g,
        input_names,
        output_names,
        batch_name,
        producer,
        properties: model
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
        warnings: cx.warnings,
        preprocessing: cx.preprocessing,
        opset,
        labels,
        batch_unsafe: cx.batch_unsafe,
    })
}
