//! Library side of the `kiln` command: tensor file formats (.npy, .npz,
//! CSV) shared by the binary and its tests. Internal crate.

use anyhow::{Context, Result, bail};

pub mod drift;
pub mod mcu;
pub mod wasm_module;
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
    let (cols, t, _) = csv_table(path, drop, None)?;
    Ok((cols, t))
}

/// [`read_csv`] that also takes column `label` out as the labels.
fn csv_table(
    path: &Path,
    drop: &[&str],
    label: Option<&str>,
) -> Result<(Vec<String>, TensorValue, Option<Vec<f64>>)> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers: Vec<String> = r.headers()?.iter().map(str::to_string).collect();
    let label_at = match label {
        Some(col) => Some(headers.iter().position(|h| h == col).with_context(|| {
            format!(
                "{}: no column '{col}' for the labels (columns: {}...)",
                path.display(),
                headers
                    .iter()
                    .take(8)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?),
        None => None,
    };
    let keep: Vec<usize> = (0..headers.len())
        .filter(|&i| !drop.contains(&headers[i].as_str()) && Some(i) != label_at)
        .collect();
    let mut values = vec![];
    let mut labels = vec![];
    let mut rows = 0usize;
    for (line, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), line + 2))?;
        let text = |i: usize| rec.get(i).unwrap_or("").trim();
        let bad = |i: usize| {
            anyhow::anyhow!(
                "{}: row {}, column '{}': '{}' is not a number",
                path.display(),
                line + 2,
                headers[i],
                text(i)
            )
        };
        for &i in &keep {
            values.push(text(i).parse::<f32>().map_err(|_| bad(i))?);
        }
        if let Some(i) = label_at {
            labels.push(text(i).parse::<f64>().map_err(|_| bad(i))?);
        }
        rows += 1;
    }
    let cols: Vec<String> = keep.iter().map(|&i| headers[i].clone()).collect();
    let t = TensorValue::from_f32(vec![rows, cols.len()], &values);
    Ok((cols, t, label_at.map(|_| labels)))
}

/// Samples and optional labels for calibration, validation and `kiln eval`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Every sample's values as f32, back to back.
    pub values: Vec<f32>,
    /// Number of samples (dim 0 of the array, rows of a CSV).
    pub count: usize,
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// One label per sample, when asked for.
    pub labels: Option<Vec<f64>>,
}

impl Dataset {
    /// The first `n` samples.
    pub fn take(mut self, n: usize) -> Dataset {
        if n < self.count {
            let len = self.values.len() / self.count.max(1);
            self.values.truncate(n * len);
            self.count = n;
            if let Some(l) = &mut self.labels {
                l.truncate(n);
            }
        }
        self
    }

