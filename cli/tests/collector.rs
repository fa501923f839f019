//! `kiln collector serve` on 127.0.0.1: a model version registered with
//! its artifact's baseline, a device token, telemetry batches from a
//! recording session (one of them sent twice), and the drift report of
//! the merged window, which equals the collector's verdict on the same
//! sketches merged locally; bad requests get their 4xx and reason.

mod common;

use common::{http, start_collector};

use kiln_collector::drift::{DriftOptions, detect_sketch};
use kiln_runtime_native::{Model, TensorValue};
use serde_json::Value;
use std::path::Path;

/// A name no other test or run has used (PostgreSQL keeps its tables).
fn unique(stem: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{stem}-{}-{nanos:x}", std::process::id())
}

/// The PostgreSQL server `scripts/test.sh` starts, if any.
fn postgres() -> Option<String> {
    let url = std::env::var("KILN_TEST_POSTGRES").ok();
    if url.is_none() {
        eprintln!(
            "KILN_TEST_POSTGRES is not set: the PostgreSQL half is skipped (scripts/test.sh starts a server and sets it)"
        );
    }
    url
}

#[test]
fn collector_ingests_batches_once_and_reports_drift_sqlite() {
    let tmp = std::env::temp_dir().join(unique("kiln-collector"));
    std::fs::create_dir_all(&tmp).unwrap();
    ingest_and_report(&format!("sqlite://{}", tmp.join("c.db").display()), &tmp);
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn collector_ingests_batches_once_and_reports_drift_postgres() {
    let Some(url) = postgres() else { return };
    let tmp = std::env::temp_dir().join(unique("kiln-collector"));
    std::fs::create_dir_all(&tmp).unwrap();
    ingest_and_report(&url, &tmp);
    std::fs::remove_dir_all(&tmp).ok();
}

/// The embedded runtime's telemetry window over `rows` (`features`
/// values per call: a tabular row or a tensor sample), every call
/// counted, as postcard bytes decoded.
fn mcu_window(artifact: &[u8], rows: &[f32], features: usize) -> kiln_protocol::Sketch {
    use kiln_runtime_embedded::telemetry::Telemetry;
    // 16-byte aligned, as flash is.
    let mut flash = vec![0u128; artifact.len().div_ceil(16)];
    let flash: &mut [u8] = bytemuck::cast_slice_mut(&mut flash);
    flash[..artifact.len()].copy_from_slice(artifact);
    let model = kiln_runtime_embedded::Model::new(&flash[..artifact.len()]).unwrap();
    let baseline = Model::load(artifact).unwrap().drift_baseline().unwrap();
    let bins = baseline.feature_bins();
    let r = baseline.borrowed(&bins);
    let mut t = Telemetry::<13, 32>::new(&model, r, 1).unwrap();
    let mut arena = vec![0u128; model.arena_size().div_ceil(16)];
    let arena: &mut [u8] = bytemuck::cast_slice_mut(&mut arena);
    for row in rows.chunks(features) {
        let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
        t.run(&model, arena, &[&bytes]).unwrap();
        t.latency(250);
    }
    let mut buf = vec![0u8; 8192];
    let left = t.write_to(&mut buf[..]).unwrap().len();
    let n = buf.len() - left;
    kiln_protocol::Sketch::from_bytes(&buf[..n]).unwrap()
}

fn ingest_and_report(db: &str, tmp: &Path) {
    let sk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sklearn");
    let artifact = tmp.join("wine.kiln");
    common::compile_sklearn_with_reference("gb_wine", &artifact);
    let admin = "admin-secret-token";
    let (_server, addr) = start_collector(db, admin, &[]);
    let wine = unique("wine");
    assert_eq!(http(&addr, "GET", "/health/live", None, b"").0, 200);
    assert_eq!(http(&addr, "GET", "/health/ready", None, b"").0, 200);

    let bytes = std::fs::read(&artifact).unwrap();
    let (st, body) = http(
        &addr,
        "POST",
        &format!("/v1/models/{wine}/versions/1"),
        Some(admin),
        &bytes,
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    // Not an admin; not an artifact.
    assert_eq!(
        http(
            &addr,
            "POST",
            &format!("/v1/models/{wine}/versions/1"),
            Some("nope"),
            &bytes
        )
        .0,
        401
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            &format!("/v1/models/{wine}/versions/2"),
            Some(admin),
            b"junk"
        )
        .0,
        422
    );
    let (st, body) = http(
        &addr,
        "POST",
        "/v1/tokens",
        Some(admin),
        serde_json::json!({ "model": wine }).to_string().as_bytes(),
    );
    assert_eq!(st, 200);
    let token: Value = serde_json::from_slice(&body).unwrap();
    let device = token["token"].as_str().unwrap().to_string();

    // Three windows from a recording session over the test rows.
    let model = Model::load(&bytes).unwrap();
    let test = kiln_cli::read_dataset(&sk.join("gb_wine_test.csv"), Some("target")).unwrap();
    let mut session = model.session();
    session.record_telemetry(1).unwrap();
    let mut sketches = vec![];
    for part in test.values.chunks(13 * 18) {
        for row in part.chunks(13) {
            session
                .run(&[&TensorValue::from_f32(vec![1, 13], row)])
                .unwrap();
        }
        sketches.push(session.take_sketch().unwrap());
    }
    // A fourth window from the embedded runtime (on the host), over the
    // same rows: the bytes a firmware streams out, decoded as the
    // collector's clients would send them.
    sketches.push(mcu_window(&bytes, &test.values, 13));
    let post = |id: &str, s: &kiln_protocol::Sketch, token: Option<&str>| {
        let body = serde_json::json!({"batch_id": format!("{wine}-{id}"), "model": wine, "version": "1", "sketch": s});
        http(
            &addr,
            "POST",
            "/v1/telemetry",
            token,
            body.to_string().as_bytes(),
        )
    };
    for (k, s) in sketches.iter().enumerate() {
        let (st, body) = post(&format!("b{k}"), s, Some(&device));
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    }
    // A retried batch counts once.
    let (st, body) = post("b1", &sketches[1], Some(&device));
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["duplicate"],
        true
    );
    // No token, a wrong one, a malformed body, an unknown version, a
    // sketch of another shape.
    assert_eq!(post("x", &sketches[0], None).0, 401);
    assert_eq!(post("x", &sketches[0], Some("0123")).0, 401);
    assert_eq!(
        http(&addr, "POST", "/v1/telemetry", Some(&device), b"{").0,
        400
    );
    let other =
        serde_json::json!({"batch_id": "y", "model": wine, "version": "9", "sketch": sketches[0]});
    assert_eq!(
        http(
            &addr,
            "POST",
            "/v1/telemetry",
            Some(&device),
            other.to_string().as_bytes()
        )
        .0,
        404
    );
    let mut bent = sketches[0].clone();
    bent.features.pop();
    assert_eq!(post("z", &bent, Some(&device)).0, 422);

    // The report: the three windows merged, as the collector judges them.
    let (st, body) = http(
        &addr,
        "GET",
        &format!("/v1/models/{wine}/drift?version=1&window=3600"),
        Some(admin),
        b"",
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["batches"], 4);
    assert_eq!(report["rows"].as_u64().unwrap() as usize, 2 * test.count);
    let baseline = model.drift_baseline().unwrap();
    let mut merged = kiln_protocol::Sketch::new(&baseline);
    for s in &sketches {
        merged.merge(s).unwrap();
    }
    let want = detect_sketch(&baseline, &merged, &DriftOptions::default()).unwrap();
    assert_eq!(report["dataset_drift"], want.dataset_drift);
    assert_eq!(
        report["number_of_drifted_columns"],
        want.number_of_drifted_columns
    );
    assert_eq!(
        report["columns"].as_array().unwrap().len(),
        14,
        "13 features and the prediction"
    );
    // The dashboard shows the same verdicts.
    let (st, _) = http(&addr, "GET", "/dashboard", None, b"");
    assert_eq!(st, 401);
    let (st, page) = http(&addr, "GET", "/dashboard", Some(admin), b"");
    assert_eq!(st, 200);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains(&format!(">{wine} 1</a>")), "{page}");
    let (st, page) = http(
        &addr,
        "GET",
        &format!("/dashboard/{wine}/1?window=3600&buckets=6&token={admin}"),
        None,
        b"",
    );
    assert_eq!(st, 200);
    let page = String::from_utf8(page).unwrap();
    for c in report["columns"].as_array().unwrap() {
        let name = c["column"].as_str().unwrap();
        let row = page
            .split("<tr class=col ")
            .find(|r| r.starts_with(&format!("data-column=\"{name}\"")))
            .unwrap_or_else(|| panic!("no row for {name}"));
        let attr = |key: &str| {
            let rest = &row[row.find(&format!("{key}=\"")).unwrap() + key.len() + 2..];
            rest[..rest.find('"').unwrap()].to_string()
        };
        assert_eq!(attr("data-test"), c["stattest_name"].as_str().unwrap());
        assert_eq!(attr("data-drift"), c["drift_detected"].to_string());
        // serde_json reads floats to within an ulp.
        let (shown, want) = (
            attr("data-score").parse::<f64>().unwrap(),
            c["drift_score"].as_f64().unwrap(),
        );
        assert!(
            (shown - want).abs() <= 1e-12 * want.abs(),
            "{name}: {shown} vs {want}"
        );
    }
    assert_eq!(page.matches("<svg class=chart").count(), 3);
    assert_eq!(page.matches("<svg class=hist").count(), 14);
    assert_eq!(
        http(&addr, "GET", "/dashboard/nope/1", Some(admin), b"").0,
        404
    );
    let (_, metrics) = http(&addr, "GET", "/metrics", None, b"");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("kiln_collector_batches_total{result=\"accepted\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_collector_batches_total{result=\"duplicate\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_collector_batches_total{result=\"rejected\"} 5"),
        "{metrics}"
    );

    // Raw samples beside a window (NaN as null), stored with their batch
    // once, back as CSV; rows of the wrong width are refused.
    let empty = kiln_protocol::Sketch::new(&baseline);
    let row: Vec<Value> = (0..13).map(|k| Value::from(f64::from(k) + 0.5)).collect();
    let mut gap = row.clone();
    gap[3] = Value::Null;
    for _ in 0..2 {
        let batch = serde_json::json!({"batch_id": format!("{wine}-s"), "model": wine, "version": "1", "sketch": empty, "samples": [row, gap]});
        let (st, body) = http(
            &addr,
            "POST",
            "/v1/telemetry",
            Some(&device),
            batch.to_string().as_bytes(),
        );
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    }
    let batch = serde_json::json!({"batch_id": format!("{wine}-w"), "model": wine, "version": "1", "sketch": empty, "samples": [[1.0, 2.0]]});
    let (st, body) = http(
        &addr,
        "POST",
        "/v1/telemetry",
        Some(&device),
        batch.to_string().as_bytes(),
    );
    assert_eq!(st, 422, "{}", String::from_utf8_lossy(&body));
    let (st, body) = http(
        &addr,
        "GET",
        &format!("/v1/models/{wine}/samples?version=1&window=3600"),
        Some(admin),
        b"",
    );
    assert_eq!(st, 200);
    let csv = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(lines[0], baseline.names.join(","));
    assert_eq!(
        lines[1],
        "0.5,1.5,2.5,3.5,4.5,5.5,6.5,7.5,8.5,9.5,10.5,11.5,12.5"
    );
    assert_eq!(
        lines[2],
        "0.5,1.5,2.5,,4.5,5.5,6.5,7.5,8.5,9.5,10.5,11.5,12.5"
    );
}

