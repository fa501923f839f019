//! Library side of the `kiln` command: tensor file formats (.npy, .npz,
//! CSV) shared by the binary and its tests. Internal crate.

use anyhow::{Context, Result, bail};
use kiln_runtime_native::{DType, TensorValue};
use std::io::Read;
use std::path::Path;

fn dtype_from_npy(t: &npyz::DType) -> Result<DType> {
    let npyz::DType::Plain(ts) = t else {
        bail!("structured .npy arrays are not supported")
    };
    let size = ts.size_field();
    Ok(match (ts.type_char(), size) {
        (npyz::TypeChar::Float, 4) => DType::F32,
        (npyz::TypeChar::Float, 8) => DType::F64,
        (npyz::TypeChar::Float, 2) => DType::F16,
        (npyz::TypeChar::Int, 8) => DType::I64,
        (npyz::TypeChar::Int, 4) => DType::I32,
        (npyz::TypeChar::Int, 2) => DType::I16,
        (npyz::TypeChar::Int, 1) => DType::I8,
        (npyz::TypeChar::Uint, 1) => DType::U8,
        (npyz::TypeChar::Uint, 2) => DType::U16,
        (npyz::TypeChar::Uint, 4) => DType::U32,
        (npyz::TypeChar::Uint, 8) => DType::U64,
        (npyz::TypeChar::Bool, 1) => DType::Bool,
        (c, s) => bail!("unsupported .npy element type {c:?}{s}"),
    })
}

/// Reads one array from .npy bytes.
pub fn read_npy_bytes(bytes: &[u8]) -> Result<TensorValue> {
    let npy = npyz::NpyFile::new(bytes).context("not a valid .npy file")?;
    let dtype = dtype_from_npy(&npy.dtype())?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == npyz::Order::Fortran && shape.len() > 1 {
        bail!("Fortran-ordered .npy arrays are not supported; save with np.ascontiguousarray");
    }
    let big_endian = matches!(npy.dtype(), npyz::DType::Plain(ts) if ts.endianness() == npyz::Endianness::Big && ts.size_field() > 1);
    if big_endian {
        bail!("big-endian .npy arrays are not supported");
    }
    let n: usize = shape.iter().product();
    let want = n.checked_mul(dtype.size()).context("array too large")?;
    let header_len = bytes
        .len()
        .checked_sub(want)
        .context("the .npy file is shorter than its shape says")?;
    let data = bytes[header_len..].to_vec();
    Ok(TensorValue { dtype, shape, data })
}

/// Reads a .npy file.
pub fn read_npy(path: &Path) -> Result<TensorValue> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    read_npy_bytes(&bytes).with_context(|| format!("{}", path.display()))
}

/// Reads every array of a .npz file, in file order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, TensorValue)>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut zip = npyz::npz::NpzArchive::new(std::io::BufReader::new(f))
        .with_context(|| format!("{} is not a valid .npz", path.display()))?;
    let names: Vec<String> = zip.array_names().map(str::to_string).collect();
    let mut out = vec![];
    for name in names {
        let mut raw = vec![];
        let z = zip.zip_archive();
        let mut entry = z
            .by_name(&format!("{name}.npy"))
            .with_context(|| format!("{}: missing {name}", path.display()))?;
        entry.read_to_end(&mut raw)?;
        out.push((
            name.clone(),
            read_npy_bytes(&raw).with_context(|| format!("{}: array {name}", path.display()))?,
        ));
    }
    Ok(out)
}

fn npy_descr(d: DType) -> &'static str {
    match d {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
    }
}

/// Encodes a tensor as .npy (format 1.0).
pub fn npy_bytes(t: &TensorValue) -> Vec<u8> {
    let shape = match t.shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        npy_descr(t.dtype)
    );
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.data);
    out
}

/// Reads a CSV with a header row: one row per sample, numeric columns.
/// Columns named in `drop` (e.g. a label column) are skipped.
pub fn read_csv(path: &Path, drop: &[&str]) -> Result<(Vec<String>, TensorValue)> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers: Vec<String> = r.headers()?.iter().map(str::to_string).collect();
    let keep: Vec<usize> = (0..headers.len())
        .filter(|&i| !drop.contains(&headers[i].as_str()))
        .collect();
    let mut values = vec![];
    let mut rows = 0usize;
    for (line, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), line + 2))?;
        for &i in &keep {
            let s = rec.get(i).unwrap_or("");
            let v: f32 = s.trim().parse().with_context(|| {
                format!(
                    "{}: row {}, column '{}': '{s}' is not a number",
                    path.display(),
                    line + 2,
                    headers[i]
                )
            })?;
            values.push(v);
        }
        rows += 1;
    }
    let cols: Vec<String> = keep.iter().map(|&i| headers[i].clone()).collect();
    Ok((
        cols.clone(),
        TensorValue::from_f32(vec![rows, cols.len()], &values),
    ))
}

