//! Exact-byte round trips and pinned bytes of the format.

use kiln_format::write::{ArtifactDesc, IoDesc, NodeDesc, ProvenanceDesc};
use kiln_format::{Binary, DType, FormatError, MAX_RANK, Op, TensorInfo, TensorKind, View};

fn aligned(b: &[u8]) -> Vec<u128> {
    let mut v = vec![0u128; b.len().div_ceil(16)];
    bytemuck_free_copy(&mut v, b);
    v
}

fn bytemuck_free_copy(dst: &mut [u128], src: &[u8]) {
    for (i, chunk) in src.chunks(16).enumerate() {
        let mut w = [0u8; 16];
        w[..chunk.len()].copy_from_slice(chunk);
        dst[i] = u128::from_le_bytes(w);
    }
}

fn as_bytes(v: &[u128], len: usize) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).take(len).collect()
}

fn info(dtype: DType, dims: &[u32], kind: TensorKind, offset: u32) -> TensorInfo {
    let mut d = [0u32; MAX_RANK];
    d[..dims.len()].copy_from_slice(dims);
    let n: u32 = dims.iter().product();
    TensorInfo {
        dtype,
        rank: dims.len() as u8,
        kind,
        batched: false,
        dims: d,
        offset,
        byte_len: n * dtype.size() as u32,
    }
}

/// y = x + c, c a constant [4].
fn sample() -> ArtifactDesc {
    let mut d = ArtifactDesc {
        name: "add".into(),
        version: "3".into(),
        ..Default::default()
    };
    let off = d.push_weight(
        &[1f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    d.tensors = vec![
        info(DType::F32, &[1, 4], TensorKind::Arena, 0),
        info(DType::F32, &[4], TensorKind::Const, off),
        info(DType::F32, &[1, 4], TensorKind::Arena, 16),
    ];
    d.nodes = vec![NodeDesc {
        op: Op::Binary(Binary::Add),
        inputs: vec![0, 1],
        outputs: vec![2],
        scratch_offset: 0,
        scratch_len: 0,
        name: "add".into(),
    }];
    d.graph_inputs = vec![0];
    d.graph_outputs = vec![2];
    d.arena_size = 32;
    d.per_sample_batch = true;
    let io = |name: &str, tensor| IoDesc {
        name: name.into(),
        tensor,
        dtype: DType::F32,
        dims: vec![None, Some(4)],
        batch_name: "N".into(),
        ranges: vec![],
        labels: vec![],
    };
    d.inputs = vec![io("x", 0)];
    d.outputs = vec![io("y", 2)];
    d.provenance = ProvenanceDesc {
        source_format: "onnx".into(),
        source_name: "add.onnx".into(),
        compiler: "test".into(),
        ..Default::default()
    };
    d
}

#[test]
fn parse_then_write_gives_the_same_bytes() {
    let bytes = sample().to_bytes().expect("writes");
    let buf = aligned(&bytes);
    let b = as_bytes(&buf, bytes.len());
    let view = View::parse(&b).expect("parses");
    view.verify_checksum().expect("checksum");
    let again = ArtifactDesc::from_view(&view)
        .expect("decodes")
        .to_bytes()
        .expect("writes");
    assert_eq!(again, bytes);
    assert_eq!(ArtifactDesc::from_view(&view).expect("decodes"), sample());
}

#[test]
fn header_bytes_are_pinned() {
    let bytes = sample().to_bytes().expect("writes");
    assert_eq!(&bytes[..8], b"KILNART\0");
    assert_eq!(
        &bytes[8..16],
        &[0, 0, 1, 0, 128, 0, 0, 0],
        "version 0.1, header length 128"
    );
    assert_eq!(
        u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize,
        bytes.len()
    );
    let weights_off = u32::from_le_bytes(bytes[40..44].try_into().expect("4 bytes"));
    assert_eq!(weights_off % 16, 0);
    assert_eq!(
        &bytes[weights_off as usize..weights_off as usize + 4],
        &1f32.to_le_bytes()
    );
}

#[test]
fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
    let bytes = sample().to_bytes().expect("writes");
    for cut in 0..bytes.len() {
        let buf = aligned(&bytes[..cut]);
        let b = as_bytes(&buf, cut);
        assert!(View::parse(&b).is_err(), "a {cut}-byte prefix parsed");
    }
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut m = bytes.clone();
            m[i] ^= bit;
            let buf = aligned(&m);
            let b = as_bytes(&buf, m.len());
            if let Ok(v) = View::parse(&b) {
                // Structure may survive a flip; the checksum must not.
                assert_eq!(
                    v.verify_checksum(),
                    Err(FormatError::Checksum),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
    }
}

#[test]
fn misaligned_bytes_are_refused() {
    let bytes = sample().to_bytes().expect("writes");
    let buf = aligned(&[&[0u8][..], &bytes].concat());
    let b = as_bytes(&buf, bytes.len() + 1);
    assert_eq!(View::parse(&b[1..]).err(), Some(FormatError::Misaligned));
}
