//! The ingest section: `kiln collector serve` taking telemetry batches
//! from `kiln collector load` (two processes on loopback, the same two
//! cores), on SQLite and on PostgreSQL (a throwaway server started by
//! `scripts/postgres.sh`). Each batch is the 30-feature breast-cancer
//! model's sketch as JSON, acknowledged only after its group commit.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Batches per run, and runs per row (the median shown).
const BATCHES: usize = 50_000;
const RUNS: usize = 3;
const CONCURRENCY: [usize; 2] = [32, 128];
const ADMIN: &str = "bench-admin-token";

/// The collector's process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kiln() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let kiln = exe.with_file_name("kiln");
    if !kiln.exists() {
        bail!(
            "{} is missing: `cargo xtask bench` builds it (cargo build --release -p kiln-cli)",
            kiln.display()
        );
    }
    Ok(kiln)
}

fn serve(kiln: &Path, db: &str) -> Result<(Server, String)> {
    let mut child = Command::new(kiln)
        .args(["collector", "serve", "--addr", "127.0.0.1:0", "--db", db])
        .env("KILN_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting kiln collector serve")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let server = Server(child);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("the collector did not start on {db}: {line:?}"))?
        .to_string();
    Ok((server, addr))
}

/// One row per concurrency: median throughput of [`RUNS`] runs, with
/// that run's latency percentiles, and the slowest and fastest runs.
fn measure(kiln: &Path, artifact: &Path, db: &str, label: &str) -> Result<Vec<Vec<String>>> {
    let (_server, addr) = serve(kiln, db)?;
    let mut rows = vec![];
    for concurrency in CONCURRENCY {
        let mut runs = vec![];
        for _ in 0..RUNS {
            let out = Command::new(kiln)
                .args(["collector", "load", "--json", "--addr", &addr])
                .arg("--artifact")
                .arg(artifact)
                .args(["--batches", &BATCHES.to_string()])
                .args(["--concurrency", &concurrency.to_string()])
                .env("KILN_ADMIN_TOKEN", ADMIN)
                .output()?;
            if !out.status.success() {
                bail!(
                    "kiln collector load on {label}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let v: Value = serde_json::from_slice(&out.stdout)?;
            runs.push(v);
        }
        runs.sort_by(|a, b| {
            a["batches_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["batches_per_second"].as_f64().unwrap_or(0.0))
        });
        let median = &runs[RUNS / 2];
        let rate = |v: &Value| v["batches_per_second"].as_f64().unwrap_or(0.0);
        rows.push(vec![
            label.to_string(),
            concurrency.to_string(),
            format!("{:.0}", rate(median)),
            format!("{:.0}–{:.0}", rate(&runs[0]), rate(&runs[RUNS - 1])),
            format!("{:.2}", median["p50_ms"].as_f64().unwrap_or(0.0)),
            format!("{:.2}", median["p99_ms"].as_f64().unwrap_or(0.0)),
            median["overloaded"].to_string(),
        ]);
    }
    Ok(rows)
}

pub fn section(root: &Path, corpus: &Path) -> Result<String> {
    let kiln = kiln()?;
    let tmp = std::env::temp_dir().join(format!("kiln-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let sk = corpus.join("sklearn");
    let artifact = tmp.join("cancer.kiln");
    let out = Command::new(&kiln)
        .arg("compile")
        .arg(sk.join("rf_breast_cancer.onnx"))
        .arg("-o")
        .arg(&artifact)
        .arg("--reference")
        .arg(sk.join("rf_breast_cancer_train.csv"))
        .args(["--labels", "target"])
        .output()?;
    if !out.status.success() {
        bail!("compiling: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut rows = measure(
        &kiln,
        &artifact,
        &format!("sqlite://{}", tmp.join("collector.db").display()),
        "SQLite (WAL, synchronous=FULL)",
    )?;
    // PostgreSQL: a throwaway server of its own.
    let pg_dir = tmp.join("postgres");
    let script = root.join("scripts/postgres.sh");
    let port = 20_000 + std::process::id() % 20_000;
    let started = Command::new(&script)
        .arg("start")
        .arg(&pg_dir)
        .arg(port.to_string())
        .output()?;
    let pg_note = if started.status.success() {
        let url = String::from_utf8_lossy(&started.stdout).trim().to_string();
        let measured = measure(&kiln, &artifact, &url, "PostgreSQL (fsync on)");
        let _ = Command::new(&script).arg("stop").arg(&pg_dir).status();
        rows.extend(measured?);
        String::new()
    } else {
        format!(
            " PostgreSQL was not measured: {}",
            String::from_utf8_lossy(&started.stderr).trim()
        )
    };
    std::fs::remove_dir_all(&tmp).ok();
    Ok(format!(
        "\n## Telemetry ingest (`kiln collector serve`, batches per second)\n\n\
         `kiln collector load` sends {BATCHES} telemetry batches per run to `kiln collector serve` over \
         keep-alive HTTP/1.1 connections on loopback, both processes sharing this machine's cores (and, for \
         PostgreSQL, the database server too). Each batch is `POST /v1/telemetry` with a JSON body: the \
         sketch of a window of the 30-feature breast-cancer model (`rf_breast_cancer`, compiled with its \
         training rows as `--reference`), about 4.5 KB; the collector checks the device token and the sketch's \
         shape against the version's baseline, queues it to its writer, which commits whatever is queued in \
         one transaction, and answers 200 only after that commit (latency is from send to that 200). \
         {RUNS} runs per row; the median run's throughput and latency percentiles, and the range of the \
         runs' throughput. *429* counts answers from a full queue (retried). There is no peer here: \
         no other tool takes these sketches, so the two databases stand beside each other.{pg_note}\n\n{}",
        crate::table(
            &[
                "Database",
                "Connections",
                "Batches/s",
                "Range",
                "p50, ms",
                "p99, ms",
                "429",
            ],
            &rows
        )
    ))
}
