//! `kiln`: compile, inspect and run models.
//!
//! Exit codes: 0 ok, 1 other error, 2 usage, 3 invalid or unsupported
//! model, 4 input rejected by the model's schema, 5 the model does not fit
//! `--budget`.

use anyhow::{Context, Result, anyhow};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use kiln_cli::{npy_bytes, read_csv, read_dataset, read_npy};
use kiln_compiler::prune::PruneOptions;
use kiln_compiler::quantize::{Calibrator, QuantizeOptions, Samples, Task, Validation};
use kiln_compiler::{Options, Report, Stage};
use kiln_runtime_native::{DType, IoSchema, Model, RunError, TensorValue};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod ota;

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Compile, inspect and run edge ML models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one command is parsed per process; boxing clap's flattened arguments buys nothing"
)]
enum Cmd {
    /// Show a model's inputs, outputs, ops, parameters, MACs and memory.
    Inspect {
        /// An .onnx or .tflite model, or a .kiln artifact
        model: PathBuf,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Also list every layer: op, output dtype (its precision) and shape
        #[arg(long)]
        layers: bool,
    },
    /// Compile a model into a .kiln artifact.
    Compile {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Value for a symbolic dim, e.g. --dim length=58 (repeatable)
        #[arg(long = "dim", value_name = "NAME=N")]
        dims: Vec<String>,
        /// Skip graph optimisations
        #[arg(long)]
        no_optimize: bool,
        /// Model version recorded in the artifact
        #[arg(long)]
        model_version: Option<String>,
        /// What to write: a .kiln artifact, or one self-contained .wasm
        /// (engine + model, C-like ABI: kiln_input_ptr, kiln_run, ...)
        #[arg(long, value_enum, default_value_t = Target::Kiln)]
        target: Target,
        /// With --target mcu: fail unless the model fits, e.g.
        /// flash=256K,ram=64K (flash: artifact + runtime estimate; ram:
        /// arena + stack estimate)
        #[arg(long, value_name = "flash=SIZE,ram=SIZE")]
        budget: Option<kiln_cli::mcu::Budget>,
        #[command(flatten)]
        quant: QuantArgs,
        #[command(flatten)]
        reference: ReferenceArgs,
    },
    /// Run a model (.onnx or .kiln) on .npy or CSV inputs.
    Run {
        model: PathBuf,
        /// Input as [NAME=]FILE.npy (repeatable; by position when NAME is omitted)
        #[arg(long = "input", value_name = "[NAME=]FILE.npy")]
        inputs: Vec<String>,
        /// Tabular input: CSV with a header row, one row per sample
        #[arg(long = "input-csv", value_name = "FILE")]
        input_csv: Option<PathBuf>,
        /// CSV columns to ignore (e.g. the label)
        #[arg(long = "drop-column", value_name = "NAME")]
        drop_columns: Vec<String>,
        /// Write the first output here
        #[arg(long)]
        output: Option<PathBuf>,
        /// Write every output as DIR/<output name>.npy
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Print the outputs as JSON
        #[arg(long)]
        json: bool,
        /// Accept NaN/Inf inputs (e.g. missing values for tree ensembles)
        #[arg(long)]
        allow_non_finite: bool,
        /// Also time every node over RUNS runs and print the medians (stderr)
        #[arg(long, value_name = "RUNS", num_args = 0..=1, default_missing_value = "200")]
        profile: Option<usize>,
    },
    /// Run two models on the same inputs and compare their outputs (max
    /// absolute and relative difference, argmax agreement per row).
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Input as [NAME=]FILE.npy (repeatable; by position when NAME is omitted)
        #[arg(long = "input", value_name = "[NAME=]FILE.npy")]
        inputs: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Data drift between a reference and a current CSV window, column by
    /// column, with Evidently's default tests and thresholds (K-S,
    /// chi-square or Z-test for up to 1000 reference rows; normed
    /// Wasserstein or Jensen-Shannon above). Exit code 6 when the dataset
    /// drifts.
    Drift {
        /// Reference window (CSV with a header row)
        #[arg(
            long,
            required_unless_present = "baseline",
            conflicts_with = "baseline"
        )]
        reference: Option<PathBuf>,
        /// Instead of --reference: the drift baseline a .kiln artifact
        /// carries (`kiln compile --reference`); the current window is
        /// judged from its sketch in that baseline's bins
        #[arg(long, value_name = "ARTIFACT")]
        baseline: Option<PathBuf>,
        /// Current window (CSV, same columns)
        #[arg(long)]
        current: PathBuf,
        /// Columns to treat as categorical (comma-separated); columns with
        /// a non-numeric value are categorical anyway
        #[arg(long, value_delimiter = ',')]
        categorical: Vec<String>,
        /// Columns to leave out (comma-separated), e.g. an id
        #[arg(long, value_delimiter = ',')]
        ignore: Vec<String>,
        /// A test for a column instead of the default: COLUMN=ks|z|chisquare|wasserstein|jensenshannon|psi (repeatable)
        #[arg(long = "stattest", value_name = "COLUMN=TEST")]
        stattests: Vec<String>,
        /// A threshold for a column instead of the test's default: COLUMN=VALUE (repeatable)
        #[arg(long = "threshold", value_name = "COLUMN=VALUE")]
        thresholds: Vec<String>,
        /// Share of drifted columns at which the dataset drifts
        #[arg(long, default_value_t = 0.5)]
        drift_share: f64,
        /// Judge the current window from its sketch (counts in the
        /// reference's bins, what a device sends) instead of its raw rows
        #[arg(long)]
        sketch: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// The telemetry collector.
    #[command(subcommand)]
    Collector(CollectorCmd),
    /// Score a model on labelled data: accuracy and confusion matrix for
    /// classifiers, MAE and RMSE for regressors.
    Eval {
        /// A .kiln artifact, or an .onnx / .tflite model (compiled in memory)
        model: PathBuf,
        /// Samples: .npy, .npz or CSV (one sample per row / along dim 0)
        #[arg(long)]
        data: PathBuf,
        /// Labels: a CSV column or .npz array name, or a file (.npy, or one number per line)
        #[arg(long)]
        labels: String,
        /// Score at most this many samples
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List the supported ONNX operators.
    Ops,
    /// Make an ed25519 release key pair: NAME.key (secret: keep it
    /// offline) and NAME.pub (give it to devices and the update service).
    Keygen {
        /// Path and name of the pair, without extension
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Sign an artifact with a release key (in place, or to -o OUT).
    Sign {
        artifact: PathBuf,
        /// The secret key (kiln keygen's NAME.key)
        #[arg(long)]
        key: PathBuf,
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Check that an artifact is intact and signed by a trusted key
    /// (exit 3 if not).
    Verify {
        artifact: PathBuf,
        /// A trusted public key (kiln keygen's NAME.pub); repeatable
        #[arg(long = "pub", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Over-the-air updates: publish releases and roll them out through
    /// the collector's update service, or pull one as a device.
    #[command(subcommand)]
    Ota(OtaCmd),
}

/// The update service's admin connection.
#[derive(clap::Args, Debug)]
struct OtaAdmin {
    /// The collector
    #[arg(long, default_value = "http://127.0.0.1:8470")]
    url: String,
    /// The admin token; default: $KILN_ADMIN_TOKEN
    #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    #[arg(long)]
    model: String,
    /// The update channel
    #[arg(long, default_value = "stable")]
    channel: String,
}

#[derive(Subcommand, Debug)]
enum OtaCmd {
    /// Publish a signed artifact as a release (immutable) of --model.
    Publish {
        #[command(flatten)]
        admin: OtaAdmin,
        artifact: PathBuf,
        #[arg(long)]
        version: String,
    },
    /// Start a rollout of --version to --percent of the channel's devices,
    /// or step the running one up (its current step is judged first: an
    /// unhealthy candidate is rolled back instead); 100 makes it stable.
    Rollout {
        #[command(flatten)]
        admin: OtaAdmin,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        percent: u8,
        /// Roll back automatically above this rejected share of the
        /// candidate's calls (default 0.2)
        #[arg(long)]
        max_rejection_rate: Option<f64>,
        /// Calls a step needs before it is judged (default 20)
        #[arg(long)]
        min_calls: Option<u64>,
        /// Do not roll back on input drift
        #[arg(long)]
        no_drift: bool,
    },
    /// Pause the running rollout (no step until resumed).
    Pause {
        #[command(flatten)]
        admin: OtaAdmin,
    },
    /// Resume a paused rollout.
    Resume {
        #[command(flatten)]
        admin: OtaAdmin,
    },
    /// Abort the running rollout: its devices go back to stable.
    Abort {
        #[command(flatten)]
        admin: OtaAdmin,
    },
    /// Roll back: the running rollout, or else the stable version (to
    /// --version, by default the previous one).
    Rollback {
        #[command(flatten)]
        admin: OtaAdmin,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The channels, releases and the timeline of every move.
    Status {
        #[command(flatten)]
        admin: OtaAdmin,
        #[arg(long)]
        json: bool,
    },
    /// As a device: install what the channel wants this device to run
    /// (verified, resumable, the previous version kept).
    Pull {
        #[arg(long, default_value = "http://127.0.0.1:8470")]
        url: String,
        /// The device token; default: $KILN_DEVICE_TOKEN
        #[arg(long, env = "KILN_DEVICE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        model: String,
        #[arg(long, default_value = "stable")]
        channel: String,
        /// This device's id
        #[arg(long)]
        device: String,
        /// The device's update directory
        #[arg(long)]
        dir: PathBuf,
        /// The update service's public key; repeatable
        #[arg(long, required = true)]
        manifest_pub: Vec<PathBuf>,
        /// A trusted release key; repeatable
        #[arg(long, required = true)]
        release_pub: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum CollectorCmd {
    /// Serve the collector's HTTP API (models and baselines, device
    /// tokens, telemetry ingest, drift reports, health, metrics) until
    /// stopped; prints `listening on ADDR` first.
    Serve {
        /// Address to listen on (port 0: any free port)
        #[arg(long, default_value = "127.0.0.1:8470")]
        addr: String,
        /// Database: sqlite://FILE (created if missing) or
        /// postgres://USER@HOST[:PORT]/DB
        #[arg(long, default_value = "sqlite://kiln-collector.db")]
        db: String,
        /// The admin token (registering models, issuing device tokens,
        /// reading reports); default: $KILN_ADMIN_TOKEN
        #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        /// POST each alert (drift, class collapse, rejection rate; firing
        /// and resolved) as JSON to this http:// URL
        #[arg(long)]
        alert_webhook: Option<String>,
        /// Shell command run on a drift or class-collapse alert, with
        /// $KILN_ALERT_KIND, $KILN_ALERT_MODEL, $KILN_ALERT_VERSION and
        /// $KILN_ALERT_DETAIL set
        #[arg(long)]
        retrain_command: Option<String>,
        /// Seconds between alert checks
        #[arg(long, default_value_t = 60)]
        alert_every: u64,
        /// Seconds of telemetry each check judges
        #[arg(long, default_value_t = 3600)]
        alert_window: u64,
        /// Calls a window needs before it is judged
        #[arg(long, default_value_t = 100)]
        alert_min_rows: u64,
        /// Alert when more than this share of calls is rejected
        #[arg(long, default_value_t = 0.05)]
        max_rejection_rate: f64,
        /// Turn the update service on: its manifest signing key (a
        /// `kiln keygen` secret key)
        #[arg(long)]
        ota_key: Option<PathBuf>,
        /// A release key published artifacts must be signed by; repeatable
        #[arg(long)]
        ota_release_pub: Vec<PathBuf>,
        /// Where release artifacts are kept: a directory, or s3://BUCKET
        /// (built with the `s3` feature)
        #[arg(long, default_value = "kiln-ota")]
        ota_store: String,
        /// Seconds a manifest stays valid
        #[arg(long, default_value_t = 86_400)]
        ota_ttl: u64,
        /// Seconds between checks of running rollouts (auto-rollback)
        #[arg(long, default_value_t = 5)]
        ota_check_every: u64,
    },
    /// Load a running collector with telemetry batches: registers an
    /// artifact (with its drift baseline) as MODEL/VERSION, takes a device
    /// token, sends BATCHES sketches over CONCURRENCY keep-alive
    /// connections, and prints throughput and latency percentiles.
    Load {
        /// The collector's HOST:PORT
        #[arg(long, default_value = "127.0.0.1:8470")]
        addr: String,
        /// An artifact compiled with --reference (its baseline shapes the
        /// sketches)
        #[arg(long)]
        artifact: PathBuf,
        /// The admin token; default: $KILN_ADMIN_TOKEN
        #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        #[arg(long, default_value = "load")]
        model: String,
        #[arg(long, default_value = "1")]
        version: String,
        #[arg(long, default_value_t = 20_000)]
        batches: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// The drift baseline an artifact carries.
#[derive(clap::Args, Debug)]
struct ReferenceArgs {
    /// Reference data (.npy, .npz or CSV with a header; a --labels column
    /// is dropped): the artifact carries its drift baseline (per feature,
    /// quantile bins or value counts) for telemetry and `kiln drift`
    #[arg(long, value_name = "DATA")]
    reference: Option<PathBuf>,
    /// Reference columns that are categorical (comma-separated)
    #[arg(long, value_delimiter = ',', requires = "reference")]
    categorical: Vec<String>,
}

/// Post-training quantization and its accuracy gate.
#[derive(clap::Args, Debug)]
struct QuantArgs {
    /// Quantize: int8 (static, needs --calibration), dynamic (int8 weights,
    /// activations per call), weights (int8 weights, float activations) or
    /// f16 (half-precision weights)
    #[arg(long, value_name = "int8|dynamic|weights|f16")]
    quantize: Option<String>,
    /// Calibration samples (.npy, .npz or CSV) for --quantize int8
    #[arg(long, value_name = "DATA")]
    calibration: Option<PathBuf>,
    /// How activation ranges are picked: minmax, percentile[:P], mse or kl
    #[arg(long, default_value = "minmax")]
    calibration_method: String,
    /// Use at most this many calibration samples
    #[arg(long, default_value_t = 1000)]
    calibration_limit: usize,
    /// Held-out samples for the accuracy gate
    #[arg(long, value_name = "DATA")]
    validation: Option<PathBuf>,
    /// Validation labels: a CSV column or .npz array name, or a file
    /// (without labels the gate measures agreement with the float model)
    #[arg(long, value_name = "COL|FILE")]
    labels: Option<String>,
    /// Largest accuracy drop allowed, in points (relative error in percent for regressors)
    #[arg(long, default_value_t = 1.0)]
    max_drop: f64,
    /// Most layers the gate may keep in float (default: half of them)
    #[arg(long)]
    max_float_layers: Option<usize>,
    /// What the gate measures: auto, classification or regression
    #[arg(long, default_value = "auto")]
    task: String,
    /// Use at most this many validation samples
    #[arg(long, default_value_t = 2000)]
    validation_limit: usize,
    /// Prune: magnitude:F (zero the smallest fraction F of each layer's
    /// weights), channels:auto (remove conv channels / dense units while
    /// the gate allows; needs --validation) or channels:F (that fraction of
    /// the prunable MACs)
    #[arg(long, value_name = "SPEC")]
    prune: Option<String>,
}

/// Output of `kiln compile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    /// A .kiln artifact, for every Kiln runtime.
    Kiln,
    /// A standalone WebAssembly module with the engine and the model.
    WasmModule,
    /// The artifact plus `OUT.rs` and `OUT.h` beside it (arena size, op
    /// set, I/O shapes, the aligned model bytes) for microcontroller
    /// firmware on `kiln-runtime-embedded`.
    Mcu,
    /// A LiteRT flatbuffer (`.tflite`) of the float model, for Android and
    /// other LiteRT hosts (fully connected networks today).
    Tflite,
    /// A Core ML ML Program package (`OUT.mlpackage`, a directory) for
    /// iOS 16 / macOS 13 and later: float32 weights, float16 with
    /// `--quantize f16`, 8-bit linear with `--quantize weights`.
    Coreml,
}

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    err: anyhow::Error,
}

fn fail(code: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |err| Failure { code, err }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure { code: 1, err }
    }
}

fn run_error(e: RunError) -> Failure {
    Failure {
        code: e.category().exit_code(),
        err: anyhow!(e),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Inspect {
            model,
            json,
            layers,
        } => inspect(&model, json, layers),
        Cmd::Compile {
            model,
            output,
            dims,
            no_optimize,
            model_version,
            target,
            budget,
            quant,
            reference,
        } => compile(
            &model,
            &output,
            &dims,
            no_optimize,
            model_version,
            target,
            budget,
            &quant,
            &reference,
        ),
        Cmd::Run {
            model,
            inputs,
            input_csv,
            drop_columns,
            output,
            output_dir,
            json,
            allow_non_finite,
            profile,
        } => run(
            &model,
            &inputs,
            input_csv.as_deref(),
            &drop_columns,
            (output.as_deref(), output_dir.as_deref()),
            json,
            allow_non_finite,
            profile,
        ),
        Cmd::Compare { a, b, inputs, json } => compare(&a, &b, &inputs, json),
        Cmd::Drift {
            reference,
            baseline,
            current,
            categorical,
            ignore,
            stattests,
            thresholds,
            drift_share,
            sketch,
            json,
        } => drift(
            (reference.as_deref(), baseline.as_deref()),
            &current,
            (&categorical, &ignore),
            (&stattests, &thresholds),
            drift_share,
            (sketch, json),
        ),
        Cmd::Collector(CollectorCmd::Serve {
            addr,
            db,
            admin_token,
            alert_webhook,
            retrain_command,
            alert_every,
            alert_window,
            alert_min_rows,
            max_rejection_rate,
            ota_key,
            ota_release_pub,
            ota_store,
            ota_ttl,
            ota_check_every,
        }) => collector_serve(
            &addr,
            &db,
            admin_token,
            kiln_collector::alerts::AlertOptions {
                webhook: alert_webhook,
                retrain_command,
                every: std::time::Duration::from_secs(alert_every.max(1)),
                window: std::time::Duration::from_secs(alert_window),
                min_rows: alert_min_rows,
                max_rejection_rate,
            },
            ota_key.map(|key| OtaServe {
                key,
                release_pub: ota_release_pub,
                store: ota_store,
                ttl: ota_ttl,
                check_every: ota_check_every,
            }),
        ),
        Cmd::Keygen { out } => ota::keygen(&out).map_err(Failure::from),
        Cmd::Sign { artifact, key, out } => {
            ota::sign(&artifact, &key, out.as_deref()).map_err(fail(3))
        }
        Cmd::Verify { artifact, keys } => match ota::verify(&artifact, &keys) {
            Ok(id) => {
                println!("{}: intact, signed by trusted key {id}", artifact.display());
                Ok(())
            }
            Err(ota::VerifyError::Usage(e)) => Err(fail(2)(e)),
            Err(ota::VerifyError::Refused(e)) => Err(fail(3)(e)),
        },
        Cmd::Ota(cmd) => ota_command(cmd),
        Cmd::Collector(CollectorCmd::Load {
            addr,
            artifact,
            admin_token,
            model,
            version,
            batches,
            concurrency,
            json,
        }) => collector_load(
            &artifact,
            kiln_collector::load::LoadOptions {
                addr,
                token: admin_token,
                model,
                version,
                id_prefix: String::new(),
                batches,
                concurrency,
            },
            json,
        ),
        Cmd::Eval {
            model,
            data,
            labels,
            limit,
            json,
        } => eval(&model, &data, &labels, limit, json),
        Cmd::Ops => {
            for op in kiln_compiler::supported_ops() {
                println!("{op}");
            }
            Ok(())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // One line: the chain of causes.
            let mut msg = String::new();
            for cause in f.err.chain().map(|c| c.to_string()) {
                if !msg.contains(&cause) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&cause);
                }
            }
            eprintln!("error: {msg}");
            ExitCode::from(f.code)
        }
    }
}

fn is_artifact(bytes: &[u8]) -> bool {
    bytes.starts_with(&kiln_format::MAGIC)
}

fn parse_dims(dims: &[String]) -> Result<HashMap<String, usize>, Failure> {
    dims.iter()
        .map(|d| {
            let (k, v) = d
                .split_once('=')
                .ok_or_else(|| anyhow!("--dim expects NAME=N, got '{d}'"))?;
            Ok((
                k.to_string(),
                v.parse()
                    .with_context(|| format!("--dim {d}: '{v}' is not a number"))?,
            ))
        })
        .collect::<Result<_>>()
        .map_err(fail(2))
}

fn compile_bytes(
    bytes: &[u8],
    path: &Path,
    opts: &Options,
    progress: bool,
) -> Result<kiln_compiler::Compiled, Failure> {
    let bar = if progress {
        let pb = indicatif::ProgressBar::new(5);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(pb)
    } else {
        None
    };
    let name = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("model.onnx");
    let r = kiln_compiler::compile_model_with_progress(bytes, name, opts, &mut |s| {
        if let Some(pb) = &bar {
            let (i, msg) = match s {
                Stage::Parse => (1, "parsing"),
                Stage::Import => (2, "importing"),
                Stage::Optimize => (3, "optimising"),
                Stage::Plan => (4, "planning memory"),
                Stage::Write => (5, "writing"),
            };
            pb.set_position(i);
            pb.set_message(msg);
        }
    });
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    r.map_err(|e| Failure {
        code: 3,
        err: anyhow!(e).context(format!("cannot compile {}", path.display())),
    })
}

/// Pruning and quantization options from the flags (data files read here).
fn quant_options(
    q: &QuantArgs,
) -> Result<(Option<PruneOptions>, Option<QuantizeOptions>), Failure> {
    if q.quantize.is_none() && q.prune.is_none() {
        if q.calibration.is_some() || q.validation.is_some() {
            return Err(fail(2)(anyhow!(
                "--calibration and --validation only apply with --quantize or --prune"
            )));
        }
        return Ok((None, None));
    }
    let calibrator: Calibrator = q
        .calibration_method
        .parse()
        .map_err(|e: String| fail(2)(anyhow!(e)))?;
    let samples = |d: &kiln_cli::Dataset| Samples::new(d.values.clone(), d.count);
    let calibration = match &q.calibration {
        Some(path) => {
            // A label column in a calibration CSV is not an input: drop it.
            let col = q.labels.as_deref().filter(|l| !Path::new(l).is_file());
            let d = match col.map(|c| read_dataset(path, Some(c))) {
                Some(Ok(d)) => d,
                _ => read_dataset(path, None).map_err(fail(1))?,
            }
            .take(q.calibration_limit);
            Some(samples(&d))
        }
        None => None,
    };
    let validation = match &q.validation {
        Some(path) => {
            let d = read_dataset(path, q.labels.as_deref())
                .map_err(fail(1))?
                .take(q.validation_limit);
            let task = match q.task.as_str() {
                "auto" => Task::Auto,
                "classification" => Task::Classification,
                "regression" => Task::Regression,
                t => {
                    return Err(fail(2)(anyhow!(
                        "--task {t}: expected auto, classification or regression"
                    )));
                }
            };
            Some(Validation {
                samples: samples(&d),
                labels: if task == Task::Regression {
                    None
                } else {
                    d.class_labels().map_err(fail(1))?
                },
                task,
                max_drop: q.max_drop,
                max_float_layers: q.max_float_layers,
            })
        }
        None if q.labels.is_some() && q.calibration.is_none() => {
            return Err(fail(2)(anyhow!(
                "--labels needs --validation DATA (or a calibration CSV to drop the column from)"
            )));
        }
        None => None,
    };
    let prune = match &q.prune {
        Some(spec) => Some(PruneOptions {
            method: spec.parse().map_err(|e: String| fail(2)(anyhow!(e)))?,
            data: calibration.clone(),
            validation: validation.clone(),
        }),
        None => None,
    };
    let quant = match &q.quantize {
        Some(p) => Some(QuantizeOptions {
            precision: p.parse().map_err(|e: String| fail(2)(anyhow!(e)))?,
            calibrator,
            calibration,
            validation,
        }),
        None => None,
    };
    Ok((prune, quant))
}

fn compile(
    model: &Path,
    out: &Path,
    dims: &[String],
    no_optimize: bool,
    version: Option<String>,
    target: Target,
    budget: Option<kiln_cli::mcu::Budget>,
    quant: &QuantArgs,
    reference: &ReferenceArgs,
) -> Result<(), Failure> {
    if reference.reference.is_some() && matches!(target, Target::Tflite | Target::Coreml) {
        return Err(fail(2)(anyhow!(
            "--reference: the drift baseline travels in .kiln artifacts (--target kiln, mcu or wasm-module)"
        )));
    }
    if budget.is_some() && target != Target::Mcu {
        return Err(Failure {
            code: 2,
            err: anyhow!("--budget applies to --target mcu"),
        });
    }
    let bytes = std::fs::read(model).with_context(|| format!("cannot read {}", model.display()))?;
    if is_artifact(&bytes) {
        return Err(Failure {
            code: 3,
            err: anyhow!("{} is already a compiled .kiln artifact", model.display()),
        });
    }
    // The exports: the source's file name and the import, optimisation and
    // quantization settings.
    let export_options = || -> Result<(&str, Options), Failure> {
        let name = model
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("model");
        let mut opts = Options {
            no_optimize,
            version: version.clone(),
            ..Default::default()
        };
        opts.import.dims = parse_dims(dims)?;
        (opts.prune, opts.quantize) = quant_options(quant)?;
        Ok((name, opts))
    };
    if target == Target::Tflite {
        let (name, opts) = export_options()?;
        let flatbuffer =
            kiln_compiler::export_tflite(&bytes, name, &opts).map_err(|e| Failure {
                code: 3,
                err: anyhow!(e).context(format!("cannot export {} to TFLite", model.display())),
            })?;
        std::fs::write(out, &flatbuffer)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!(
            "tflite         {} bytes -> {}",
            flatbuffer.len(),
            out.display()
        );
        return Ok(());
    }
    if target == Target::Coreml {
        let (name, opts) = export_options()?;
        let package = kiln_compiler::export_coreml(&bytes, name, &opts).map_err(|e| Failure {
            code: 3,
            err: anyhow!(e).context(format!("cannot export {} to Core ML", model.display())),
        })?;
        if out.extension().and_then(|e| e.to_str()) != Some("mlpackage") {
            return Err(Failure {
                code: 2,
                err: anyhow!(
                    "--target coreml writes a package directory: name it NAME.mlpackage (got {})",
                    out.display()
                ),
            });
        }
        package
            .write_to(out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!(
            "coreml         spec {} bytes, weights {} bytes ({} bytes of layer weights) -> {}",
            package.spec.len(),
            package.weights.len(),
            package.weight_bytes,
            out.display()
        );
        return Ok(());
    }
    let mut opts = Options {
        no_optimize,
        version,
        // Microcontroller arenas: the kernels' least scratch.
        lean_scratch: target == Target::Mcu,
        reference: match &reference.reference {
            Some(path) => Some(read_reference(
                path,
                quant.labels.as_deref(),
                &reference.categorical,
            )?),
            None => None,
        },
        ..Default::default()
    };
    opts.import.dims = parse_dims(dims)?;
    (opts.prune, opts.quantize) = quant_options(quant)?;
    // The float artifact's size, to report the quantized one against it.
    let float_bytes = match (&opts.quantize, &opts.prune) {
        (None, None) => None,
        _ => {
            let plain = Options {
                quantize: None,
                prune: None,
                ..opts.clone()
            };
            Some(
                compile_bytes(&bytes, model, &plain, false)?
                    .report
                    .artifact_bytes,
            )
        }
    };
    let c = compile_bytes(&bytes, model, &opts, true)?;
    // Checked before anything is written: an artifact that does not fit is
    // not produced.
    let fits = match &budget {
        Some(b) => kiln_cli::mcu::Needs::of(&c.bytes)?
            .check(b)
            .map_err(fail(5))?,
        None => vec![],
    };
    let written = match target {
        Target::Kiln | Target::Mcu | Target::Tflite | Target::Coreml => c.bytes.clone(),
        Target::WasmModule => {
            let arena = Model::load(&c.bytes).map_err(run_error)?.arena_size();
            kiln_cli::wasm_module::link(kiln_cli::wasm_module::TEMPLATE, &c.bytes, arena)
                .map_err(fail(3))?
        }
    };
    std::fs::write(out, &written).with_context(|| format!("cannot write {}", out.display()))?;
    print_report(&c.report, out);
    if target == Target::Mcu {
        let file = out
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .context("-o needs a file name")?;
        let stem = out
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned());
        let source = model.display().to_string();
        let (rs, h) = (out.with_extension("rs"), out.with_extension("h"));
        std::fs::write(&rs, kiln_cli::mcu::rust_module(&c.bytes, &file, &source)?)
            .with_context(|| format!("cannot write {}", rs.display()))?;
        std::fs::write(&h, kiln_cli::mcu::c_header(&c.bytes, &stem, &source)?)
            .with_context(|| format!("cannot write {}", h.display()))?;
        println!(
            "mcu            {} (Rust: ARENA_SIZE, OPS, I/O, MODEL), {} (C)",
            rs.display(),
            h.display()
        );
        for line in fits {
            println!("{line}");
        }
    }
    if target == Target::WasmModule {
        println!(
            "wasm module    {} bytes -> {} (engine {} + artifact {} bytes; one sample per kiln_run)",
            written.len(),
            out.display(),
            written.len().saturating_sub(c.bytes.len()),
            c.bytes.len()
        );
    }
    if let Some(p) = &c.report.prune {
        print_prune_report(p);
    }
    if let (Some(q), Some(f)) = (&c.report.quant, float_bytes) {
        print_quant_report(q, c.report.artifact_bytes, f);
    } else if let Some(f) = float_bytes {
        println!(
            "size           {} bytes = {:.3}x the unpruned artifact ({f} bytes)",
            c.report.artifact_bytes,
            c.report.artifact_bytes as f64 / f.max(1) as f64
        );
    }
    Ok(())
}

fn print_report(r: &Report, out: &Path) {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    println!("{:<28} {:>8} {:>8}", "op", "before", "after");
    let mut names: Vec<&String> = r
        .ops_before
        .iter()
        .map(|x| &x.0)
        .chain(r.ops_after.iter().map(|x| &x.0))
        .collect();
    names.sort();
    names.dedup();
    let get = |v: &[(String, usize)], n: &str| v.iter().find(|x| x.0 == n).map_or(0, |x| x.1);
    for n in names {
        println!(
            "{:<28} {:>8} {:>8}",
            n,
            get(&r.ops_before, n),
            get(&r.ops_after, n)
        );
    }
    println!(
        "{:<28} {:>8} {:>8}",
        "total nodes", r.nodes_before, r.nodes_after
    );
    for (p, n) in &r.passes {
        if *n > 0 {
            println!("pass {p}: {n} rewrites");
        }
    }
    println!("parameters     {}", r.params);
    println!("MACs           {}", r.macs);
    println!("weights        {} bytes", r.weight_bytes);
    println!(
        "arena          {} bytes{}",
        r.arena_bytes,
        if r.per_sample_batch {
            " per sample"
        } else {
            ""
        }
    );
    println!(
        "artifact       {} bytes -> {}",
        r.artifact_bytes,
        out.display()
    );
}

fn print_prune_report(p: &kiln_compiler::prune::PruneReport) {
    let pct = |a: f64, b: f64| 100.0 * (1.0 - a / b.max(1.0));
    println!(
        "pruned         {}: parameters {} -> {} (-{:.1}%), MACs {} -> {} (-{:.1}%)",
        p.method,
        p.params_before,
        p.params_after,
        pct(p.params_after as f64, p.params_before as f64),
        p.macs_before,
        p.macs_after,
        pct(p.macs_after as f64, p.macs_before as f64)
    );
    if p.zeros > 0 {
        println!(
            "zero weights   {} (weights mostly zero are stored sparse and expanded before use; kernels stay dense, so MACs do not shrink)",
            p.zeros
        );
    }
    for (macs, drop) in &p.steps {
        println!(
            "  search: {macs:>10} MACs (-{:.1}%), drop {drop:.2} points",
            pct(*macs as f64, p.macs_before as f64)
        );
    }
    for (name, removed, total) in &p.layers {
        println!("  {removed:>4} of {total:>4} channels removed: {name}");
    }
    if let Some((metric, f, pv, drop)) = &p.gate {
        println!("prune gate     {metric}: float {f:.2}%, pruned {pv:.2}%, drop {drop:.2} points");
    }
}

fn print_quant_report(q: &kiln_compiler::quantize::QuantReport, bytes: usize, float_bytes: usize) {
    println!(
        "quantized      {} ({} layers{}{})",
        q.precision,
        q.quantized.len(),
        if q.calibrator.is_empty() {
            String::new()
        } else {
            format!(", calibration {}", q.calibrator)
        },
        if q.kept_float.is_empty() {
            String::new()
        } else {
            format!(", kept in float: {}", kiln_compiler::quantize::kept_list(q))
        }
    );
    if !q.unsupported.is_empty() {
        let mut u = q.unsupported.clone();
        u.sort();
        u.dedup();
        println!("float ops      {} (no int8 kernel)", u.join(", "));
    }
    println!(
        "size           {bytes} bytes = {:.3}x the float artifact ({float_bytes} bytes)",
        bytes as f64 / float_bytes.max(1) as f64
    );
    if let Some((metric, f, qv, drop)) = &q.gate {
        println!(
            "gate           {metric}: float {f:.2}%, quantized {qv:.2}%, drop {drop:.2} points"
        );
    }
    for (name, r) in q.sensitivity.iter().take(5) {
        println!("sensitivity    {r:.3}% output error with only this layer in int8: {name}");
    }
}

/// `kiln eval`: the model on every sample, scored against the labels.
fn eval(
    path: &Path,
    data: &Path,
    labels: &str,
    limit: Option<usize>,
    json: bool,
) -> Result<(), Failure> {
    let mut d = read_dataset(data, Some(labels)).map_err(fail(1))?;
    if let Some(n) = limit {
        d = d.take(n);
    }
    let truth = d
        .labels
        .clone()
        .ok_or_else(|| fail(2)(anyhow!("--labels {labels}: no labels found")))?;
    let (model, report) = load_model(path, &HashMap::new())?;
    if let Some(r) = &report {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }
    let [input] = model.inputs() else {
        return Err(fail(4)(anyhow!(
            "kiln eval scores one-input models (this one has {})",
            model.inputs().len()
        )));
    };
    if input.dtype != DType::F32 {
        return Err(fail(4)(anyhow!(
            "input '{}' is {}; kiln eval feeds float32 samples",
            input.name,
            input.dtype
        )));
    }
    let shape = input.shape(1);
    let per: usize = shape.iter().product();
    let len = d.values.len() / d.count;
    if len != per {
        return Err(fail(4)(anyhow!(
            "a sample of {} has {len} values, input '{}' takes {per} ({})",
            data.display(),
            input.name,
            input.shape_string()
        )));
    }
    // The scored output: class scores (more than one value per sample) if
    // there are any, else the first float output.
    let outs = model.outputs();
    let numel = |k: usize| outs[k].shape(1).iter().product::<usize>();
    let scored = (0..outs.len())
        .find(|&k| outs[k].dtype == DType::F32 && numel(k) > 1)
        .or_else(|| (0..outs.len()).find(|&k| outs[k].dtype == DType::F32))
        .ok_or_else(|| fail(4)(anyhow!("the model has no float32 output to score")))?;
    let classify = numel(scored) > 1;
    let mut session = model.session();
    let mut preds: Vec<Vec<f32>> = Vec::with_capacity(d.count);
    for i in 0..d.count {
        let x = TensorValue::from_f32(shape.clone(), &d.values[i * per..(i + 1) * per]);
        let y = session.run(&[&x]).map_err(run_error).map_err(|f| Failure {
            code: f.code,
            err: f.err.context(format!("sample {i}")),
        })?;
        preds.push(y[scored].f32_values().collect());
    }
    let name = &outs[scored].name;
    if classify {
        let truth = d.class_labels().map_err(fail(1))?.unwrap_or_default();
        let pred: Vec<i64> = preds
            .iter()
            .map(|p| kiln_compiler::quantize::argmax(p) as i64)
            .collect();
        let m = kiln_cli::class_metrics(&pred, &truth);
        if json {
            let v = serde_json::json!({
                "task": "classification",
                "output": name,
                "samples": m.samples,
                "accuracy": m.accuracy,
                "classes": m.classes,
                "confusion": m.confusion,
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            println!("output     {name} (argmax = class index)");
            println!("samples    {}", m.samples);
            println!("accuracy   {:.4} ({:.2}%)", m.accuracy, 100.0 * m.accuracy);
            println!("confusion  rows = true class, columns = predicted");
            print!("{:>8}", "");
            for c in &m.classes {
                print!("{c:>6}");
            }
            println!();
            for (c, row) in m.classes.iter().zip(&m.confusion) {
                print!("{c:>8}");
                for v in row {
                    print!("{v:>6}");
                }
                println!();
            }
        }
    } else {
        let (mut abs, mut sq) = (0.0f64, 0.0f64);
        for (p, &t) in preds.iter().zip(&truth) {
            let e = f64::from(p.first().copied().unwrap_or(f32::NAN)) - t;
            abs += e.abs();
            sq += e * e;
        }
        let n = preds.len().max(1) as f64;
        let (mae, rmse) = (abs / n, (sq / n).sqrt());
        if json {
            let v = serde_json::json!({
                "task": "regression", "output": name, "samples": preds.len(), "mae": mae, "rmse": rmse,
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            println!("output     {name}");
            println!("samples    {}", preds.len());
            println!("MAE        {mae:.6}");
            println!("RMSE       {rmse:.6}");
        }
    }
    Ok(())
}

/// Loads a model; ONNX is compiled in memory with dims taken from `shapes`.
fn load_model(
    path: &Path,
    shapes: &HashMap<String, Vec<usize>>,
) -> Result<(Model, Option<Report>), Failure> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if is_artifact(&bytes) {
        return Ok((Model::load(&bytes).map_err(run_error)?, None));
    }
    // Compile for the model's own schema first, so wrong inputs are rejected
    // by it; only symbolic dims other than the batch take the inputs' shapes.
    let mut opts = Options::default();
    let c = match kiln_compiler::compile_model(&bytes, &path.display().to_string(), &opts) {
        // Symbolic dims without a value, or a default batch of 1 that does
        // not fit the graph (dim 0 is time, say): use the inputs' sizes.
        Err(_) if !shapes.is_empty() => {
            opts.import.input_shapes = shapes.clone();
            compile_bytes(&bytes, path, &opts, false)?
        }
        // Dim 0 is not a batch here (e.g. time steps): use the inputs' sizes.
        Ok(c) if c.report.batch_fixed_to_one && !shapes.is_empty() => {
            opts.import.input_shapes = shapes.clone();
            compile_bytes(&bytes, path, &opts, false)?
        }
        _ => compile_bytes(&bytes, path, &opts, false)?,
    };
    let m = Model::load(&c.bytes).map_err(run_error)?;
    Ok((m, Some(c.report)))
}

/// `[NAME=]FILE.npy` specs read into tensors.
fn read_named_inputs(specs: &[String]) -> Result<Vec<(Option<String>, TensorValue)>, Failure> {
    let mut named = vec![];
    for spec in specs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), f),
            _ => (None, spec.as_str()),
        };
        let t = read_npy(Path::new(file)).map_err(fail(1))?;
        named.push((name, t));
    }
    Ok(named)
}

/// Loads `path` (an ONNX or TFLite file is compiled for the inputs'
/// shapes where its own are symbolic) and orders `named` by its schema.
fn prepare<'n>(
    path: &Path,
    named: &'n [(Option<String>, TensorValue)],
) -> Result<(Model, Vec<&'n TensorValue>), Failure> {
    let bytes_head =
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut shapes = HashMap::new();
    if !is_artifact(&bytes_head)
        && let Ok(m) = kiln_compiler::onnx::parse(&bytes_head)
    {
        let init: std::collections::HashSet<&str> = m
            .graph
            .iter()
            .flat_map(|g| g.initializer.iter().map(|t| t.name.as_str()))
            .collect();
        let names: Vec<String> = m
            .graph
            .iter()
            .flat_map(|g| g.input.iter().map(|i| i.name.clone()))
            .filter(|n| !init.contains(n.as_str()))
            .collect();
        for (k, (n, t)) in named.iter().enumerate() {
            let key = n.clone().or_else(|| names.get(k).cloned());
            if let Some(key) = key {
                shapes.insert(key, t.shape.clone());
            }
        }
    }
    let (model, report) = load_model(path, &shapes)?;
    if let Some(r) = &report {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }
    // Order the inputs by the schema.
    let mut ordered: Vec<&TensorValue> = vec![];
    for (k, spec) in model.inputs().iter().enumerate() {
        let found = named
            .iter()
            .find(|(n, _)| n.as_deref() == Some(spec.name.as_str()))
            .or_else(|| named.get(k).filter(|(n, _)| n.is_none()));
        match found {
            Some((_, t)) => ordered.push(t),
            None => {
                return Err(Failure {
                    code: 4,
                    err: anyhow!(
                        "missing input '{}' ({} {})",
                        spec.name,
                        spec.dtype,
                        spec.shape_string()
                    ),
                });
            }
        }
    }
    if let Some((Some(n), _)) = named.iter().find(|(n, _)| {
        n.as_ref()
            .is_some_and(|n| !model.inputs().iter().any(|s| &s.name == n))
    }) {
        return Err(Failure {
            code: 4,
            err: anyhow!("the model has no input named '{n}'"),
        });
    }
    Ok((model, ordered))
}

/// `kiln collector serve`'s update service options.
struct OtaServe {
    key: PathBuf,
    release_pub: Vec<PathBuf>,
    store: String,
    ttl: u64,
    check_every: u64,
}

/// `kiln ota …`.
fn ota_command(cmd: OtaCmd) -> Result<(), Failure> {
    fn admin(a: &OtaAdmin) -> (ota::Admin<'_>, String) {
        (
            ota::Admin {
                url: &a.url,
                token: &a.admin_token,
                model: &a.model,
            },
            a.channel.clone(),
        )
    }
    let r = match &cmd {
        OtaCmd::Publish {
            admin: a,
            artifact,
            version,
        } => ota::publish(&admin(a).0, artifact, version),
        OtaCmd::Rollout {
            admin: a,
            version,
            percent,
            max_rejection_rate,
            min_calls,
            no_drift,
        } => {
            let mut body = serde_json::json!({ "percent": percent });
            if let Some(v) = version {
                body["version"] = v.clone().into();
            }
            if max_rejection_rate.is_some() || min_calls.is_some() || *no_drift {
                body["policy"] = serde_json::json!({
                    "max_rejection_rate": max_rejection_rate.unwrap_or(0.2),
                    "min_calls": min_calls.unwrap_or(20),
                    "drift": !no_drift,
                });
            }
            let (ad, ch) = admin(a);
            ota::channel_move(&ad, &ch, "rollout", body)
        }
        OtaCmd::Pause { admin: a } | OtaCmd::Resume { admin: a } | OtaCmd::Abort { admin: a } => {
            let action = match &cmd {
                OtaCmd::Pause { .. } => "pause",
                OtaCmd::Resume { .. } => "resume",
                _ => "abort",
            };
            let (ad, ch) = admin(a);
            ota::channel_move(&ad, &ch, action, serde_json::json!({}))
        }
        OtaCmd::Rollback {
            admin: a,
            version,
            reason,
        } => {
            let (ad, ch) = admin(a);
            ota::channel_move(
                &ad,
                &ch,
                "rollback",
                serde_json::json!({ "version": version, "reason": reason }),
            )
        }
        OtaCmd::Status { admin: a, json } => ota::status(&admin(a).0, *json),
        OtaCmd::Pull {
            url,
            token,
            model,
            channel,
            device,
            dir,
            manifest_pub,
            release_pub,
        } => (|| {
            let mut config =
                kiln_runtime_native::ota::OtaConfig::new(url, token, model, device, dir.clone());
            config.channel = channel.clone();
            config.manifest_keys = manifest_pub
                .iter()
                .map(|p| ota::read_public(p))
                .collect::<Result<_>>()?;
            config.release_keys = release_pub
                .iter()
                .map(|p| ota::read_public(p))
                .collect::<Result<_>>()?;
            ota::pull(config)
        })(),
    };
    r.map_err(Failure::from)
}

/// `kiln collector serve`: the collector on a multi-threaded runtime.
fn collector_serve(
    addr: &str,
    db: &str,
    admin_token: String,
    alerts: kiln_collector::alerts::AlertOptions,
    ota_serve: Option<OtaServe>,
) -> Result<(), Failure> {
    if admin_token.len() < 8 {
        return Err(fail(2)(anyhow!(
            "the admin token must have at least 8 characters (--admin-token or $KILN_ADMIN_TOKEN)"
        )));
    }
    let state = kiln_collector::server::Collector::open(db, admin_token)
        .map_err(|e| fail(1)(anyhow!(e).context(format!("cannot open {db}"))))?;
    let check_every = match ota_serve {
        None => None,
        Some(o) => {
            if o.release_pub.is_empty() {
                return Err(fail(2)(anyhow!(
                    "--ota-key needs at least one --ota-release-pub: the keys releases must be signed by"
                )));
            }
            let config = kiln_collector::ota::OtaConfig {
                objects: kiln_collector::ota::object_store(&o.store)
                    .map_err(|e| fail(2)(anyhow!(e)))?,
                manifest_key: ota::read_secret(&o.key).map_err(fail(2))?,
                release_keys: o
                    .release_pub
                    .iter()
                    .map(|p| ota::read_public(p))
                    .collect::<Result<_>>()
                    .map_err(fail(2))?,
                ttl: o.ttl,
            };
            state.enable_ota(config).map_err(|e| {
                fail(1)(anyhow!(e).context("cannot read the update service's state"))
            })?;
            Some(std::time::Duration::from_secs(o.check_every.max(1)))
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        kiln_collector::alerts::spawn(state.clone(), alerts);
        if let Some(every) = check_every {
            kiln_collector::ota::spawn_watch(state.clone(), every);
        }
        kiln_collector::server::serve(addr, state).await
    })
    .with_context(|| format!("cannot serve on {addr}"))?;
    Ok(())
}

/// `kiln collector load`: `opts.token` is the admin token on entry; the
/// run uses a device token it asks for.
fn collector_load(
    artifact: &Path,
    mut opts: kiln_collector::load::LoadOptions,
    json: bool,
) -> Result<(), Failure> {
    use kiln_collector::load;
    let bytes =
        std::fs::read(artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
    let model = kiln_runtime_native::Model::load(&bytes)
        .map_err(|e| fail(2)(anyhow!(e).context(format!("{}", artifact.display()))))?;
    let baseline = model
        .drift_baseline()
        .map_err(|e| fail(2)(anyhow!(e).context(format!("{}", artifact.display()))))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(async {
        let admin = opts.token.clone();
        let path = format!("/v1/models/{}/versions/{}", opts.model, opts.version);
        let (status, body) = load::request(&opts.addr, "POST", &path, &admin, bytes.clone())
            .await
            .map_err(|e| anyhow!(e))?;
        if status != 200 {
            anyhow::bail!(
                "registering the artifact: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let ask = serde_json::json!({ "model": opts.model }).to_string();
        let (status, body) = load::request(&opts.addr, "POST", "/v1/tokens", &admin, ask.into())
            .await
            .map_err(|e| anyhow!(e))?;
        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(token) = reply["token"].as_str().filter(|_| status == 200) else {
            anyhow::bail!(
                "asking for a device token: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        };
        opts.token = token.to_string();
        // Batch ids unique to this run, so a rerun against the same
        // database is not all duplicates.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        opts.id_prefix = format!("load-{stamp:x}");
        Ok(load::run(&opts, &load::reference_sketch(&baseline)).await)
    })?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "batches": opts.batches,
                "concurrency": opts.concurrency,
                "acknowledged": report.acknowledged.len(),
                "duplicates": report.duplicates,
                "overloaded": report.overloaded,
                "broken": report.broken,
                "errors": report.errors.len(),
                "seconds": report.elapsed.as_secs_f64(),
                "batches_per_second": report.throughput(),
                "p50_ms": ms(report.percentile(0.5)),
                "p99_ms": ms(report.percentile(0.99)),
                "max_ms": ms(report.percentile(1.0)),
            })
        );
    } else {
        println!(
            "{} of {} batches acknowledged in {:.2} s over {} connections: {:.0} batches/s; \
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} answered 429 and retried",
            report.acknowledged.len(),
            opts.batches,
            report.elapsed.as_secs_f64(),
            opts.concurrency,
            report.throughput(),
            ms(report.percentile(0.5)),
            ms(report.percentile(0.99)),
            ms(report.percentile(1.0)),
            report.overloaded
        );
    }
    if let Some((status, why)) = report.errors.first() {
        return Err(fail(1)(anyhow!(
            "{} batches were refused; the first: HTTP {status}: {why}",
            report.errors.len()
        )));
    }
    if report.acknowledged.len() < opts.batches {
        return Err(fail(1)(anyhow!(
            "{} batches were not acknowledged (the collector went away?)",
            opts.batches - report.acknowledged.len()
        )));
    }
    Ok(())
}

/// The reference window for a drift baseline: samples, and the feature
/// names of a CSV's header (without a `labels` column).
fn read_reference(
    path: &Path,
    labels: Option<&str>,
    categorical: &[String],
) -> Result<kiln_compiler::Reference, Failure> {
    let col = labels.filter(|l| !Path::new(l).is_file());
    let d = match col.map(|c| read_dataset(path, Some(c))) {
        Some(Ok(d)) => d,
        _ => read_dataset(path, None).map_err(fail(1))?,
    };
    let is_csv = path.extension().and_then(|e| e.to_str()) == Some("csv");
    let names = if is_csv {
        let mut r = csv::Reader::from_path(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(fail(1))?;
        r.headers()
            .with_context(|| format!("{}: no header row", path.display()))
            .map_err(fail(1))?
            .iter()
            .filter(|h| Some(*h) != col)
            .map(str::to_string)
            .collect()
    } else {
        vec![]
    };
    Ok(kiln_compiler::Reference {
        samples: kiln_compiler::run::Samples::new(d.values, d.count),
        names,
        categorical: categorical.to_vec(),
    })
}

/// `COLUMN=VALUE` pairs, each value parsed.
fn column_pairs<T>(
    pairs: &[String],
    what: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<std::collections::HashMap<String, T>, Failure> {
    pairs
        .iter()
        .map(|p| {
            let (c, v) = p
                .split_once('=')
                .ok_or_else(|| fail(2)(anyhow!("{what} '{p}': expected COLUMN=VALUE")))?;
            let v = parse(v).map_err(|e| fail(2)(anyhow!("{what} '{p}': {e}")))?;
            Ok((c.to_string(), v))
        })
        .collect()
}

fn drift(
    (reference, artifact): (Option<&Path>, Option<&Path>),
    current: &Path,
    (categorical, ignore): (&[String], &[String]),
    (stattests, thresholds): (&[String], &[String]),
    drift_share: f64,
    (sketch, json): (bool, bool),
) -> Result<(), Failure> {
    use kiln_collector::drift::{DriftOptions, StatTest, detect, detect_sketch};
    if !(drift_share > 0.0 && drift_share <= 1.0) {
        return Err(fail(2)(anyhow!(
            "--drift-share must be in (0, 1], not {drift_share}"
        )));
    }
    let options = DriftOptions {
        drift_share,
        stattests: column_pairs(stattests, "--stattest", |v| v.parse::<StatTest>())?,
        thresholds: column_pairs(thresholds, "--threshold", |v| {
            v.parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| format!("'{v}' is not a non-negative number"))
        })?,
    };
    let (report, sketch_bytes) = if let Some(artifact) = artifact {
        let bytes = std::fs::read(artifact)
            .with_context(|| format!("cannot read {}", artifact.display()))?;
        let model = Model::load(&bytes).map_err(run_error)?;
        let baseline = model
            .drift_baseline()
            .map_err(|e| fail(3)(anyhow!(e).context(format!("{}", artifact.display()))))?;
        // The rows run through the model with telemetry on, as on a
        // device: inputs and predictions counted, every row.
        let rows = kiln_cli::drift::rows_of(&baseline, current).map_err(fail(1))?;
        let mut session = model.session();
        session
            .record_telemetry(1)
            .map_err(|e| fail(3)(anyhow!(e)))?;
        let width = baseline.features.len();
        for row in &rows {
            session
                .allow_non_finite(true)
                .run(&[&TensorValue::from_f32(vec![1, width], row)])
                .map_err(run_error)?;
        }
        let current = session
            .take_sketch()
            .unwrap_or_else(|| kiln_protocol::Sketch::new(&baseline));
        let report =
            detect_sketch(&baseline, &current, &options).map_err(|e| fail(1)(anyhow!(e)))?;
        (report, Some((current.to_bytes().len(), current.rows)))
    } else {
        // Clap requires --reference without --baseline.
        let reference = reference.unwrap_or_else(|| Path::new(""));
        let columns = kiln_cli::drift::read_windows(reference, current, categorical, ignore)
            .map_err(fail(1))?;
        if sketch {
            let (baseline, current) = kiln_cli::drift::sketch_windows(&columns).map_err(fail(1))?;
            let report =
                detect_sketch(&baseline, &current, &options).map_err(|e| fail(1)(anyhow!(e)))?;
            (report, Some((current.to_bytes().len(), current.rows)))
        } else {
            let report = detect(&columns, &options).map_err(|e| fail(1)(anyhow!(e)))?;
            (report, None)
        }
    };
    if json {
        let mut v = serde_json::to_value(&report).map_err(|e| fail(1)(anyhow!(e)))?;
        if let Some((bytes, rows)) = sketch_bytes {
            v["sketch_bytes"] = bytes.into();
            v["sketch_rows"] = rows.into();
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| fail(1)(anyhow!(e)))?
        );
    } else {
        print!("{}", kiln_cli::drift::table(&report));
        if let Some((bytes, rows)) = sketch_bytes {
            println!(
                "sketch: {bytes} bytes (postcard) for {rows} rows x {} columns",
                report.number_of_columns
            );
        }
    }
    if report.dataset_drift {
        return Err(Failure {
            code: 6,
            err: anyhow!(
                "dataset drift: {} of {} columns drifted",
                report.number_of_drifted_columns,
                report.number_of_columns
            ),
        });
    }
    Ok(())
}

/// `kiln compare A B --input ...`: both models on the same inputs.
fn compare(a: &Path, b: &Path, inputs: &[String], json: bool) -> Result<(), Failure> {
    let named = read_named_inputs(inputs)?;
    if named.is_empty() {
        return Err(Failure {
            code: 2,
            err: anyhow!("no inputs: pass --input FILE.npy"),
        });
    }
    let mut outs = vec![];
    for path in [a, b] {
        let (model, ordered) = prepare(path, &named)?;
        let o = model.session().run(&ordered).map_err(run_error)?;
        let names: Vec<String> = model.outputs().iter().map(|s| s.name.clone()).collect();
        outs.push((names, o));
    }
    let diffs = kiln_cli::compare_outputs(&outs[0].1, &outs[1].1).map_err(|e| Failure {
        code: 4,
        err: anyhow!(e),
    })?;
    if json {
        let v: Vec<serde_json::Value> = diffs
            .iter()
            .zip(&outs[0].0)
            .map(|(d, n)| serde_json::json!({"output": n, "max_abs": d.max_abs, "max_rel": d.max_rel, "argmax_agree": d.argmax_agree, "rows": d.rows}))
            .collect();
        println!("{}", serde_json::to_string(&v).map_err(|e| anyhow!(e))?);
        return Ok(());
    }
    println!(
        "{:<24} {:>12} {:>12} {:>16}",
        "output", "max abs", "max rel", "argmax agree"
    );
    for (d, n) in diffs.iter().zip(&outs[0].0) {
        let agree = d
            .argmax_agree
            .map_or("-".into(), |a| format!("{a}/{}", d.rows));
        println!(
            "{n:<24} {:>12.3e} {:>12.3e} {agree:>16}",
            d.max_abs, d.max_rel
        );
    }
    Ok(())
}

/// The stored dtype of node `i`'s weights (input 1 when it is a matrix or
/// filter, rank 2 or more): a constant, or the constant a Cast or
/// Dequantize widens right before it.
fn weight_dtype(view: &kiln_format::View<'_>, i: usize) -> Option<&'static str> {
    use kiln_format::{Ids, Op, TensorKind};
    let n = view.node(i).ok()?;
    let w = n.inputs.get(1).filter(|&w| w != Ids::ABSENT)?;
    let t = view.tensor(w as usize).ok()?;
    if t.rank < 2 {
        return None;
    }
    if t.kind == TensorKind::Const {
        return Some(t.dtype.name());
    }
    let producer = (0..i).rev().find_map(|j| {
        let p = view.node(j).ok()?;
        (p.outputs.get(0) == Some(w)).then_some(p)
    })?;
    if !matches!(producer.op, Op::Cast { .. } | Op::Dequantize { .. }) {
        return None;
    }
    let src = view.tensor(producer.inputs.get(0)? as usize).ok()?;
    (src.kind == TensorKind::Const).then(|| src.dtype.name())
}

fn inspect(path: &Path, json: bool, layers: bool) -> Result<(), Failure> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (art, report) = if is_artifact(&bytes) {
        (bytes, None)
    } else {
        let c = compile_bytes(&bytes, path, &Options::default(), false)?;
        (c.bytes, Some(c.report))
    };
    let model = Model::load(&art).map_err(run_error)?;
    let view = model.view();
    let meta = view.meta();
    let mut ops: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    // Per layer: the op, its output's dtype (the precision it computes in)
    // and shape; and how many layers run in each precision.
    let mut per_layer = vec![];
    let mut precision: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut params = 0usize;
    for i in 0..view.node_count() {
        let n = view.node(i).map_err(|e| Failure {
            code: 3,
            err: anyhow!(e),
        })?;
        let label = kiln_compiler::ir::op_label(&n.op);
        *ops.entry(label.clone()).or_insert(0) += 1;
        let out = n
            .outputs
            .get(0)
            .and_then(|t| view.tensor(t as usize).ok())
            .map(|t| (t.dtype.name(), t.shape().to_vec()));
        if let Some((dt, shape)) = out {
            *precision.entry(dt).or_insert(0) += 1;
            per_layer.push((
                i,
                label,
                n.name.to_string(),
                dt,
                shape,
                weight_dtype(&view, i),
            ));
        }
    }
    for i in 0..view.tensor_count() {
        let t = view.tensor(i).map_err(|e| Failure {
            code: 3,
            err: anyhow!(e),
        })?;
        if t.kind == kiln_format::TensorKind::Const
            && (t.dtype.is_float()
                || matches!(t.dtype, kiln_format::DType::I8 | kiln_format::DType::U8))
        {
            params += t.numel();
        }
    }
    let prop = |key: &str| meta.property(key).and_then(|v| v.parse::<u64>().ok());
    let macs = report
        .as_ref()
        .map(|r| r.macs)
        .or_else(|| prop("kiln.macs"));
    // The compiler's count (quantization does not change it) when recorded.
    let params = prop("kiln.params").map_or(params, |p| p as usize);
    let text = |key: &str| meta.property(key).map(str::to_string);
    let (quant, pruned) = (text("kiln.quant"), text("kiln.prune"));
    // The drift baseline: features, and how they are binned.
    let baseline = match model.drift_baseline() {
        Ok(b) => {
            let continuous = b
                .features
                .iter()
                .filter(|f| matches!(f, kiln_protocol::FeatureBaseline::Continuous { .. }))
                .count();
            let rows = b
                .features
                .first()
                .map_or(0, |f| f.counts().iter().sum::<u64>());
            Some(format!(
                "{} features from {rows} reference rows ({continuous} in quantile bins, {} by value)",
                b.features.len(),
                b.features.len() - continuous
            ))
        }
        Err(kiln_runtime_native::TelemetryError::NoBaseline) => None,
        Err(e) => Some(e.to_string()),
    };
    let io_json = |v: &[IoSchema]| -> serde_json::Value {
        v.iter()
            .map(|s| serde_json::json!({"name": s.name, "dtype": s.dtype.name(), "shape": s.shape_string(), "labels": s.labels}))
            .collect()
    };
    let p = &meta.provenance;
    let sha = p
        .source_sha256
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    if json {
        let v = serde_json::json!({
            "name": meta.name, "version": meta.version,
            "format": format!("{}.{}", view.header().major, view.header().minor),
            "inputs": io_json(model.inputs()), "outputs": io_json(model.outputs()),
            "ops": ops, "nodes": view.node_count(), "parameters": params, "macs": macs,
            "precision": precision,
            "layers": if layers { per_layer.iter().map(|(i, op, name, dt, shape, w)| serde_json::json!({"index": i, "op": op, "name": name, "dtype": dt, "shape": shape, "weights": w})).collect::<Vec<_>>() } else { vec![] },
            "arena_bytes": model.arena_size(), "weight_bytes": view.weights().len(), "artifact_bytes": view.len(),
            "per_sample_batch": view.per_sample_batch(),
            "quantization": quant, "pruning": pruned, "drift_baseline": baseline,
            "provenance": {"source": p.source_name, "source_format": p.source_format, "source_sha256": sha, "producer": p.producer, "compiler": p.compiler, "created_unix": p.created_unix},
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| anyhow!(e))?
        );
        return Ok(());
    }
    println!("model      {} (version {})", meta.name, meta.version);
    println!(
        "source     {} ({}, {}), sha256 {}",
        p.source_name, p.source_format, p.producer, sha
    );
    println!("compiler   {}", p.compiler);
    for s in model.inputs() {
        println!("input      {} {} {}", s.name, s.dtype, s.shape_string());
    }
    for s in model.outputs() {
        println!(
            "output     {} {} {}{}",
            s.name,
            s.dtype,
            s.shape_string(),
            if s.labels.is_empty() {
                String::new()
            } else {
                format!(" labels {:?}", s.labels)
            }
        );
    }
    println!("nodes      {}", view.node_count());
    for (op, n) in &ops {
        println!("  {op:<20} {n}");
    }
    let prec: Vec<String> = precision.iter().map(|(d, n)| format!("{d} {n}")).collect();
    println!("precision  {} (layers by output dtype)", prec.join(", "));
    if layers {
        for (i, op, name, dt, shape, w) in &per_layer {
            let w = w.map(|w| format!("w:{w}")).unwrap_or_default();
            println!("  #{i:<4} {op:<24} {dt:<8} {w:<8} {shape:?}  {name}");
        }
    }
    if let Some(q) = &quant {
        println!("quantized  {q}");
    }
    if let Some(p) = &pruned {
        println!("pruned     {p}");
    }
    if let Some(b) = &baseline {
        println!("baseline   {b}");
    }
    println!("parameters {params}");
    if let Some(m) = macs {
        println!("MACs       {m}");
    }
    println!("weights    {} bytes", view.weights().len());
    println!(
        "arena      {} bytes{}",
        model.arena_size(),
        if view.per_sample_batch() {
            " per sample"
        } else {
            ""
        }
    );
    println!("artifact   {} bytes", view.len());
    Ok(())
}

fn run(
    path: &Path,
    inputs: &[String],
    csv: Option<&Path>,
    drop: &[String],
    (output, output_dir): (Option<&Path>, Option<&Path>),
    json: bool,
    allow_non_finite: bool,
    profile: Option<usize>,
) -> Result<(), Failure> {
    // Read inputs first: an ONNX model's symbolic dims come from them.
    let mut named = read_named_inputs(inputs)?;
    if let Some(csv) = csv {
        let drops: Vec<&str> = drop.iter().map(String::as_str).collect();
        let (_, t) = read_csv(csv, &drops).map_err(fail(1))?;
        named.push((None, t));
    }
    if named.is_empty() {
        return Err(Failure {
            code: 2,
            err: anyhow!("no inputs: pass --input FILE.npy or --input-csv FILE"),
        });
    }
    let (model, ordered) = prepare(path, &named)?;
    let mut session = model.session();
    session.allow_non_finite(allow_non_finite);
    let outs = session.run(&ordered).map_err(run_error)?;
    if let Some(runs) = profile {
        let times = session.profile(&ordered, runs).map_err(run_error)?;
        eprint!("{}", kiln_cli::profile_table(&times, runs));
    }
    if let Some(o) = output {
        std::fs::write(o, npy_bytes(&outs[0]))
            .with_context(|| format!("cannot write {}", o.display()))?;
    }
    if let Some(dir) = output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (spec, t) in model.outputs().iter().zip(&outs) {
            let safe: String = spec
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let p = dir.join(format!("{safe}.npy"));
            std::fs::write(&p, npy_bytes(t))
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
    }
    if json || (output.is_none() && output_dir.is_none()) {
        let mut obj = serde_json::Map::new();
        for (spec, t) in model.outputs().iter().zip(&outs) {
            let vals = t.to_f64();
            // Integers print as integers (an int8 output of 104, not 104.0).
            let data = if t.dtype.is_float() {
                serde_json::json!(vals)
            } else {
                serde_json::json!(vals.iter().map(|&v| v as i64).collect::<Vec<_>>())
            };
            let mut entry =
                serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "data": data});
            if !spec.labels.is_empty() {
                entry["labels"] = serde_json::json!(spec.labels);
            }
            obj.insert(spec.name.clone(), entry);
        }
        println!("{}", serde_json::to_string(&obj).map_err(|e| anyhow!(e))?);
    }
    Ok(())
}