#[test]
fn collector_keeps_every_acknowledged_batch_through_sigkill_sqlite() {
    let tmp = std::env::temp_dir().join(unique("kiln-crash"));
    std::fs::create_dir_all(&tmp).unwrap();
    killed_mid_ingest(&format!("sqlite://{}", tmp.join("c.db").display()), &tmp);
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn collector_keeps_every_acknowledged_batch_through_sigkill_postgres() {
    let Some(url) = postgres() else { return };
    let tmp = std::env::temp_dir().join(unique("kiln-crash"));
    std::fs::create_dir_all(&tmp).unwrap();
    killed_mid_ingest(&url, &tmp);
    std::fs::remove_dir_all(&tmp).ok();
}

/// The collector under load from the load generator is killed with
/// SIGKILL once it has acknowledged a few thousand batches; after a
/// restart on the same database every acknowledged batch is there, and
/// resending one counts as a duplicate.
fn killed_mid_ingest(db: &str, tmp: &Path) {
    use kiln_collector::load::{LoadOptions, reference_sketch, run};
    let artifact = tmp.join("cancer.kiln");
    common::compile_sklearn_with_reference("rf_breast_cancer", &artifact);
    let bytes = std::fs::read(&artifact).unwrap();
    let baseline = Model::load(&bytes).unwrap().drift_baseline().unwrap();
    let admin = "admin-secret-token";
    let (server, addr) = start_collector(db, admin, &[]);
    let name = unique("crash");
    let token = common::register(&addr, admin, &name, &bytes);
    let opts = LoadOptions {
        addr: addr.clone(),
        token,
        model: name.clone(),
        version: "1".into(),
        id_prefix: name.clone(),
        // More than it can take before the kill.
        batches: 100_000_000,
        concurrency: 32,
    };
    // The killer: waits for 3,000 acknowledged batches, then SIGKILL.
    let watched = addr.clone();
    let killer = std::thread::spawn(move || {
        let mut server = server;
        let start = std::time::Instant::now();
        loop {
            let (_, m) = http(&watched, "GET", "/metrics", None, b"");
            let m = String::from_utf8_lossy(&m).to_string();
            let accepted: u64 = m
                .lines()
                .find_map(|l| l.strip_prefix("kiln_collector_batches_total{result=\"accepted\"} "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if accepted >= 3_000 || start.elapsed().as_secs() > 60 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Child::kill is SIGKILL on Unix: no shutdown code runs.
        server.0.kill().unwrap();
        server.0.wait().unwrap();
    });
    let sketch = reference_sketch(&baseline);
    let report = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(&opts, &sketch));
    killer.join().unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.broken > 0, "the load ended without the kill");
    let acked = report.acknowledged.len();
    assert!(acked >= 3_000, "only {acked} batches were acknowledged");

    // Restarted on the same database: every acknowledged batch is there.
    let (_server, addr) = start_collector(db, admin, &[]);
    assert_eq!(http(&addr, "GET", "/health/ready", None, b"").0, 200);
    let mut store = kiln_collector::store::open(db).unwrap();
    let missing: Vec<usize> = report
        .acknowledged
        .iter()
        .copied()
        .filter(|n| !store.has_batch(&format!("{name}-{n}")).unwrap())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {acked} acknowledged batches were lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let (st, body) = http(
        &addr,
        "GET",
        &format!("/v1/models/{name}/drift?version=1"),
        Some(admin),
        b"",
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let stored = serde_json::from_slice::<Value>(&body).unwrap()["batches"]
        .as_u64()
        .unwrap();
    assert!(
        stored as usize >= acked,
        "{stored} stored, {acked} acknowledged"
    );
    // A device retrying an acknowledged batch after the restart: counted
    // once.
    let again = serde_json::json!({
        "batch_id": format!("{name}-{}", report.acknowledged[0]),
        "model": name, "version": "1", "sketch": sketch,
    });
    let (st, body) = http(
        &addr,
        "POST",
        "/v1/telemetry",
        Some(&opts.token),
        again.to_string().as_bytes(),
    );
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["duplicate"],
        true
    );
    eprintln!("{db}: killed after {acked} acknowledged batches ({stored} stored), none lost");
}

/// Alerts: a window that drifted, lost a class and rejected half its
/// calls fires one webhook per condition and runs the retrain hook for
/// drift and the class collapse; later checks of the same window stay
/// quiet; once the window has aged out, each alert resolves.
#[test]
fn collector_alerts_once_per_condition_and_runs_the_retrain_hook() {
    use std::io::{BufRead, BufReader, Read, Write};
    let tmp = std::env::temp_dir().join(unique("kiln-alerts"));
    std::fs::create_dir_all(&tmp).unwrap();
    let artifact = tmp.join("wine.kiln");
    common::compile_sklearn_with_reference("gb_wine", &artifact);
    let bytes = std::fs::read(&artifact).unwrap();

    // The webhook: every POST's JSON body, in order.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for conn in hook.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send(serde_json::from_slice(&body).unwrap());
        }
    });
    let log = tmp.join("retrain.log");
    let admin = "admin-secret-token";
    let webhook = format!("http://{hook_addr}/hook");
    let retrain = format!(
        "echo \"$KILN_ALERT_KIND $KILN_ALERT_MODEL $KILN_ALERT_VERSION\" >> {}",
        log.display()
    );
    let db = format!("sqlite://{}", tmp.join("c.db").display());
    let flags = [
        "--alert-webhook",
        &webhook,
        "--retrain-command",
        &retrain,
        "--alert-every",
        "1",
        "--alert-window",
        "5",
        "--alert-min-rows",
        "20",
    ];
    let (server, addr) = start_collector(&db, admin, &flags);
    let token = common::register(&addr, admin, "wine", &bytes);

    // The window: the test rows tripled (drift), every class-0
    // prediction moved to class 1 (a class the reference predicts for a
    // third of its rows never comes), and as many rejected calls as rows.
    let model = Model::load(&bytes).unwrap();
    let sk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sklearn");
    let test = kiln_cli::read_dataset(&sk.join("gb_wine_test.csv"), Some("target")).unwrap();
    let mut session = model.session();
    session.record_telemetry(1).unwrap();
    for row in test.values.chunks(13) {
        let big: Vec<f32> = row.iter().map(|x| x * 3.0).collect();
        let _ = session.run(&[&TensorValue::from_f32(vec![1, 13], &big)]);
    }
    let mut sketch = session.take_sketch().unwrap();
    let p = sketch.prediction.as_mut().unwrap();
    p.bins[1] += p.bins[0];
    p.bins[0] = 0;
    sketch.rejected = sketch.rows;
    let batch =
        serde_json::json!({"batch_id": "a1", "model": "wine", "version": "1", "sketch": sketch});
    let (st, _) = http(
        &addr,
        "POST",
        "/v1/telemetry",
        Some(&token),
        batch.to_string().as_bytes(),
    );
    assert_eq!(st, 200);

    // Three firing; the collector restarts (on the same database, the
    // conditions still holding: it knows they fire, and says nothing
    // again); then (the window aged out) three resolved, and nothing
    // else.
    let mut got = vec![];
    while got.len() < 3 {
        let a = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("alerts so far: {got:?}"));
        assert_eq!(a["state"], "firing", "{a}");
        got.push(a);
    }
    // Stored (the webhook hears an alert before it is stored: one killed
    // in between would go out again after the restart).
    let listed = || {
        let (_, body) = http(&addr, "GET", "/v1/alerts", Some(admin), b"");
        serde_json::from_slice::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let start = std::time::Instant::now();
    while listed() < 3 {
        assert!(start.elapsed().as_secs() < 10, "the alerts are not stored");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(server);
    let (_server, addr) = start_collector(&db, admin, &flags);
    while got
        .iter()
        .filter(|a: &&Value| a["state"] == "resolved")
        .count()
        < 3
    {
        let a = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("alerts so far: {got:?}"));
        got.push(a);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    while let Ok(a) = rx.try_recv() {
        got.push(a);
    }
    let seq: Vec<(String, String)> = got
        .iter()
        .map(|a| {
            assert_eq!(
                (a["model"].as_str(), a["version"].as_str()),
                (Some("wine"), Some("1"))
            );
            (
                a["kind"].as_str().unwrap().into(),
                a["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(seq.len(), 6, "{seq:?}");
    for kind in ["drift", "class_collapse", "rejection"] {
        let states: Vec<&str> = seq
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(states, ["firing", "resolved"], "{kind}: {seq:?}");
    }
    let collapse = got
        .iter()
        .find(|a| a["kind"] == "class_collapse" && a["state"] == "firing")
        .unwrap();
    assert!(
        collapse["detail"].as_str().unwrap().starts_with("class 0 "),
        "{collapse}"
    );
    // The retrain hook ran once for drift and once for the collapse.
    let mut ran: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    ran.sort();
    assert_eq!(ran, ["class_collapse wine 1", "drift wine 1"]);
    let (st, body) = http(&addr, "GET", "/v1/alerts", Some(admin), b"");
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        6
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// The dashboard in a real headless Chromium (`cli/tests/dashboard.mjs`):
/// three rounds of telemetry a bucket apart, the last one drifted (every
/// value tripled), so each chart has points over time; what the page shows
/// per column equals the drift endpoint's report, and the full-page
/// screenshot is not blank.
#[test]
#[ignore = "needs Node, playwright-core and Chromium: scripts/test.sh runs it"]
fn collector_dashboard_renders_in_chromium() {
    let tmp = std::env::temp_dir().join(unique("kiln-dashboard"));
    std::fs::create_dir_all(&tmp).unwrap();
    let artifact = tmp.join("wine.kiln");
    common::compile_sklearn_with_reference("gb_wine", &artifact);
    let bytes = std::fs::read(&artifact).unwrap();
    let admin = "admin-secret-token";
    let (_server, addr) = start_collector(
        &format!("sqlite://{}", tmp.join("c.db").display()),
        admin,
        &[],
    );
    let token = common::register(&addr, admin, "wine", &bytes);
    let model = Model::load(&bytes).unwrap();
    let sk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sklearn");
    let test = kiln_cli::read_dataset(&sk.join("gb_wine_test.csv"), Some("target")).unwrap();
    let mut session = model.session();
    session.record_telemetry(1).unwrap();
    for round in 0..3 {
        let scale = if round == 2 { 3.0 } else { 1.0 };
        for row in test.values.chunks(13) {
            let row: Vec<f32> = row.iter().map(|x| x * scale).collect();
            session
                .run(&[&TensorValue::from_f32(vec![1, 13], &row)])
                .unwrap();
        }
        // A few bad calls: the rejection chart has something to show.
        for _ in 0..round {
            let _ = session.run(&[&TensorValue::from_f32(vec![1, 12], &[0.0; 12])]);
        }
        let batch = serde_json::json!({"batch_id": format!("r{round}"), "model": "wine", "version": "1", "sketch": session.take_sketch().unwrap()});
        let st = http(
            &addr,
            "POST",
            "/v1/telemetry",
            Some(&token),
            batch.to_string().as_bytes(),
        );
        assert_eq!(st.0, 200);
        if round < 2 {
            std::thread::sleep(std::time::Duration::from_millis(2100));
        }
    }
    let (_, body) = http(
        &addr,
        "GET",
        "/v1/models/wine/drift?version=1&window=60",
        Some(admin),
        b"",
    );
    let report: Value = serde_json::from_slice(&body).unwrap();
    let shot = std::env::temp_dir().join("kiln-dashboard.png");
    let out = std::process::Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard.mjs"))
        .env(
            "KILN_DASHBOARD_URL",
            format!("http://{addr}/dashboard/wine/1?window=60&buckets=30&token={admin}"),
        )
        .env("KILN_DASHBOARD_SHOT", &shot)
        .output()
        .expect("node runs (Node >= 20 is needed)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "dashboard: {} charts, {} columns, screenshot {}x{} -> {}",
        seen["charts"].as_array().unwrap().len(),
        seen["columns"].as_array().unwrap().len(),
        seen["screenshot"]["width"],
        seen["screenshot"]["height"],
        shot.display()
    );
    assert_eq!(seen["datasetDrift"], report["dataset_drift"]);
    assert_eq!(seen["charts"].as_array().unwrap().len(), 3);
    // A point per bucket that got a round (three, unless this VM's clock
    // put two rounds in one bucket): drifted share and rejection rate one
    // each, latency p50/p95/p99 three.
    let points: Vec<u64> = seen["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["points"].as_u64().unwrap())
        .collect();
    let rounds = points[0];
    assert!((1..=3).contains(&rounds), "{seen}");
    assert_eq!(points, [rounds, rounds, 3 * rounds], "{seen}");
    println!("dashboard: {rounds} buckets with telemetry");
    let want = report["columns"].as_array().unwrap();
    let shown = seen["columns"].as_array().unwrap();
    assert_eq!(shown.len(), want.len());
    for (s, w) in shown.iter().zip(want) {
        assert_eq!(s["column"], w["column"]);
        assert_eq!(s["test"], w["stattest_name"]);
        assert_eq!(s["drift"], w["drift_detected"]);
        let (a, b) = (
            s["score"].as_f64().unwrap(),
            w["drift_score"].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= 1e-12 * b.abs(), "{s} vs {w}");
        assert_eq!(s["histogram"], true);
    }
    std::fs::remove_dir_all(&tmp).ok();
}

/// The native uploader while the collector is down and after: windows
/// submitted offline return at once and wait in the spool; the process
/// "restarts" (a new uploader on the same spool) and the collector comes
/// back on the same address; every window arrives once (the rows the
/// drift report counts are the session's), and the spool empties. A
/// window for a version the collector does not know is refused for good,
/// not retried forever. With ε, the window the collector gets is noised.
#[test]
fn native_uploader_spools_offline_and_delivers_each_window_once() {
    use kiln_runtime_native::upload::{UploadConfig, Uploader};
    use std::time::{Duration, Instant};
    let tmp = std::env::temp_dir().join(unique("kiln-upload"));
    std::fs::create_dir_all(&tmp).unwrap();
    let artifact = tmp.join("wine.kiln");
    common::compile_sklearn_with_reference("gb_wine", &artifact);
    let bytes = std::fs::read(&artifact).unwrap();
    let admin = "admin-secret-token";
    let db = format!("sqlite://{}", tmp.join("c.db").display());
    let (server, addr) = start_collector(&db, admin, &[]);
    let token = common::register(&addr, admin, "wine", &bytes);
    drop(server);

    let spool = tmp.join("spool");
    let config = UploadConfig {
        spool: Some(spool.clone()),
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        ..UploadConfig::new(&format!("http://{addr}"), &token, "wine", "1")
    };
    let model = Model::load(&bytes).unwrap();
    let sk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sklearn");
    let test = kiln_cli::read_dataset(&sk.join("gb_wine_test.csv"), Some("target")).unwrap();
    let mut session = model.session();
    session.record_telemetry(1).unwrap();
    let uploader = Uploader::start(config.clone()).unwrap();
    let mut slowest = Duration::ZERO;
    let mut sent = vec![];
    for part in test.values.chunks(13 * 20) {
        for row in part.chunks(13) {
            session
                .run(&[&TensorValue::from_f32(vec![1, 13], row)])
                .unwrap();
        }
        let window = session.take_sketch().unwrap();
        sent.push(window.clone());
        let t = Instant::now();
        uploader.submit(window).unwrap();
        slowest = slowest.max(t.elapsed());
    }
    // Submitting does no I/O: far below one connection attempt.
    assert!(slowest < Duration::from_millis(20), "{slowest:?}");
    let windows = test.values.len().div_ceil(13 * 20);
    let start = Instant::now();
    while uploader.stats().retries < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            uploader.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = uploader.stats();
    assert_eq!(
        (stats.sent, stats.pending),
        (0, windows as u64),
        "{stats:?}"
    );
    drop(uploader);
    let spooled = std::fs::read_dir(&spool).unwrap().count();
    assert_eq!(spooled, windows);

    // Back online, a new process.
    let port = addr.rsplit(':').next().unwrap();
    let (_server, addr2) = start_collector(&db, admin, &["--addr", &format!("127.0.0.1:{port}")]);
    assert_eq!(addr2, addr);
    let uploader = Uploader::start(config.clone()).unwrap();
    assert_eq!(uploader.stats().pending, windows as u64);
    assert!(
        uploader.flush(Duration::from_secs(20)),
        "{:?}",
        uploader.stats()
    );
    assert_eq!(uploader.stats().sent, windows as u64);
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    let (_, body) = http(
        &addr,
        "GET",
        "/v1/models/wine/drift?version=1&window=3600",
        Some(admin),
        b"",
    );
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["batches"], windows);
    assert_eq!(report["rows"].as_u64().unwrap() as usize, test.count);

    // Raw samples beside the windows: 8 uniform rows of each, back as CSV
    // with the baseline's names.
    session.record_samples(8).unwrap();
    let (mut sampled, mut sent_with_samples) = (vec![], vec![]);
    for part in test.values.chunks(13 * 30) {
        for row in part.chunks(13) {
            session
                .run(&[&TensorValue::from_f32(vec![1, 13], row)])
                .unwrap();
        }
        let rows = session.take_samples();
        assert_eq!(rows.len(), 8.min(part.len() / 13));
        sampled.extend(rows.clone());
        let window = session.take_sketch().unwrap();
        sent_with_samples.push(window.clone());
        uploader.submit_with_samples(window, rows).unwrap();
    }
    assert!(uploader.flush(Duration::from_secs(20)));
    let (st, body) = http(
        &addr,
        "GET",
        "/v1/models/wine/samples?version=1&window=3600",
        Some(admin),
        b"",
    );
    assert_eq!(st, 200);
    let csv = tmp.join("samples.csv");
    let header = String::from_utf8_lossy(&body)
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(header, model.drift_baseline().unwrap().names.join(","));
    std::fs::write(&csv, body).unwrap();
    let back = kiln_cli::read_dataset(&csv, None).unwrap();
    assert_eq!(back.count, sampled.len());
    let flat: Vec<f32> = sampled.concat();
    assert_eq!(back.values, flat);
    for row in &sampled {
        assert!(test.values.chunks(13).any(|t| t == row.as_slice()));
    }
    let private = UploadConfig {
        epsilon: Some(1.0),
        ..config.clone()
    };
    assert!(matches!(
        Uploader::start(private)
            .unwrap()
            .submit_with_samples(session.take_sketch().unwrap(), sampled.clone()),
        Err(kiln_runtime_native::upload::UploadError::SamplesNotPrivate)
    ));
    session.record_samples(0).unwrap();

    // Refused for good: an unknown version (404) is not retried.
    let stray = Uploader::start(UploadConfig {
        version: "9".into(),
        spool: None,
        ..config.clone()
    })
    .unwrap();
    stray
        .submit(kiln_protocol::Sketch::new(&model.drift_baseline().unwrap()))
        .unwrap();
    assert!(stray.flush(Duration::from_secs(10)));
    let s = stray.stats();
    assert_eq!((s.sent, s.refused, s.retries), (0, 1, 0), "{s:?}");
    assert!(s.last_error.unwrap().contains("HTTP 404"));

    // ε = 1: the stored window is not the exact one.
    let private = Uploader::start(UploadConfig {
        epsilon: Some(1.0),
        spool: None,
        ..config
    })
    .unwrap();
    for row in test.values.chunks(13) {
        session
            .run(&[&TensorValue::from_f32(vec![1, 13], row)])
            .unwrap();
    }
    let exact = session.take_sketch().unwrap();
    private.submit(exact.clone()).unwrap();
    assert!(private.flush(Duration::from_secs(10)));
    let (_, body) = http(
        &addr,
        "GET",
        "/v1/models/wine/drift?version=1&window=3600",
        Some(admin),
        b"",
    );
    let report: Value = serde_json::from_slice(&body).unwrap();
    let sample_windows = test.values.len().div_ceil(13 * 30);
    assert_eq!(report["batches"], windows + sample_windows + 1);
    // Exactly, the collector would have judged the exact windows merged;
    // the noise moves every score (each of a column's ~30 bins is left as
    // it was with probability (1 − α)/(1 + α) ≈ 3%).
    let baseline = model.drift_baseline().unwrap();
    let mut merged = kiln_protocol::Sketch::new(&baseline);
    for w in sent.iter().chain(&sent_with_samples).chain([&exact]) {
        merged.merge(w).unwrap();
    }
    let want = detect_sketch(&baseline, &merged, &DriftOptions::default()).unwrap();
    assert_ne!(
        report["columns"][0]["drift_score"].as_f64().unwrap(),
        want.columns[0].drift_score
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// A tensor input's baseline: MNIST (mnist-8, `[1, 1, 28, 28]`) compiled
/// with 1,000 test images as the reference gets per-channel summaries
/// (the mean and deviation of each image's pixels) and the class
/// distribution; a native session over 500 other images finds no drift,
/// over the same images inverted (255 − x) it finds the channel's mean
/// and the predictions drifted, not the deviation (which inverting keeps). The collector takes the window.
#[test]
fn a_tensor_input_gets_per_channel_drift() {
    let images = common::mnist_images(1500);
    let tmp = std::env::temp_dir().join(unique("kiln-tensor-drift"));
    std::fs::create_dir_all(&tmp).unwrap();
    let artifact = tmp.join("mnist.kiln");
    common::compile_mnist_with_reference(&images[..1000 * 784], &artifact);
    let bytes = std::fs::read(&artifact).unwrap();
    let model = Model::load(&bytes).unwrap();
    let baseline = model.drift_baseline().unwrap();
    assert_eq!(baseline.channels, Some(1));
    assert_eq!(baseline.names, ["c0.mean", "c0.std"]);
    let p = baseline.prediction.as_ref().expect("the classes");
    assert!(p.argmax && p.feature.bins() == 11, "{:?}", p.feature.bins());

    let window = |f: &dyn Fn(f32) -> f32| {
        let mut session = model.session();
        session.record_telemetry(1).unwrap();
        for image in images[1000 * 784..].chunks(784) {
            let x: Vec<f32> = image.iter().map(|&v| f(v)).collect();
            session
                .run(&[&TensorValue::from_f32(vec![1, 1, 28, 28], &x)])
                .unwrap();
        }
        session.take_sketch().unwrap()
    };
    let same = window(&|x| x);
    assert_eq!(same.rows, 500);
    let report = detect_sketch(&baseline, &same, &DriftOptions::default()).unwrap();
    assert!(!report.dataset_drift, "{report:?}");
    assert!(
        report.columns.iter().all(|c| !c.drift_detected),
        "{report:?}"
    );
    let inverted = window(&|x| 255.0 - x);
    let report = detect_sketch(&baseline, &inverted, &DriftOptions::default()).unwrap();
    assert!(report.dataset_drift, "{report:?}");
    // Inverting keeps each image's deviation: only the mean and the
    // predictions move.
    let drifted: Vec<bool> = report.columns.iter().map(|c| c.drift_detected).collect();
    assert_eq!(drifted, [true, false, true], "{report:?}");

    // The embedded runtime counts the same channel summaries: its window
    // of the same calls is the native one (run times aside).
    let inverted_images: Vec<f32> = images[1000 * 784..].iter().map(|&x| 255.0 - x).collect();
    let mut mcu = mcu_window(&bytes, &inverted_images, 784);
    assert_eq!(mcu.latency_us.iter().sum::<u64>(), 500);
    mcu.latency_us.clone_from(&inverted.latency_us);
    assert_eq!(mcu, inverted);

    // The collector takes tensor windows like any other.
    let admin = "admin-secret-token";
    let (_server, addr) = start_collector(
        &format!("sqlite://{}", tmp.join("c.db").display()),
        admin,
        &[],
    );
    let token = common::register(&addr, admin, "mnist", &bytes);
    // Posts a window, then reads the merged report.
    let post = |id: &str, sketch: &kiln_protocol::Sketch| -> Value {
        let batch =
            serde_json::json!({"batch_id": id, "model": "mnist", "version": "1", "sketch": sketch});
        let st = http(
            &addr,
            "POST",
            "/v1/telemetry",
            Some(&token),
            batch.to_string().as_bytes(),
        );
        assert_eq!(st.0, 200, "{}", String::from_utf8_lossy(&st.1));
        let (_, body) = http(
            &addr,
            "GET",
            "/v1/models/mnist/drift?version=1",
            Some(admin),
            b"",
        );
        serde_json::from_slice(&body).unwrap()
    };
    assert_eq!(post("t1", &inverted)["dataset_drift"], true);
    // And the firmware's window beside it: both merged.
    let report = post("t2", &mcu);
    assert_eq!(report["dataset_drift"], true);
    assert_eq!(report["batches"], 2, "{report}");
    std::fs::remove_dir_all(&tmp).ok();
}
