//! Writing artifacts (feature `write`): owned descriptions in, exact bytes out.
//!
//! The writer is deterministic: the same description gives the same bytes.

use crate::header::{HEADER_LEN, WEIGHT_ALIGN, content_digest};
use crate::table::encode_table;
use crate::view::GraphSection;
use crate::{
    DType, Dim, FORMAT_MAJOR, FORMAT_MINOR, Ids, IoSpec, MAGIC, Meta, Node, Op, Preprocessing,
    Provenance, Range, Table, TensorInfo,
};
use alloc::string::String;
use alloc::vec::Vec;

/// An input or output of the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct IoDesc {
    pub name: String,
    pub tensor: u32,
    pub dtype: DType,
    /// `None` = the symbolic batch dim.
    pub dims: Vec<Option<u32>>,
    pub batch_name: String,
    pub ranges: Vec<Range>,
    pub labels: Vec<String>,
}

/// A node with owned id lists.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDesc {
    pub op: Op,
    pub inputs: Vec<u32>,
    pub outputs: Vec<u32>,
    pub scratch_offset: u32,
    pub scratch_len: u32,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProvenanceDesc {
    pub source_format: String,
    pub source_name: String,
    pub source_sha256: [u8; 32],
    pub producer: String,
    pub compiler: String,
    pub created_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PreprocessingDesc {
    pub kind: String,
    pub detail: String,
    pub input: String,
}

/// Everything an artifact holds, owned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ArtifactDesc {
    pub name: String,
    pub version: String,
    pub description: String,
    pub inputs: Vec<IoDesc>,
    pub outputs: Vec<IoDesc>,
    pub provenance: ProvenanceDesc,
    pub preprocessing: Vec<PreprocessingDesc>,
    pub properties: Vec<(String, String)>,
    pub tensors: Vec<TensorInfo>,
    pub nodes: Vec<NodeDesc>,
    pub graph_inputs: Vec<u32>,
    pub graph_outputs: Vec<u32>,
    pub arena_size: u32,
    pub per_sample_batch: bool,
    /// The weight section; constant tensors point into it.
    pub weights: Vec<u8>,
}

/// Why an artifact could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("artifact section too large for the format: {0}")]
    TooLarge(&'static str),
    #[error("could not encode {0}")]
    Encode(&'static str),
}

impl ArtifactDesc {
    /// Appends a constant to the weight section (16-aligned) and returns its offset.
    pub fn push_weight(&mut self, bytes: &[u8]) -> u32 {
        while !self.weights.len().is_multiple_of(WEIGHT_ALIGN) {
            self.weights.push(0);
        }
        let off = self.weights.len() as u32;
        self.weights.extend_from_slice(bytes);
        off
    }

    /// Serialises to the exact artifact bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WriteError> {
        let enc = |what: &'static str| move |_e: postcard::Error| WriteError::Encode(what);
        let ids = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };

        // Meta: nested tables first, then the borrowed structs that point into them.
        let io_bytes = |list: &[IoDesc]| -> Result<Vec<u8>, WriteError> {
            let mut dims = Vec::new();
            let mut ranges = Vec::new();
            let mut labels = Vec::new();
            for io in list {
                let d: Vec<Dim> = io
                    .dims
                    .iter()
                    .map(|d| match d {
                        Some(n) => Dim::Fixed(*n),
                        None => Dim::Batch(io.batch_name.as_str()),
                    })
                    .collect();
                dims.push(encode_table(&d).map_err(enc("schema dims"))?);
                ranges.push(encode_table(&io.ranges).map_err(enc("schema ranges"))?);
                let l: Vec<&str> = io.labels.iter().map(String::as_str).collect();
                labels.push(encode_table(&l).map_err(enc("schema labels"))?);
            }
            let specs: Vec<IoSpec> = list
                .iter()
                .enumerate()
                .map(|(i, io)| IoSpec {
                    name: &io.name,
                    tensor: io.tensor,
                    dtype: io.dtype,
                    dims: Table::parse(&dims[i]).expect("encoded table"),
                    ranges: Table::parse(&ranges[i]).expect("encoded table"),
                    labels: Table::parse(&labels[i]).expect("encoded table"),
                })
                .collect();
            encode_table(&specs).map_err(enc("schema"))
        };
        let inputs = io_bytes(&self.inputs)?;
        let outputs = io_bytes(&self.outputs)?;
        let pre: Vec<Preprocessing> = self
            .preprocessing
            .iter()
            .map(|p| Preprocessing {
                kind: &p.kind,
                detail: &p.detail,
                input: &p.input,
            })
            .collect();
        let pre = encode_table(&pre).map_err(enc("preprocessing"))?;
        let props: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let props = encode_table(&props).map_err(enc("properties"))?;
        let p = &self.provenance;
        let meta = Meta {
            name: &self.name,
            version: &self.version,
            description: &self.description,
            inputs: Table::parse(&inputs).expect("encoded table"),
            outputs: Table::parse(&outputs).expect("encoded table"),
            provenance: Provenance {
                source_format: &p.source_format,
                source_name: &p.source_name,
                source_sha256: p.source_sha256,
                producer: &p.producer,
                compiler: &p.compiler,
                created_unix: p.created_unix,
            },
            preprocessing: Table::parse(&pre).expect("encoded table"),
            properties: Table::parse(&props).expect("encoded table"),
        };
        let meta = postcard::to_allocvec(&meta).map_err(enc("meta"))?;

        // Graph.
        let tensors: Vec<u8> = self.tensors.iter().flat_map(|t| t.encode()).collect();
        let node_ids: Vec<(Vec<u8>, Vec<u8>)> = self
            .nodes
            .iter()
            .map(|n| (ids(&n.inputs), ids(&n.outputs)))
            .collect();
        let nodes: Vec<Node> = self
            .nodes
            .iter()
            .zip(&node_ids)
            .map(|(n, (i, o))| Node {
                op: n.op.clone(),
                inputs: Ids(i),
                outputs: Ids(o),
                scratch_offset: n.scratch_offset,
                scratch_len: n.scratch_len,
                name: &n.name,
            })
            .collect();
        let nodes = encode_table(&nodes).map_err(enc("nodes"))?;
        let gin = ids(&self.graph_inputs);
        let gout = ids(&self.graph_outputs);
        let graph = GraphSection {
            arena_size: self.arena_size,
            per_sample_batch: self.per_sample_batch,
            tensors: &tensors,
            nodes: Table::parse(&nodes).expect("encoded table"),
            inputs: Ids(&gin),
            outputs: Ids(&gout),
        };
        let graph = postcard::to_allocvec(&graph).map_err(enc("graph"))?;

        // Layout: header, meta, graph, pad to 16, weights.
        let meta_off = HEADER_LEN;
        let graph_off = meta_off + meta.len();
        let mut weights_off = graph_off + graph.len();
        weights_off = weights_off.next_multiple_of(WEIGHT_ALIGN);
        let content_len = weights_off + self.weights.len();
        if content_len > u32::MAX as usize {
            return Err(WriteError::TooLarge("artifact above 4 GiB"));
        }
        let mut out = Vec::with_capacity(content_len);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
        out.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
        out.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        out.extend_from_slice(&(content_len as u64).to_le_bytes());
        for (off, len) in [
            (meta_off, meta.len()),
            (graph_off, graph.len()),
            (weights_off, self.weights.len()),
            (0, 0),
        ] {
            out.extend_from_slice(&(off as u32).to_le_bytes());
            out.extend_from_slice(&(len as u32).to_le_bytes());
        }
        out.resize(HEADER_LEN, 0);
        out.extend_from_slice(&meta);
        out.extend_from_slice(&graph);
        out.resize(weights_off, 0);
        out.extend_from_slice(&self.weights);
        let digest = content_digest(&out, content_len);
        out[64..96].copy_from_slice(&digest);
        Ok(out)
    }
}

