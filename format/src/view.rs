//! The validated, zero-copy view over artifact bytes.

use crate::decode::{Decode, Reader, from_record};
use crate::header::{HEADER_LEN, Header, WEIGHT_ALIGN, content_digest, u32_at};
use crate::{DType, FormatError, Ids, Meta, Op, Table};
use serde::{Deserialize, Serialize};

/// Maximum tensor rank in the format.
pub const MAX_RANK: usize = 8;
/// Bytes of one tensor record.
pub const TENSOR_RECORD_LEN: usize = 48;

/// Where a tensor's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// In the weight section (offset relative to the section start).
    Const,
    /// In the caller's arena (offset relative to the arena start).
    Arena,
}

/// One record of the tensor table (fixed 48 bytes on disk):
/// dtype u8, rank u8, kind u8 (0 const, 1 arena), flags u8 (bit 0: dim 0 is
/// the batch), dims `[u32; 8]`, offset u32, byte length u32, reserved u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    pub rank: u8,
    pub kind: TensorKind,
    pub batched: bool,
    pub dims: [u32; MAX_RANK],
    pub offset: u32,
    pub byte_len: u32,
}

impl TensorInfo {
    pub fn shape(&self) -> &[u32] {
        &self.dims[..self.rank as usize]
    }

    pub fn numel(&self) -> usize {
        self.shape().iter().map(|&d| d as usize).product()
    }

    /// Encodes the 48-byte record.
    pub fn encode(&self) -> [u8; TENSOR_RECORD_LEN] {
        let mut r = [0u8; TENSOR_RECORD_LEN];
        r[0] = self.dtype as u8;
        r[1] = self.rank;
        r[2] = match self.kind {
            TensorKind::Const => 0,
            TensorKind::Arena => 1,
        };
        r[3] = self.batched as u8;
        for (i, d) in self.dims.iter().enumerate() {
            r[4 + 4 * i..8 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        r[36..40].copy_from_slice(&self.offset.to_le_bytes());
        r[40..44].copy_from_slice(&self.byte_len.to_le_bytes());
        r
    }

    fn decode(r: &[u8], index: u32) -> Result<TensorInfo, FormatError> {
        let bad = |detail| FormatError::InvalidAt {
            what: "tensor",
            index,
            detail,
        };
        let dtype = DType::from_u8(r[0]).ok_or(bad("unknown dtype"))?;
        let rank = r[1];
        if rank as usize > MAX_RANK {
            return Err(bad("rank above 8"));
        }
        let kind = match r[2] {
            0 => TensorKind::Const,
            1 => TensorKind::Arena,
            _ => return Err(bad("unknown storage kind")),
        };
        let mut dims = [0u32; MAX_RANK];
        for (i, d) in dims.iter_mut().enumerate() {
            *d = u32_at(r, 4 + 4 * i);
            if i >= rank as usize && *d != 0 {
                return Err(bad("dims past the rank are not zero"));
            }
        }
        let t = TensorInfo {
            dtype,
            rank,
            kind,
            batched: r[3] & 1 != 0,
            dims,
            offset: u32_at(r, 36),
            byte_len: u32_at(r, 40),
        };
        let mut n: u64 = dtype.size() as u64;
        for &d in t.shape() {
            n = n
                .checked_mul(d as u64)
                .ok_or(bad("element count overflows"))?;
        }
        if n != t.byte_len as u64 {
            return Err(bad("byte length does not match shape and dtype"));
        }
        if !(t.offset as usize).is_multiple_of(WEIGHT_ALIGN) {
            return Err(bad("offset is not 16-byte aligned"));
        }
        Ok(t)
    }
}

/// One node: an op with its input and output tensor ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node<'a> {
    pub op: Op,
    #[serde(borrow)]
    pub inputs: Ids<'a>,
    #[serde(borrow)]
    pub outputs: Ids<'a>,
    /// Scratch memory in the arena, live only while this node runs.
    pub scratch_offset: u32,
    pub scratch_len: u32,
    /// Name of the source node(s), for error messages and profiles.
    pub name: &'a str,
}

/// The graph section as stored (postcard).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct GraphSection<'a> {
    pub arena_size: u32,
    /// True when dim 0 of the inputs is a batch of independent samples: a
    /// runtime may run the graph once per sample (the graph is planned for one).
    pub per_sample_batch: bool,
    pub tensors: &'a [u8],
    #[serde(borrow)]
    pub nodes: Table<'a, Node<'a>>,
    #[serde(borrow)]
    pub inputs: Ids<'a>,
    #[serde(borrow)]
    pub outputs: Ids<'a>,
}

