//! The Kiln compiler: a model goes in, a validated, optimised `.kiln`
//! artifact comes out.
//!
//! Pipeline: [`onnx::parse`] (protobuf via tract-onnx's generated types) →
//! [`onnx::import`] (static shapes, constant folding with the engine's own
//! kernels) → [`passes::optimize`] (BatchNorm folding, bias and activation
//! fusion, dead-node elimination) → [`lower`] (reshape aliasing, arena
//! planning, weight layout, schema) → bytes via `kiln_format::write`.
//! The same imported, optimised graph is also written as other platforms'
//! formats: [`export_tflite`] (LiteRT) and [`export_coreml`] (Core ML).
//!
//! Architecture invariant: the compiler depends on `format` (writer),
//! `kernels` and `engine` (folding runs the device code), tract-onnx for
//! protobuf types only, `flatbuffers` and `prost` for writing the exports.
//! No runtime depends on the compiler.

pub mod coreml;
pub mod error;
pub mod eval;
pub mod fc;
pub mod ir;
mod lower;
pub mod onnx;
pub mod passes;
pub mod plan;
pub mod prune;
pub mod quantize;
pub mod run;
pub mod stats;
pub mod tflite;

pub use error::{CompileError, Result};
pub use eval::AlignedBytes;
pub use onnx::ImportOptions;

use kiln_format::write::{ArtifactDesc, PreprocessingDesc, ProvenanceDesc};
use sha2::{Digest, Sha256};

/// What to compile and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub import: ImportOptions,
    /// Model name in the metadata (default: the source file stem).
    pub name: Option<String>,
    /// Model version string.
    pub version: Option<String>,
    /// Skip the optimisation passes (for debugging and differential tests).
    pub no_optimize: bool,
    /// Pruning (after the optimisation passes, before quantization).
    pub prune: Option<prune::PruneOptions>,
    /// Post-training quantization (after the optimisation passes).
    pub quantize: Option<quantize::QuantizeOptions>,
    /// Arena and flash over speed, for microcontrollers (`--target mcu`
    /// sets it): no scratch for int8 convolutions and fully connected
    /// layers (firmware runs `kiln_kernels::compact`'s loops, other
    /// runtimes the references) and no packed weights.
    pub lean_scratch: bool,
    /// Reference data for the drift baseline the artifact carries
    /// (`kiln compile --reference DATA`).
    pub reference: Option<Reference>,
}

/// The reference window of a model's (single, tabular) input: samples
/// with one value per feature, the features' names, and which of them are
/// categorical.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    pub samples: run::Samples,
    pub names: Vec<String>,
    pub categorical: Vec<String>,
}

/// Property holding the artifact's drift baseline
/// (`kiln_protocol::Baseline::to_property`).
pub use kiln_protocol::BASELINE_PROPERTY;

/// The drift baseline of `reference` for a model whose input takes
/// `features` values per sample, as the artifact property's value.
fn baseline_property(reference: &Reference, g: &ir::Graph) -> Result<String> {
    use kiln_protocol::{Baseline, FeatureBaseline, sketch::DEFAULT_BINS};
    let shape = match g.inputs.as_slice() {
        [x] => g.tensors[*x].shape.clone(),
        _ => {
            return Err(CompileError::Invalid(
                "--reference needs a model with one input".into(),
            ));
        }
    };
    // An 8-bit input's baseline is of its codes, as the runtimes see them
    // (drift tests are unchanged by the affine map to real values).
    let dtype = g.tensors[g.inputs[0]].dtype;
    if let Some((bad, lo, hi)) = run::not_a_code(dtype, &reference.samples.data) {
        return Err(CompileError::Invalid(format!(
            "--reference: the model's input takes {dtype:?} codes (whole numbers in {lo}..={hi}), but the reference holds {bad}: give the inputs as the model takes them (e.g. an int8 .npy)"
        )));
    }
    if let Some(axis) = kiln_protocol::channel_axis(&shape) {
        return tensor_baseline(reference, g, &shape, axis);
    }
    let features = shape.last().copied().unwrap_or(1);
    let s = &reference.samples;
    if s.count == 0 || s.sample_len() != features {
        return Err(CompileError::Invalid(format!(
            "--reference: {} samples of {} values, but the model takes {features} values per sample",
            s.count,
            s.sample_len()
        )));
    }
    for c in &reference.categorical {
        if !reference.names.contains(c) {
            return Err(CompileError::Invalid(format!(
                "--categorical {c}: no such reference column (columns: {:?})",
                reference.names
            )));
        }
    }
    let names: Vec<String> = (0..features)
        .map(|k| {
            reference
                .names
                .get(k)
                .cloned()
                .unwrap_or_else(|| format!("x[{k}]"))
        })
        .collect();
    let baseline = Baseline {
        features: names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let column: Vec<f64> = (0..s.count).map(|i| f64::from(s.sample(i)[k])).collect();
                FeatureBaseline::from_reference(
                    &column,
                    reference.categorical.contains(name),
                    DEFAULT_BINS,
                )
            })
            .collect(),
        names,
        prediction: None,
        channels: None,
    };
    Ok(with_predictions(baseline, g, s).to_property())
}