    /// Labels as class indices (they must be whole numbers).
    pub fn class_labels(&self) -> Result<Option<Vec<i64>>> {
        let Some(l) = &self.labels else {
            return Ok(None);
        };
        l.iter()
            .enumerate()
            .map(|(i, &v)| {
                if v.fract() == 0.0 && v.is_finite() {
                    Ok(v as i64)
                } else {
                    bail!("label {i} is {v}, not a class index")
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// One label array from a file: .npy (any numeric type), or text with one
/// number per line (a header line is skipped).
fn read_label_file(path: &Path) -> Result<Vec<f64>> {
    if path.extension().is_some_and(|e| e == "npy") {
        return Ok(read_npy(path)?.to_f64());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<f64>() {
            Ok(v) => out.push(v),
            Err(_) if i == 0 => {}
            Err(_) => bail!(
                "{}: line {}: '{line}' is not a number",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}

/// Reads a dataset: `.npy` (samples along dim 0), `.npz` (the array named
/// `x`, `X`, `input`, `inputs`, `data` or else the first), or CSV with a
/// header (one row per sample). `labels` is a CSV column or .npz array
/// name, or a file (.npy or one number per line).
pub fn read_dataset(path: &Path, labels: Option<&str>) -> Result<Dataset> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let label_file = labels
        .map(Path::new)
        .filter(|p| p.is_file())
        .map(read_label_file)
        .transpose()?;
    let (values, shape, mut found) = match ext.as_str() {
        "csv" => {
            let col = labels.filter(|_| label_file.is_none());
            let (_, t, found) = csv_table(path, &[], col)?;
            (t.to_f64(), t.shape, found)
        }
        "npz" => {
            let arrays = read_npz(path)?;
            let pick = ["x", "X", "input", "inputs", "data"]
                .iter()
                .find_map(|k| arrays.iter().find(|(n, _)| n == k))
                .or_else(|| arrays.iter().find(|(n, _)| Some(n.as_str()) != labels))
                .with_context(|| format!("{}: no arrays", path.display()))?;
            let found = match (labels, &label_file) {
                (Some(k), None) => Some(
                    arrays
                        .iter()
                        .find(|(n, _)| n == k)
                        .with_context(|| {
                            format!(
                                "{}: no array named '{k}' for the labels (arrays: {})",
                                path.display(),
                                arrays
                                    .iter()
                                    .map(|a| a.0.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })?
                        .1
                        .to_f64(),
                ),
                _ => None,
            };
            (pick.1.to_f64(), pick.1.shape.clone(), found)
        }
        "npy" => {
            if let (Some(l), None) = (labels, &label_file) {
                bail!("--labels {l}: no such file (a .npy dataset takes its labels from a file)");
            }
            let t = read_npy(path)?;
            (t.to_f64(), t.shape.clone(), None)
        }
        _ => bail!(
            "{}: unknown dataset format (expected .npy, .npz or .csv)",
            path.display()
        ),
    };
    if found.is_none() {
        found = label_file;
    }
    let count = shape.first().copied().unwrap_or(1);
    if count == 0 {
        bail!("{}: the dataset holds no samples", path.display());
    }
    if let Some(l) = &found
        && l.len() != count
    {
        bail!(
            "{}: {} samples but {} labels",
            path.display(),
            count,
            l.len()
        );
    }
    Ok(Dataset {
        values: values.iter().map(|&v| v as f32).collect(),
        count,
        sample_shape: shape.get(1..).unwrap_or(&[]).to_vec(),
        labels: found,
    })
}

/// Classification metrics of predicted vs true class indices.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMetrics {
    pub samples: usize,
    pub accuracy: f64,
    /// Class indices seen in labels or predictions, ascending.
    pub classes: Vec<i64>,
    /// `confusion[i][j]`: samples of true class `classes[i]` predicted as `classes[j]`.
    pub confusion: Vec<Vec<usize>>,
}

pub fn class_metrics(pred: &[i64], truth: &[i64]) -> ClassMetrics {
    let mut classes: Vec<i64> = pred.iter().chain(truth).copied().collect();
    classes.sort_unstable();
    classes.dedup();
    let idx = |c: i64| classes.binary_search(&c).unwrap_or(0);
    let mut confusion = vec![vec![0usize; classes.len()]; classes.len()];
    let mut hits = 0;
    for (&p, &t) in pred.iter().zip(truth) {
        confusion[idx(t)][idx(p)] += 1;
        hits += usize::from(p == t);
    }
    ClassMetrics {
        samples: pred.len().min(truth.len()),
        accuracy: hits as f64 / pred.len().min(truth.len()).max(1) as f64,
        classes,
        confusion,
    }
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
    ("tflm_mnist_lstm_f32", "tflite-micro/trained_lstm.tflite"),
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
    // Int8x8_16 LSTMs (int16 gates and cell state).
    (
        "tflm_mnist_lstm_int8",
        "tflite-micro/trained_lstm_int8.tflite",
    ),
    (
        "tflm_dtln_noise_suppression_int8",
        "tflite-micro/dtln_noise_suppression.tflite",
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

/// How two runs of the same output differ ([`compare_outputs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDiff {
    /// Largest `|a - b|`.
    pub max_abs: f64,
    /// Largest `|a - b| / max(|b|, 1e-12)`.
    pub max_rel: f64,
    /// Rows (over the last axis) whose argmax agrees, for outputs of rank
    /// >= 2 with more than one column; `None` otherwise.
    pub argmax_agree: Option<usize>,
    /// Rows compared for `argmax_agree`.
    pub rows: usize,
}

/// Compares two models' outputs position by position (values as f64, so a
/// quantized output is compared in its raw integers; its argmax is still
/// meaningful). Errors when the outputs differ in number or shape.
pub fn compare_outputs(a: &[TensorValue], b: &[TensorValue]) -> Result<Vec<OutputDiff>, String> {
    if a.len() != b.len() {
        return Err(format!(
            "the models have {} and {} outputs",
            a.len(),
            b.len()
        ));
    }
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(k, (x, y))| {
            if x.shape != y.shape {
                return Err(format!(
                    "output {k}: shapes {:?} and {:?} differ",
                    x.shape, y.shape
                ));
            }
            let (u, v) = (x.to_f64(), y.to_f64());
            let (mut max_abs, mut max_rel) = (0f64, 0f64);
            for (p, q) in u.iter().zip(&v) {
                let d = (p - q).abs();
                let d = if d.is_nan() && !(p.is_nan() && q.is_nan()) {
                    f64::INFINITY
                } else {
                    d
                };
                if d.is_nan() {
                    continue;
                }
                max_abs = max_abs.max(d);
                max_rel = max_rel.max(d / q.abs().max(1e-12));
            }
            let cols = x.shape.last().copied().unwrap_or(0);
            let (argmax_agree, rows) = if x.shape.len() >= 2 && cols > 1 {
                let argmax = |r: &[f64]| {
                    r.iter()
                        .enumerate()
                        .fold(
                            (0, f64::NEG_INFINITY),
                            |m, (i, &val)| if val > m.1 { (i, val) } else { m },
                        )
                        .0
                };
                let agree = u
                    .chunks_exact(cols)
                    .zip(v.chunks_exact(cols))
                    .filter(|(r, s)| argmax(r) == argmax(s))
                    .count();
                (Some(agree), u.len() / cols)
            } else {
                (None, 0)
            };
            Ok(OutputDiff {
                max_abs,
                max_rel,
                argmax_agree,
                rows,
            })
        })
        .collect()
}

#[cfg(test)]
mod compare_tests {
    use super::*;
    use kiln_runtime_native::DType;

    fn f32s(shape: &[usize], v: &[f32]) -> TensorValue {
        TensorValue {
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn diffs_and_argmax_agreement() {
        let a = f32s(&[2, 3], &[0.1, 0.7, 0.2, 0.5, 0.4, 0.1]);
        let b = f32s(&[2, 3], &[0.1, 0.6, 0.3, 0.3, 0.6, 0.1]);
        let d = compare_outputs(std::slice::from_ref(&a), &[b]).expect("same shapes");
        assert!((d[0].max_abs - 0.2).abs() < 1e-6, "{d:?}");
        // |0.5 - 0.3| / 0.3 is the largest relative difference.
        assert!((d[0].max_rel - 2.0 / 3.0).abs() < 1e-6, "{d:?}");
        // Row 0 agrees (column 1), row 1 does not (0 vs 1).
        assert_eq!((d[0].argmax_agree, d[0].rows), (Some(1), 2));
        let e = compare_outputs(&[a], &[f32s(&[3, 2], &[0.0; 6])]);
        assert!(e.is_err());
    }
}

/// A corpus model compiled for its golden file (`golden/<stem>.npz`):
/// the artifact, the golden inputs in the model's input order, and the
/// golden outputs by name.
#[derive(Debug)]
pub struct GoldenCase {
    pub artifact: Vec<u8>,
    pub inputs: Vec<(String, TensorValue)>,
    pub outputs: Vec<(String, TensorValue)>,
}

impl GoldenCase {
    /// Compiles `rel` (relative to `corpus`) for a symbolic batch when every
    /// golden input has batch 1 (the usual deployment), else at the golden's
    /// shapes; symbolic dims other than the batch are taken from the golden.
    pub fn compile(corpus: &Path, stem: &str, rel: &str) -> Result<GoldenCase> {
        let golden = read_npz(&corpus.join("golden").join(format!("{stem}.npz")))?;
        let inputs: Vec<(String, TensorValue)> = golden
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("in:").map(|n| (n.to_string(), v.clone())))
            .collect();
        let outputs = golden
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("out:").map(|n| (n.to_string(), v.clone())))
            .collect();
        let path = corpus.join(rel);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut opts = kiln_compiler::Options::default();
        if !inputs.iter().all(|(_, t)| t.shape.first() == Some(&1)) {
            for (n, t) in &inputs {
                opts.import.input_shapes.insert(n.clone(), t.shape.clone());
            }
        }
        let compiled = match kiln_compiler::compile_model(&bytes, rel, &opts) {
            Err(kiln_compiler::CompileError::Input { .. }) => {
                for (n, t) in &inputs {
                    opts.import.input_shapes.insert(n.clone(), t.shape.clone());
                }
                kiln_compiler::compile_model(&bytes, rel, &opts)
            }
            other => other,
        }
        .with_context(|| format!("compile {rel}"))?;
        let model = kiln_runtime_native::Model::load(&compiled.bytes)?;
        let inputs = model
            .inputs()
            .iter()
            .map(|s| {
                inputs
                    .iter()
                    .find(|(n, _)| n == &s.name)
                    .cloned()
                    .with_context(|| format!("golden {stem} lacks input {}", s.name))
            })
            .collect::<Result<_>>()?;
        Ok(GoldenCase {
            artifact: compiled.bytes,
            inputs,
            outputs,
        })
    }
}

fn tensor_json(name: &str, t: &TensorValue, file: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "dtype": t.dtype.name(),
        "shape": t.shape,
        "file": file,
    })
}

/// Fixtures for the JavaScript package's tests and benchmark: every corpus
/// model with a golden file, compiled and run natively. Writes
/// `<stem>.kiln`, raw little-endian `.bin` tensors and `<stem>.json` (the
/// source model, input and output names, dtypes, shapes and files) per
/// case, and `manifest.json` listing the cases. Returns the case count.
pub fn write_wasm_fixtures(corpus: &Path, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut stems = vec![];
    for (stem, rel) in CORPUS_GOLDEN.iter().chain(CORPUS_TFLITE_GOLDEN) {
        let case = GoldenCase::compile(corpus, stem, rel)?;
        let model = kiln_runtime_native::Model::load(&case.artifact)?;
        let ordered: Vec<&TensorValue> = case.inputs.iter().map(|(_, t)| t).collect();
        let outputs = model.session().run(&ordered)?;
        std::fs::write(dir.join(format!("{stem}.kiln")), &case.artifact)?;
        let mut ins = vec![];
        for (k, (name, t)) in case.inputs.iter().enumerate() {
            let file = format!("{stem}.in{k}.bin");
            std::fs::write(dir.join(&file), &t.data)?;
            ins.push(tensor_json(name, t, &file));
        }
        let mut outs = vec![];
        for (k, (spec, t)) in model.outputs().iter().zip(&outputs).enumerate() {
            let file = format!("{stem}.out{k}.bin");
            std::fs::write(dir.join(&file), &t.data)?;
            outs.push(tensor_json(&spec.name, t, &file));
        }
        let desc =
            serde_json::json!({ "stem": stem, "source": rel, "inputs": ins, "outputs": outs });
        std::fs::write(dir.join(format!("{stem}.json")), desc.to_string())?;
        stems.push(stem.to_string());
    }
    let manifest = serde_json::json!({ "cases": stems });
    std::fs::write(dir.join("manifest.json"), manifest.to_string())?;
    Ok(stems.len())
}