/// A validated artifact. Cheap to copy; borrows the bytes.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    bytes: &'a [u8],
    header: Header,
    meta: Meta<'a>,
    graph: GraphSection<'a>,
    weights: &'a [u8],
}

impl<'a> View<'a> {
    /// Parses and validates an artifact. Never panics; the bytes must start at
    /// a 16-byte aligned address (weights are read in place).
    pub fn parse(bytes: &'a [u8]) -> Result<View<'a>, FormatError> {
        Self::parse_ops::<{ u128::MAX }>(bytes)
    }

    /// [`View::parse`] for a runtime with only the op set `OPS` built in
    /// (see [`View::node_in`]): a node with another op is an error.
    pub fn parse_ops<const OPS: u128>(bytes: &'a [u8]) -> Result<View<'a>, FormatError> {
        let header = Header::parse(bytes)?;
        if !(bytes.as_ptr() as usize).is_multiple_of(WEIGHT_ALIGN) {
            return Err(FormatError::Misaligned);
        }
        let meta: Meta<'a> = from_record(&bytes[header.meta.range()], "meta section")?;
        let graph: GraphSection<'a> = from_record(&bytes[header.graph.range()], "graph section")?;
        let weights = &bytes[header.weights.range()];
        let view = View {
            bytes,
            header,
            meta,
            graph,
            weights,
        };
        view.validate::<OPS>()?;
        Ok(view)
    }

    fn validate<const OPS: u128>(&self) -> Result<(), FormatError> {
        if !self.graph.tensors.len().is_multiple_of(TENSOR_RECORD_LEN) {
            return Err(FormatError::Invalid {
                what: "tensor table",
                detail: "length is not a multiple of 48",
            });
        }
        let n_tensors = self.tensor_count();
        for i in 0..n_tensors {
            let t = self.tensor(i)?;
            let (limit, what) = match t.kind {
                TensorKind::Const => (
                    self.weights.len() as u64,
                    "tensor lies outside the weight section",
                ),
                TensorKind::Arena => (
                    self.graph.arena_size as u64,
                    "tensor lies outside the arena",
                ),
            };
            if t.offset as u64 + t.byte_len as u64 > limit {
                return Err(FormatError::InvalidAt {
                    what: "tensor",
                    index: i as u32,
                    detail: what,
                });
            }
        }
        let arena_id = |id: u32, what: &'static str| -> Result<(), FormatError> {
            let t = self
                .tensor(id as usize)
                .map_err(|_| FormatError::InvalidAt {
                    what,
                    index: id,
                    detail: "tensor id out of range",
                })?;
            if t.kind != TensorKind::Arena {
                return Err(FormatError::InvalidAt {
                    what,
                    index: id,
                    detail: "must live in the arena",
                });
            }
            Ok(())
        };
        for id in self.graph.inputs.iter() {
            arena_id(id, "graph input")?;
        }
        for id in self.graph.outputs.iter() {
            arena_id(id, "graph output")?;
        }
        for i in 0..self.node_count() {
            let n = self.node_in::<OPS>(i)?;
            for id in n.inputs.iter() {
                if id != Ids::ABSENT && id as usize >= n_tensors {
                    return Err(FormatError::InvalidAt {
                        what: "node input",
                        index: i as u32,
                        detail: "tensor id out of range",
                    });
                }
            }
            for id in n.outputs.iter() {
                if id != Ids::ABSENT {
                    arena_id(id, "node output")?;
                }
            }
            if !(n.scratch_offset as usize).is_multiple_of(WEIGHT_ALIGN)
                || n.scratch_offset as u64 + n.scratch_len as u64 > self.graph.arena_size as u64
            {
                return Err(FormatError::InvalidAt {
                    what: "node scratch",
                    index: i as u32,
                    detail: "outside the arena or misaligned",
                });
            }
        }
        for (k, spec) in self
            .meta
            .inputs
            .iter()
            .chain(self.meta.outputs.iter())
            .enumerate()
        {
            let spec = spec?;
            let t = self
                .tensor(spec.tensor as usize)
                .map_err(|_| FormatError::InvalidAt {
                    what: "io spec",
                    index: k as u32,
                    detail: "tensor id out of range",
                })?;
            if t.dtype != spec.dtype || t.kind != TensorKind::Arena {
                return Err(FormatError::InvalidAt {
                    what: "io spec",
                    index: k as u32,
                    detail: "dtype or storage disagrees with its tensor",
                });
            }
            if spec.dims.len() != t.rank as usize {
                return Err(FormatError::InvalidAt {
                    what: "io spec",
                    index: k as u32,
                    detail: "rank disagrees with its tensor",
                });
            }
        }
        if self.meta.inputs.len() != self.graph.inputs.len()
            || self.meta.outputs.len() != self.graph.outputs.len()
        {
            return Err(FormatError::Invalid {
                what: "io spec",
                detail: "schema and graph disagree on the number of inputs or outputs",
            });
        }
        Ok(())
    }

    /// Recomputes the content sha256 and compares it with the header.
    pub fn verify_checksum(&self) -> Result<(), FormatError> {
        let d = content_digest(self.bytes, self.header.content_len as usize);
        if d == self.header.content_sha256 {
            Ok(())
        } else {
            Err(FormatError::Checksum)
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn meta(&self) -> &Meta<'a> {
        &self.meta
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn weights(&self) -> &'a [u8] {
        self.weights
    }

    /// Bytes of arena needed to run one sample (or the fixed batch).
    pub fn arena_size(&self) -> usize {
        self.graph.arena_size as usize
    }

    pub fn per_sample_batch(&self) -> bool {
        self.graph.per_sample_batch
    }

    pub fn tensor_count(&self) -> usize {
        self.graph.tensors.len() / TENSOR_RECORD_LEN
    }

    pub fn tensor(&self, i: usize) -> Result<TensorInfo, FormatError> {
        let start = i.saturating_mul(TENSOR_RECORD_LEN);
        let rec = self
            .graph
            .tensors
            .get(start..start.saturating_add(TENSOR_RECORD_LEN))
            .ok_or(FormatError::InvalidAt {
                what: "tensor",
                index: i as u32,
                detail: "id out of range",
            })?;
        TensorInfo::decode(rec, i as u32)
    }

    /// Bytes of a constant tensor (validated to lie in the weight section).
    pub fn const_bytes(&self, t: &TensorInfo) -> &'a [u8] {
        match t.kind {
            TensorKind::Const => self
                .weights
                .get(t.offset as usize..t.offset as usize + t.byte_len as usize)
                .unwrap_or(&[]),
            TensorKind::Arena => &[],
        }
    }

    pub fn node_count(&self) -> usize {
        self.graph.nodes.len()
    }

    pub fn node(&self, i: usize) -> Result<Node<'a>, FormatError> {
        self.graph.nodes.get(i)
    }