/// The baseline of a tensor input (`shape`, batch first): per channel of
/// `axis`, the distribution of the samples' means and standard deviations.
fn tensor_baseline(
    reference: &Reference,
    g: &ir::Graph,
    shape: &[usize],
    axis: usize,
) -> Result<String> {
    use kiln_protocol::{Baseline, FeatureBaseline, sketch::DEFAULT_BINS};
    let s = &reference.samples;
    let per_sample: usize = shape[1..].iter().product();
    if s.count == 0 || s.sample_len() != per_sample {
        return Err(CompileError::Invalid(format!(
            "--reference: {} samples of {} values, but the model's input {shape:?} takes {per_sample} per sample",
            s.count,
            s.sample_len()
        )));
    }
    let channels = shape[axis];
    let mut summaries = vec![0.0; 2 * channels];
    let mut columns = vec![Vec::with_capacity(s.count); 2 * channels];
    for i in 0..s.count {
        let sample = s.sample(i);
        kiln_protocol::summarize_channels(|k| f64::from(sample[k]), shape, axis, &mut summaries)
            .map_err(|e| CompileError::Invalid(format!("--reference: {e}")))?;
        for (c, v) in columns.iter_mut().zip(&summaries) {
            c.push(*v);
        }
    }
    let names = (0..2 * channels)
        .map(|k| format!("c{}.{}", k / 2, if k % 2 == 0 { "mean" } else { "std" }))
        .collect();
    let baseline = Baseline {
        names,
        features: columns
            .iter()
            .map(|c| FeatureBaseline::from_reference(c, false, DEFAULT_BINS))
            .collect(),
        prediction: None,
        channels: Some(axis as u32),
    };
    Ok(with_predictions(baseline, g, s).to_property())
}

/// `baseline` with what the model predicts on the reference samples: a
/// classifier's class (the largest score of its score output), a
/// regressor's value.
fn with_predictions(
    mut baseline: kiln_protocol::Baseline,
    g: &ir::Graph,
    s: &run::Samples,
) -> kiln_protocol::Baseline {
    use kiln_protocol::{FeatureBaseline, PredictionBaseline, sketch::DEFAULT_BINS};
    if let Ok((out, preds)) = quantize::predict_any(g, s) {
        let output = g.outputs.iter().position(|&o| o == out).unwrap_or(0) as u32;
        let argmax = g.tensors[out].shape.last().copied().unwrap_or(1) > 1;
        let values: Vec<f64> = preds
            .iter()
            .map(|p| {
                if argmax {
                    quantize::argmax(p) as f64
                } else {
                    p.first().map_or(f64::NAN, |&v| f64::from(v))
                }
            })
            .collect();
        baseline.prediction = Some(PredictionBaseline {
            output,
            argmax,
            feature: FeatureBaseline::from_reference(&values, argmax, DEFAULT_BINS),
        });
    }
    baseline
}

