//! Helpers shared by the CLI's integration tests.

/// A `.npy` file of `data` (the CLI's writer).
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn npy(dtype: kiln_format::DType, shape: &[usize], data: &[u8]) -> Vec<u8> {
    kiln_cli::npy_bytes(&kiln_runtime_native::TensorValue {
        dtype,
        shape: shape.to_vec(),
        data: data.to_vec(),
    })
}

/// `kiln compile` of the corpus's `sklearn/STEM.onnx` to `out`, with its
/// training rows (`STEM_train.csv`, label column `target`) as the drift
/// reference.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn compile_sklearn_with_reference(stem: &str, out: &std::path::Path) {
    let sk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sklearn");
    compile_with_reference(
        &sk.join(format!("{stem}.onnx")),
        out,
        &sk.join(format!("{stem}_train.csv")),
        &["--labels", "target"],
    );
}

/// `kiln compile MODEL -o OUT --reference DATA [extra]`, which must succeed.
fn compile_with_reference(
    model: &std::path::Path,
    out: &std::path::Path,
    reference: &std::path::Path,
    extra: &[&str],
) {
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("compile")
        .arg(model)
        .arg("-o")
        .arg(out)
        .arg("--reference")
        .arg(reference)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// One HTTP/1.1 request; the status and the body.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Small responses: one chunk, then the terminator.
        let text = String::from_utf8_lossy(&body).to_string();
        let (len, rest) = text.split_once("\r\n").unwrap();
        let len = usize::from_str_radix(len.trim(), 16).unwrap();
        body = rest.as_bytes()[..len].to_vec();
    }
    (status, body)
}

/// A child process (a collector), killed when dropped.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub struct Server(pub std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kiln collector serve` on a free port (or `extra`'s `--addr`)
/// over `db` (and `extra` arguments); the server and its address.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn start_collector(db: &str, admin: &str, extra: &[&str]) -> (Server, String) {
    use std::io::BufRead;
    // A free port unless `extra` names the address.
    let addr: &[&str] = if extra.contains(&"--addr") {
        &[]
    } else {
        &["--addr", "127.0.0.1:0"]
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["collector", "serve", "--admin-token", admin, "--db", db])
        .args(addr)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the collector did not start on {db}: {line:?}"))
        .to_string();
    (Server(child), addr)
}

/// The first `n` MNIST test images (raw 0..255 as f32, 784 each), from
/// the corpus's IDX file.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn mnist_images(n: usize) -> Vec<f32> {
    use std::io::Read;
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let raw = std::fs::read(corpus.join("datasets/mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let mut idx = vec![];
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut idx)
        .unwrap();
    idx[16..16 + n * 784]
        .iter()
        .map(|&p| f32::from(p))
        .collect()
}

/// `kiln compile` of the corpus's mnist-8 (input `[1, 1, 28, 28]`) to
/// `out`, with `reference` (whole images) as the drift reference: a tensor
/// input's per-channel baseline.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn compile_mnist_with_reference(reference: &[f32], out: &std::path::Path) {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let npy_path = out.with_extension("reference.npy");
    let bytes: Vec<u8> = reference.iter().flat_map(|x| x.to_le_bytes()).collect();
    let n = reference.len() / 784;
    std::fs::write(
        &npy_path,
        npy(kiln_format::DType::F32, &[n, 1, 28, 28], &bytes),
    )
    .unwrap();
    compile_with_reference(
        &corpus.join("onnx-real/mnist-8_cntk.onnx"),
        out,
        &npy_path,
        &[],
    );
}

/// `n` variants of the corpus's KWS input (49×10 int8 MFCC codes): each
/// code moved by `shift` plus noise in -6..=6 from a fixed generator,
/// clamped to int8.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn kws_codes(n: usize, shift: i32, seed: u64) -> Vec<i8> {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let npy = std::fs::read(corpus.join("mlperf-tiny/samples/kws_sample_input_int8.npy")).unwrap();
    // An int8 .npy of 490 values: they are its last 490 bytes.
    let sample = &npy[npy.len() - 490..];
    let mut state = seed;
    let mut out = Vec::with_capacity(n * 490);
    for _ in 0..n {
        for &b in sample {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = ((state >> 33) % 13) as i32 - 6;
            out.push((i32::from(b as i8) + shift + noise).clamp(-128, 127) as i8);
        }
    }
    out
}

/// `kiln compile` of the corpus's int8 KWS model (input `[1, 49, 10, 1]`
/// int8) to `out`, with `reference` (the input's codes, as an int8 .npy)
/// as the drift reference.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn compile_kws_with_reference(reference: &[i8], out: &std::path::Path) {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let npy_path = out.with_extension("reference.npy");
    let bytes: Vec<u8> = reference.iter().map(|&q| q as u8).collect();
    let n = reference.len() / 490;
    std::fs::write(
        &npy_path,
        npy(kiln_format::DType::I8, &[n, 49, 10, 1], &bytes),
    )
    .unwrap();
    compile_with_reference(
        &corpus.join("mlperf-tiny/kws_ref_model.tflite"),
        out,
        &npy_path,
        &[],
    );
}

/// Registers `artifact` as version 1 of `model` on the collector at
/// `addr` and issues a device token for it; the token.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn register(addr: &str, admin: &str, model: &str, artifact: &[u8]) -> String {
    let (st, body) = http(
        addr,
        "POST",
        &format!("/v1/models/{model}/versions/1"),
        Some(admin),
        artifact,
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let (st, body) = http(
        addr,
        "POST",
        "/v1/tokens",
        Some(admin),
        format!("{{\"model\":\"{model}\"}}").as_bytes(),
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    token["token"].as_str().unwrap().to_string()
}