    /// [`View::node`] for a runtime built with the op set `OPS` only (a
    /// constant, see [`View::op_set`]): the other ops' decoders are left
    /// out, and a node with one of them is a decode error.
    pub fn node_in<const OPS: u128>(&self, i: usize) -> Result<Node<'a>, FormatError> {
        if OPS == u128::MAX {
            return self.node(i);
        }
        let rec = self.graph.nodes.record(i).ok_or(FormatError::InvalidAt {
            what: "table record",
            index: i as u32,
            detail: "index out of range",
        })?;
        from_record::<NodeIn<'a, OPS>>(rec, "table record").map(|n| n.0)
    }

    /// The set of ops the graph uses: bit [`Op::tag`] of each node's op
    /// (the engine's `Plan::run_ops` links only those).
    pub fn op_set(&self) -> Result<u128, FormatError> {
        let mut set = 0u128;
        for i in 0..self.node_count() {
            set |= 1u128 << self.node(i)?.op.tag();
        }
        Ok(set)
    }

    pub fn inputs(&self) -> Ids<'a> {
        self.graph.inputs
    }

    pub fn outputs(&self) -> Ids<'a> {
        self.graph.outputs
    }

    /// Byte length of the whole file including a trailing signature.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.len() <= HEADER_LEN
    }
}

/// A [`Node`] whose op is decoded from the set `OPS` only.
struct NodeIn<'a, const OPS: u128>(Node<'a>);

impl<'a, const OPS: u128> Decode<'a> for NodeIn<'a, OPS> {
    fn decode(r: &mut Reader<'a>) -> Self {
        NodeIn(Node {
            op: Op::decode_in::<OPS>(r),
            inputs: r.get(),
            outputs: r.get(),
            scratch_offset: r.u32(),
            scratch_len: r.u32(),
            name: r.str(),
        })
    }
}

impl<'a> Decode<'a> for Node<'a> {
    fn decode(r: &mut Reader<'a>) -> Self {
        Node {
            op: r.get(),
            inputs: r.get(),
            outputs: r.get(),
            scratch_offset: r.u32(),
            scratch_len: r.u32(),
            name: r.str(),
        }
    }
}

impl<'a> Decode<'a> for GraphSection<'a> {
    fn decode(r: &mut Reader<'a>) -> Self {
        GraphSection {
            arena_size: r.u32(),
            per_sample_batch: r.bool(),
            tensors: r.bytes(),
            nodes: r.get(),
            inputs: r.get(),
            outputs: r.get(),
        }
    }
}