/// Compile statistics for `kiln compile` and `kiln inspect`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub ops_before: Vec<(String, usize)>,
    pub ops_after: Vec<(String, usize)>,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub passes: Vec<(&'static str, usize)>,
    pub params: usize,
    pub weight_bytes: usize,
    pub arena_bytes: usize,
    pub macs: u64,
    pub artifact_bytes: usize,
    pub per_sample_batch: bool,
    /// A symbolic dim 0 was fixed to 1 because samples are not independent.
    pub batch_fixed_to_one: bool,
    pub warnings: Vec<String>,
    /// What quantization did, when asked for.
    pub quant: Option<quantize::QuantReport>,
    /// What pruning did, when asked for.
    pub prune: Option<prune::PruneReport>,
}

/// A compiled artifact.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub bytes: Vec<u8>,
    pub report: Report,
}

/// Stages reported to a progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Parse,
    Import,
    Optimize,
    Plan,
    Write,
}

/// Compiles ONNX bytes. `source_name` is recorded in the provenance.
pub fn compile_onnx(bytes: &[u8], source_name: &str, opts: &Options) -> Result<Compiled> {
    compile_onnx_with_progress(bytes, source_name, opts, &mut |_| {})
}

/// [`compile_onnx`] with a progress callback.
pub fn compile_onnx_with_progress(
    bytes: &[u8],
    source_name: &str,
    opts: &Options,
    progress: &mut dyn FnMut(Stage),
) -> Result<Compiled> {
    progress(Stage::Parse);
    let model = onnx::parse(bytes)?;
    progress(Stage::Import);
    let imported = onnx::import(&model, &opts.import)?;
    finish(imported, bytes, "onnx", source_name, opts, progress)
}

/// Compiles ONNX or TFLite (float models, see [`tflite`]), whichever
/// `bytes` are (TFLite by its `TFL3` file identifier).
pub fn compile_model_with_progress(
    bytes: &[u8],
    source_name: &str,
    opts: &Options,
    progress: &mut dyn FnMut(Stage),
) -> Result<Compiled> {
    if !tflite::is_tflite(bytes) {
        return compile_onnx_with_progress(bytes, source_name, opts, progress);
    }
    progress(Stage::Parse);
    progress(Stage::Import);
    let imported = tflite::import(bytes, &opts.import)?;
    finish(imported, bytes, "tflite", source_name, opts, progress)
}

/// The model (ONNX or TFLite), imported and optimised as for
/// [`compile_model`], written as a LiteRT flatbuffer (see
/// [`tflite::export`] for what it can express).
pub fn export_tflite(bytes: &[u8], source_name: &str, opts: &Options) -> Result<Vec<u8>> {
    if opts.quantize.is_some() || opts.prune.is_some() {
        return Err(CompileError::Invalid(
            "--target tflite writes the float model: quantization and pruning are not exported yet"
                .into(),
        ));
    }
    let imported = import_optimized(bytes, opts)?;
    let g = imported.graph;
    let description = format!(
        "kiln-compiler {} from {source_name}",
        env!("CARGO_PKG_VERSION")
    );
    tflite::export::export(
        &g,
        &imported.input_names,
        &imported.output_names,
        &description,
    )
}

/// Imports `bytes` and runs the optimisation passes, as the exports do.
fn import_optimized(bytes: &[u8], opts: &Options) -> Result<onnx::Imported> {
    let mut imported = if tflite::is_tflite(bytes) {
        tflite::import(bytes, &opts.import)?
    } else {
        onnx::import(&onnx::parse(bytes)?, &opts.import)?
    };
    if opts.no_optimize {
        passes::dead_nodes(&mut imported.graph);
    } else {
        passes::optimize(&mut imported.graph);
    }
    Ok(imported)
}