impl ArtifactDesc {
    /// The description of a parsed artifact: `from_view(&View::parse(b)?)?.to_bytes()`
    /// gives back `b` (without a signature), byte for byte.
    pub fn from_view(v: &crate::View<'_>) -> Result<ArtifactDesc, crate::FormatError> {
        let io = |spec: IoSpec<'_>| -> Result<IoDesc, crate::FormatError> {
            let mut batch_name = String::new();
            let dims = spec
                .dims
                .iter()
                .map(|d| {
                    d.map(|d| match d {
                        Dim::Fixed(n) => Some(n),
                        Dim::Batch(name) => {
                            batch_name = name.into();
                            None
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(IoDesc {
                name: spec.name.into(),
                tensor: spec.tensor,
                dtype: spec.dtype,
                dims,
                batch_name,
                ranges: spec.ranges.iter().collect::<Result<_, _>>()?,
                labels: spec
                    .labels
                    .iter()
                    .map(|l| l.map(String::from))
                    .collect::<Result<_, _>>()?,
            })
        };
        let m = v.meta();
        let p = m.provenance;
        let ids = |x: Ids<'_>| x.iter().collect::<Vec<u32>>();
        Ok(ArtifactDesc {
            name: m.name.into(),
            version: m.version.into(),
            description: m.description.into(),
            inputs: m.inputs.iter().map(|s| io(s?)).collect::<Result<_, _>>()?,
            outputs: m.outputs.iter().map(|s| io(s?)).collect::<Result<_, _>>()?,
            provenance: ProvenanceDesc {
                source_format: p.source_format.into(),
                source_name: p.source_name.into(),
                source_sha256: p.source_sha256,
                producer: p.producer.into(),
                compiler: p.compiler.into(),
                created_unix: p.created_unix,
            },
            preprocessing: m
                .preprocessing
                .iter()
                .map(|x| {
                    x.map(|x| PreprocessingDesc {
                        kind: x.kind.into(),
                        detail: x.detail.into(),
                        input: x.input.into(),
                    })
                })
                .collect::<Result<_, _>>()?,
            properties: m
                .properties
                .iter()
                .map(|x| x.map(|(k, v)| (k.into(), v.into())))
                .collect::<Result<_, _>>()?,
            tensors: (0..v.tensor_count())
                .map(|i| v.tensor(i))
                .collect::<Result<_, _>>()?,
            nodes: (0..v.node_count())
                .map(|i| {
                    v.node(i).map(|n| NodeDesc {
                        op: n.op,
                        inputs: ids(n.inputs),
                        outputs: ids(n.outputs),
                        scratch_offset: n.scratch_offset,
                        scratch_len: n.scratch_len,
                        name: n.name.into(),
                    })
                })
                .collect::<Result<_, _>>()?,
            graph_inputs: ids(v.inputs()),
            graph_outputs: ids(v.outputs()),
            arena_size: v.arena_size() as u32,
            per_sample_batch: v.per_sample_batch(),
            weights: v.weights().to_vec(),
        })
    }
}