/// Float TFLite models of the corpus with their LiteRT goldens (golden file
/// stem, model path): checked by the corpus test within 1e-5 of the output
/// scale. Integer TFLite models are not imported yet.
pub const CORPUS_TFLITE_GOLDEN: &[(&str, &str)] = &[
    (
        "tflm_hello_world_f32",
        "tflite-micro/hello_world_float.tflite",
    ),
    ("mlperf_ad_autoencoder_f32", "mlperf-tiny/ad01_fp32.tflite"),
    (
        "mlperf_ic_resnet8_f32",
        "mlperf-tiny/pretrainedResnet.tflite",
    ),
    // Int8 (TFLite spec): compared byte for byte.
    (
        "tflm_hello_world_int8",
        "tflite-micro/hello_world_int8.tflite",
    ),
    ("mlperf_ad_autoencoder_int8", "mlperf-tiny/ad01_int8.tflite"),
    (
        "tflm_micro_speech_int8",
        "tflite-micro/micro_speech_quantized.tflite",
    ),
    ("mlperf_kws_dscnn_int8", "mlperf-tiny/kws_ref_model.tflite"),
    (
        "mlperf_ic_resnet8_int8",
        "mlperf-tiny/pretrainedResnet_quant.tflite",
    ),
    (
        "mlperf_sww_streaming_wakeword_int8",
        "mlperf-tiny/str_ww_ref_model.tflite",
    ),
];

/// (golden file stem, model path relative to the corpus).
/// Shared by the corpus cross-check test and `cargo xtask bench`.
pub const CORPUS_GOLDEN: &[(&str, &str)] = &[
    ("burn_mnist_cnn", "onnx-real/burn_mnist.onnx"),
    ("burn_pico_sine", "onnx-real/burn_pico_sine.onnx"),
    ("zoo_mnist8_cntk", "onnx-real/mnist-8_cntk.onnx"),
    (
        "ort_logreg_iris_zipmap",
        "onnx-real/ort_logreg_iris_zipmap.onnx",
    ),
    (
        "mlperf_ad_autoencoder_f32.tflite2onnx",
        "mlperf-tiny-onnx/ad01_fp32.onnx",
    ),
    (
        "mlperf_ic_resnet8_f32.tflite2onnx",
        "mlperf-tiny-onnx/pretrainedResnet.onnx",
    ),
    ("sklearn_gb_wine", "sklearn/gb_wine.onnx"),
    ("sklearn_logreg_iris", "sklearn/logreg_iris.onnx"),
    ("sklearn_mlp_digits", "sklearn/mlp_digits.onnx"),
    ("sklearn_rf_breast_cancer", "sklearn/rf_breast_cancer.onnx"),
    (
        "tract_byte_sb_bidi_lstm",
        "tract-test-cases/byte_sb_bidi_lstm/model.onnx",
    ),
    (
        "tract_keras_tf2_example",
        "tract-test-cases/keras_tf2_example/model.onnx",
    ),
    (
        "tract_lgbm_classifier_tensor",
        "tract-test-cases/lgbm_classifier_tensor/model.onnx",
    ),
    (
        "tract_lgbm_regressor_tensor",
        "tract-test-cases/lgbm_regressor_tensor/model.onnx",
    ),
    (
        "tract_linear_classifier",
        "tract-test-cases/linear_classifier/model.onnx",
    ),
    (
        "tract_qlstm_3-2-3_T3_S1",
        "tract-test-cases/qlstm_3-2-3_T3_S1/model.onnx",
    ),
    (
        "tract_qtdnn_10x5_101_i32_biases",
        "tract-test-cases/qtdnn_10x5_101_i32_biases/model.onnx",
    ),
    (
        "tract_xgboost_classifier_tree",
        "tract-test-cases/xgboost_classifier_tree/model.onnx",
    ),
    (
        "tract_xgboost_regressor_tree",
        "tract-test-cases/xgboost_regressor_tree/model.onnx",
    ),
];

/// The `kiln run --profile` report: nodes by time (top 25), then time per op
/// kind, each with its share of the total.
pub fn profile_table(times: &[kiln_runtime_native::NodeTime], runs: usize) -> String {
    use std::fmt::Write;
    let total: f64 = times.iter().map(|t| t.micros).sum();
    let share = |us: f64| if total > 0.0 { 100.0 * us / total } else { 0.0 };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "profile: {} nodes, sum of per-node medians {total:.1} µs over {runs} runs",
        times.len()
    );
    let mut by_time: Vec<_> = times.iter().collect();
    by_time.sort_by(|a, b| b.micros.total_cmp(&a.micros));
    let _ = writeln!(
        s,
        "{:>5}  {:<16} {:>10} {:>6}  name",
        "node", "op", "µs", "%"
    );
    for t in by_time.iter().take(25) {
        let _ = writeln!(
            s,
            "{:>5}  {:<16} {:>10.1} {:>5.1}%  {}",
            t.index,
            t.op,
            t.micros,
            share(t.micros),
            t.name
        );
    }
    let mut by_op: Vec<(&str, usize, f64)> = vec![];
    for t in times {
        match by_op.iter_mut().find(|(op, _, _)| *op == t.op) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.micros;
            }
            None => by_op.push((t.op, 1, t.micros)),
        }
    }
    by_op.sort_by(|a, b| b.2.total_cmp(&a.2));
    let _ = writeln!(s, "{:<16} {:>5} {:>10} {:>6}", "op", "count", "µs", "%");
    for (op, n, us) in by_op {
        let _ = writeln!(s, "{op:<16} {n:>5} {us:>10.1} {:>5.1}%", share(us));
    }
    s
}