/// `--target coreml`: the model as a Core ML ML Program package. Weights
/// stay float32, or are stored float16 (`--quantize f16`) or 8-bit linear
/// per channel (`--quantize weights`: Core ML computes in float, so int8
/// weights are all of int8 it can keep), with the weights Kiln's own
/// `--quantize f16` / `weights` would store.
pub fn export_coreml(bytes: &[u8], source_name: &str, opts: &Options) -> Result<coreml::Package> {
    use quantize::Precision;
    let storage = match opts.quantize.as_ref().map(|q| q.precision) {
        None => coreml::WeightStorage::F32,
        Some(Precision::F16) => coreml::WeightStorage::F16,
        Some(Precision::Weights) => coreml::WeightStorage::Int8,
        Some(p @ (Precision::Int8 | Precision::Dynamic)) => {
            return Err(CompileError::Invalid(format!(
                "--target coreml --quantize {}: Core ML computes in float, so activations cannot be int8; use --quantize weights (int8 weights) or --quantize f16",
                format!("{p:?}").to_lowercase()
            )));
        }
    };
    if opts.prune.is_some() {
        return Err(CompileError::Invalid(
            "--target coreml writes the unpruned model: pruning is not exported yet".into(),
        ));
    }
    let imported = import_optimized(bytes, opts)?;
    let compiler = format!("kiln-compiler {}", env!("CARGO_PKG_VERSION"));
    let meta = coreml::Meta {
        short_description: format!("{compiler} from {source_name}"),
        version: opts.version.clone().unwrap_or_else(|| "1".into()),
        provenance: [
            ("kiln.source".to_string(), source_name.to_string()),
            (
                "kiln.source_sha256".to_string(),
                Sha256::digest(bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            ),
            ("kiln.compiler".to_string(), compiler),
        ]
        .into(),
    };
    coreml::export(
        &imported.graph,
        &imported.input_names,
        &imported.output_names,
        storage,
        &meta,
    )
}

/// [`compile_model_with_progress`] without progress.
pub fn compile_model(bytes: &[u8], source_name: &str, opts: &Options) -> Result<Compiled> {
    compile_model_with_progress(bytes, source_name, opts, &mut |_| {})
}

/// Everything after import: passes, planning, writing.
fn finish(
    imported: onnx::Imported,
    bytes: &[u8],
    source_format: &str,
    source_name: &str,
    opts: &Options,
    progress: &mut dyn FnMut(Stage),
) -> Result<Compiled> {
    let mut g = imported.graph;
    let nodes_before = g.nodes.len();
    let ops_before = g.op_histogram();
    progress(Stage::Optimize);
    let mut passes = if opts.no_optimize {
        vec![("dead-nodes", passes::dead_nodes(&mut g))]
    } else {
        passes::optimize(&mut g)
    };
    let batch = if imported.batch_name.is_some()
        && imported.batch_unsafe.is_none()
        && passes::per_sample_batch_ok(&g)
    {
        imported.batch_name.clone()
    } else {
        None
    };
    let mut warnings = imported.warnings;
    if imported.batch_name.is_some() && batch.is_none() {
        warnings.push("dim 0 is not an independent batch in this graph; the artifact is compiled for a fixed batch of 1 (use --dim to choose the size)".into());
    }
    let pruned = match &opts.prune {
        Some(p) => Some(prune::prune(&mut g, p)?),
        None => None,
    };
    let stats = stats::graph_stats(&g);
    let quant = match &opts.quantize {
        Some(q) => {
            let r = quantize::quantize(&mut g, q)?;
            warnings.extend(r.warnings.iter().cloned());
            Some(r)
        }
        None => None,
    };
    // A lowering for the int8 kernels, after everything that reads QConv;
    // not for microcontrollers, whose scratch-free kernels read the
    // weights as they are.
    if !opts.no_optimize && !opts.lean_scratch {
        passes.push(("pack-int8-conv", passes::pack_int8_conv(&mut g)));
        passes.push(("pack-int8-fc", passes::pack_int8_fc(&mut g)));
    }
    // Weights magnitude pruning left mostly zero are stored sparse (after
    // packing: the packed layouts keep the zeros).
    if matches!(&opts.prune, Some(p) if matches!(p.method, prune::Prune::Magnitude(_))) {
        passes.push(("sparse-weights", passes::sparse_weights(&mut g)));
    }
    let ops_after = g.op_histogram();
    let nodes_after = g.nodes.len();
    progress(Stage::Plan);
    // The drift baseline, predictions included: on the graph as it will run.
    let baseline = match &opts.reference {
        Some(r) => Some(baseline_property(r, &g)?),
        None => None,
    };
    let lowered = lower::alias_reshapes(g);
    let stem = std::path::Path::new(source_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let created = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let mut desc = ArtifactDesc {
        name: opts.name.clone().unwrap_or(stem),
        version: opts.version.clone().unwrap_or_else(|| "1".into()),
        description: String::new(),
        provenance: ProvenanceDesc {
            source_format: source_format.into(),
            source_name: std::path::Path::new(source_name)
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .into(),
            source_sha256: Sha256::digest(bytes).into(),
            producer: imported.producer,
            compiler: concat!("kiln-compiler ", env!("CARGO_PKG_VERSION")).into(),
            created_unix: created,
        },
        preprocessing: imported
            .preprocessing
            .iter()
            .map(|(k, d, i)| PreprocessingDesc {
                kind: k.clone(),
                detail: d.clone(),
                input: i.clone(),
            })
            .collect(),
        properties: imported.properties,
        ..Default::default()
    };
    if let Some(b) = baseline {
        desc.properties.push((BASELINE_PROPERTY.into(), b));
    }
    // Recorded so `kiln inspect` can report them for artifacts too.
    desc.properties
        .push(("kiln.macs".into(), stats.macs.to_string()));
    desc.properties
        .push(("kiln.params".into(), stats.params.to_string()));
    if let Some(p) = &pruned {
        let mut v = format!(
            "{}; MACs {} -> {}; parameters {} -> {}",
            p.method, p.macs_before, p.macs_after, p.params_before, p.params_after
        );
        if let Some((metric, f, pv, drop)) = &p.gate {
            v += &format!("; {metric}: float {f:.4}, pruned {pv:.4}, drop {drop:.4}");
        }
        desc.properties.push(("kiln.prune".into(), v));
    }
    if let Some(q) = &quant {
        // One property: small models should not pay much for the record.
        let mut v = q.precision.clone();
        if !q.calibrator.is_empty() {
            v += &format!("; calibration {}", q.calibrator);
        }
        if let Some((metric, f, qv, drop)) = &q.gate {
            v += &format!("; {metric}: float {f:.4}, quantized {qv:.4}, drop {drop:.4}");
        }
        if !q.kept_float.is_empty() {
            // Counts only: the names can be long, and the graph itself
            // shows each layer's precision (`kiln inspect --layers`).
            let count = |how| q.kept_float.iter().filter(|(_, h)| *h == how).count();
            v += &format!(
                "; {} layers kept float ({} with f16 weights, {} with int8 weights, the rest without weights)",
                q.kept_float.len(),
                count(quantize::KeptAs::F16),
                count(quantize::KeptAs::Int8Weights)
            );
        }
        desc.properties.push(("kiln.quant".into(), v));
    }
    let mp = lower::lower(
        &lowered,
        &mut desc,
        &imported.input_names,
        &imported.output_names,
        batch.as_deref(),
        &imported.labels,
        opts.lean_scratch,
    )?;
    progress(Stage::Write);
    let bytes = desc.to_bytes()?;
    // What we wrote must load: parse it back and let the engine check it.
    let aligned = AlignedBytes::from_slice(&bytes);
    let view = kiln_format::View::parse(aligned.as_slice()).map_err(|e| {
        CompileError::Invalid(format!(
            "internal error: the written artifact does not parse: {e}"
        ))
    })?;
    kiln_engine::Plan::new(view).map_err(|e| {
        CompileError::Invalid(format!(
            "internal error: the written artifact does not plan: {e}"
        ))
    })?;
    let report = Report {
        ops_before,
        ops_after,
        nodes_before,
        nodes_after,
        passes,
        params: stats.params,
        weight_bytes: desc.weights.len(),
        arena_bytes: mp.arena_size,
        macs: stats.macs,
        artifact_bytes: bytes.len(),
        per_sample_batch: batch.is_some(),
        batch_fixed_to_one: imported.batch_name.is_some() && batch.is_none(),
        warnings,
        quant,
        prune: pruned,
    };
    Ok(Compiled { bytes, report })
}

/// Every supported ONNX op (`domain::Op`, ai.onnx without a domain).
pub fn supported_ops() -> Vec<String> {
    onnx::registry().names()
}
