//! Where the collector keeps what it is sent: model versions with their
//! baselines, device tokens and telemetry batches, in SQLite (a file, the
//! default) or PostgreSQL (for scale). Both speak the same [`Store`]
//! trait; [`open`] picks one from a URL (`sqlite://FILE`,
//! `postgres://…`).
//!
//! Batches are written in groups ([`Store::put_batches`], one transaction
//! per group): a committed group is durable (SQLite in WAL mode with
//! `synchronous = FULL`, PostgreSQL's own commit), which is what lets the
//! server acknowledge a batch only after its group commits.

use std::fmt;

/// One telemetry batch as stored.
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub batch_id: String,
    pub model: String,
    pub version: String,
    /// Seconds since the Unix epoch, when the collector received it.
    pub received: i64,
    /// The sketch, postcard bytes.
    pub sketch: Vec<u8>,
    /// Raw sampled rows sent beside the sketch, JSON (`[[x, …], …]`).
    pub samples: Option<String>,
}

/// One alert as stored: when (seconds since the Unix epoch), model,
/// version, kind, state (`firing`/`resolved`) and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub at: i64,
    pub model: String,
    pub version: String,
    pub kind: String,
    pub state: String,
    pub detail: String,
}

/// One recorded move of the update service (a release published, a
/// channel's rollout started, stepped, paused, resumed, promoted, rolled
/// back): who, when, from which version to which, at what percentage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OtaEvent {
    /// Order of the events (one counter for the whole service).
    pub seq: i64,
    pub at: i64,
    pub model: String,
    pub channel: String,
    pub actor: String,
    pub action: String,
    pub from: String,
    pub to: String,
    pub percent: i64,
    /// The channel's manifest serial after the move.
    pub serial: i64,
    pub detail: String,
}

/// A model version as stored: its baseline, postcard bytes.
pub type VersionRow = (String, String, Vec<u8>);

/// What a storage backend failed at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("{0}")]
    Url(String),
}

/// A storage backend. Calls are blocking; the server makes them from its
/// writer thread or from blocking tasks.
pub trait Store: Send + fmt::Debug {
    /// Stores (replacing) a model version's baseline.
    fn put_version(
        &mut self,
        model: &str,
        version: &str,
        baseline: &[u8],
    ) -> Result<(), StoreError>;
    /// Stores a device token for `model`.
    fn put_token(&mut self, token: &str, model: &str) -> Result<(), StoreError>;
    /// Every model version.
    fn versions(&mut self) -> Result<Vec<VersionRow>, StoreError>;
    /// Every device token and its model.
    fn tokens(&mut self) -> Result<Vec<(String, String)>, StoreError>;
    /// Stores `rows` in one transaction; per row, whether it was new
    /// (`false`: a batch with that id was already stored).
    fn put_batches(&mut self, rows: &[BatchRow]) -> Result<Vec<bool>, StoreError>;
    /// The sketches of `model` at `version` received at or after `since`,
    /// each with when it was received, oldest first.
    fn sketches(
        &mut self,
        model: &str,
        version: &str,
        since: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError>;
    /// The raw rows sent with `model` at `version`'s batches received at
    /// or after `since`, one JSON array of rows per batch, oldest first.
    fn samples(
        &mut self,
        model: &str,
        version: &str,
        since: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Stores an alert as it went out.
    fn put_alert(&mut self, alert: &AlertRow) -> Result<(), StoreError>;
    /// The latest `limit` alerts, oldest first.
    fn alerts(&mut self, limit: i64) -> Result<Vec<AlertRow>, StoreError>;
    /// Whether a stored batch id is there (the crash tests ask).
    fn has_batch(&mut self, batch_id: &str) -> Result<bool, StoreError>;
    /// Stores (replacing) the update service's entry `key` (a release or
    /// a channel's state, JSON) and records `event`, in one transaction:
    /// no move goes unrecorded.
    fn put_ota(&mut self, key: &str, value: &str, event: &OtaEvent) -> Result<(), StoreError>;
    /// Every update service entry.
    fn ota(&mut self) -> Result<Vec<(String, String)>, StoreError>;
    /// The update service's events, in order.
    fn ota_events(&mut self) -> Result<Vec<OtaEvent>, StoreError>;
    /// A round trip to the database.
    fn ping(&mut self) -> Result<(), StoreError>;
}

/// Opens the database at `url`: `sqlite://FILE` (created if missing) or
/// `postgres://USER@HOST[:PORT]/DB` (`postgresql://` too), creating the
/// tables it lacks.
pub fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::Url(
                "sqlite:// needs a file path (sqlite://collector.db)".into(),
            ));
        }
        return Ok(Box::new(Sqlite::open(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(Postgres::open(url)?));
    }
    Err(StoreError::Url(format!(
        "{url}: expected sqlite://FILE or postgres://USER@HOST/DB"
    )))
}

/// The tables, in either database's names for bytes and 64-bit integers.
fn schema(bytes: &str, int64: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS versions (
             model TEXT NOT NULL, version TEXT NOT NULL, baseline {bytes} NOT NULL,
             PRIMARY KEY (model, version));
         CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, model TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS batches (
             batch_id TEXT PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL,
             received {int64} NOT NULL, sketch {bytes} NOT NULL);
         CREATE INDEX IF NOT EXISTS batches_by_model ON batches (model, version, received);
         CREATE TABLE IF NOT EXISTS samples (
             batch_id TEXT PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL,
             received {int64} NOT NULL, rows TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS samples_by_model ON samples (model, version, received);
         CREATE TABLE IF NOT EXISTS alerts (
             at {int64} NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
             kind TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (at);
         CREATE TABLE IF NOT EXISTS ota (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS ota_events (
             seq {int64} PRIMARY KEY, at {int64} NOT NULL, model TEXT NOT NULL,
             channel TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
             from_version TEXT NOT NULL, to_version TEXT NOT NULL,
             percent {int64} NOT NULL, serial {int64} NOT NULL, detail TEXT NOT NULL);"
    )
}

/// SQLite, one connection.
pub struct Sqlite {
    db: rusqlite::Connection,
}

impl fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sqlite")
            .field("path", &self.db.path())
            .finish()
    }
}

impl Sqlite {
    fn open(path: &str) -> Result<Sqlite, StoreError> {
        let db = rusqlite::Connection::open(path)?;
        // Another connection (the writer's) may hold the lock briefly.
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.execute_batch(
            "PRAGMA page_size = 16384;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;",
        )?;
        db.execute_batch(&schema("BLOB", "INTEGER"))?;
        Ok(Sqlite { db })
    }
}

impl Store for Sqlite {
    fn put_version(
        &mut self,
        model: &str,
        version: &str,
        baseline: &[u8],
    ) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR REPLACE INTO versions (model, version, baseline) VALUES (?1, ?2, ?3)",
            rusqlite::params![model, version, baseline],
        )?;
        Ok(())
    }

    fn put_token(&mut self, token: &str, model: &str) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO tokens (token, model) VALUES (?1, ?2)",
            rusqlite::params![token, model],
        )?;
        Ok(())
    }

    fn versions(&mut self) -> Result<Vec<VersionRow>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT model, version, baseline FROM versions")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn tokens(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.db.prepare("SELECT token, model FROM tokens")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_batches(&mut self, rows: &[BatchRow]) -> Result<Vec<bool>, StoreError> {
        let tx = self.db.transaction()?;
        let mut fresh = Vec::with_capacity(rows.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO batches (batch_id, model, version, received, sketch)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut samples = tx.prepare_cached(
                "INSERT INTO samples (batch_id, model, version, received, rows)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in rows {
                let n = stmt.execute(rusqlite::params![
                    r.batch_id, r.model, r.version, r.received, r.sketch
                ])?;
                if n == 1
                    && let Some(rows) = &r.samples
                {
                    samples.execute(rusqlite::params![
                        r.batch_id, r.model, r.version, r.received, rows
                    ])?;
                }
                fresh.push(n == 1);
            }
        }
        tx.commit()?;
        Ok(fresh)
    }

    fn samples(
        &mut self,
        model: &str,
        version: &str,
        since: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT rows FROM samples
             WHERE model = ?1 AND version = ?2 AND received >= ?3 ORDER BY received",
        )?;
        let rows = stmt.query_map(rusqlite::params![model, version, since], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn sketches(
        &mut self,
        model: &str,
        version: &str,
        since: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT received, sketch FROM batches
             WHERE model = ?1 AND version = ?2 AND received >= ?3 ORDER BY received",
        )?;
        let rows = stmt.query_map(rusqlite::params![model, version, since], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_alert(&mut self, a: &AlertRow) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO alerts (at, model, version, kind, state, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![a.at, a.model, a.version, a.kind, a.state, a.detail],
        )?;
        Ok(())
    }

    fn alerts(&mut self, limit: i64) -> Result<Vec<AlertRow>, StoreError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT at, model, version, kind, state, detail FROM
             (SELECT rowid, * FROM alerts ORDER BY rowid DESC LIMIT ?1) ORDER BY rowid",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(AlertRow {
                at: r.get(0)?,
                model: r.get(1)?,
                version: r.get(2)?,
                kind: r.get(3)?,
                state: r.get(4)?,
                detail: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn has_batch(&mut self, batch_id: &str) -> Result<bool, StoreError> {
        let n: i64 = self.db.query_row(
            "SELECT COUNT(*) FROM batches WHERE batch_id = ?1",
            [batch_id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    fn put_ota(&mut self, key: &str, value: &str, e: &OtaEvent) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "INSERT INTO ota (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![key, value],
        )?;
        tx.execute(
            "INSERT INTO ota_events (seq, at, model, channel, actor, action, from_version,
             to_version, percent, serial, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            rusqlite::params![
                e.seq, e.at, e.model, e.channel, e.actor, e.action, e.from, e.to, e.percent,
                e.serial, e.detail
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn ota(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.db.prepare("SELECT key, value FROM ota")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn ota_events(&mut self) -> Result<Vec<OtaEvent>, StoreError> {
        let mut stmt = self.db.prepare(
            "SELECT seq, at, model, channel, actor, action, from_version, to_version,
             percent, serial, detail FROM ota_events ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(OtaEvent {
                seq: r.get(0)?,
                at: r.get(1)?,
                model: r.get(2)?,
                channel: r.get(3)?,
                actor: r.get(4)?,
                action: r.get(5)?,
                from: r.get(6)?,
                to: r.get(7)?,
                percent: r.get(8)?,
                serial: r.get(9)?,
                detail: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// PostgreSQL, one client connection.
pub struct Postgres {
    client: postgres::Client,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

impl Postgres {
    fn open(url: &str) -> Result<Postgres, StoreError> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        // Two collectors starting at once on a new database would race
        // in `CREATE TABLE IF NOT EXISTS` (PostgreSQL's catalog answers
        // one of them with a unique violation): one at a time.
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(7041001)", &[])?;
        tx.batch_execute(&schema("BYTEA", "BIGINT"))?;
        tx.commit()?;
        Ok(Postgres { client })
    }
}

/// Inserts a group of batches in one statement (the rows as arrays, the
/// ids that were new coming back); per row, whether it was new.
fn insert_group(
    client: &mut impl postgres::GenericClient,
    rows: &[BatchRow],
) -> Result<Vec<bool>, StoreError> {
    let ids: Vec<&str> = rows.iter().map(|r| r.batch_id.as_str()).collect();
    let models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    let versions: Vec<&str> = rows.iter().map(|r| r.version.as_str()).collect();
    let received: Vec<i64> = rows.iter().map(|r| r.received).collect();
    let sketches: Vec<&[u8]> = rows.iter().map(|r| r.sketch.as_slice()).collect();
    let inserted = client.query(
        "INSERT INTO batches (batch_id, model, version, received, sketch)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[])
         ON CONFLICT (batch_id) DO NOTHING
         RETURNING batch_id",
        &[&ids, &models, &versions, &received, &sketches],
    )?;
    let new: std::collections::HashSet<String> =
        inserted.iter().map(|r| r.get::<_, String>(0)).collect();
    // A group may carry the same id twice (a retry racing its original):
    // only the first of them is new.
    let mut seen = std::collections::HashSet::new();
    Ok(rows
        .iter()
        .map(|r| new.contains(&r.batch_id) && seen.insert(r.batch_id.as_str()))
        .collect())
}

impl Store for Postgres {
    fn put_version(
        &mut self,
        model: &str,
        version: &str,
        baseline: &[u8],
    ) -> Result<(), StoreError> {
        self.client.execute(
            "INSERT INTO versions (model, version, baseline) VALUES ($1, $2, $3)
             ON CONFLICT (model, version) DO UPDATE SET baseline = EXCLUDED.baseline",
            &[&model, &version, &baseline],
        )?;
        Ok(())
    }

    fn put_token(&mut self, token: &str, model: &str) -> Result<(), StoreError> {
        self.client.execute(
            "INSERT INTO tokens (token, model) VALUES ($1, $2)",
            &[&token, &model],
        )?;
        Ok(())
    }

    fn versions(&mut self) -> Result<Vec<VersionRow>, StoreError> {
        let rows = self
            .client
            .query("SELECT model, version, baseline FROM versions", &[])?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn tokens(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.client.query("SELECT token, model FROM tokens", &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn put_batches(&mut self, rows: &[BatchRow]) -> Result<Vec<bool>, StoreError> {
        // Raw samples go with their batch, in one transaction; a group
        // without any is one statement (no BEGIN/COMMIT round trips).
        if rows.iter().all(|r| r.samples.is_none()) {
            return insert_group(&mut self.client, rows);
        }
        let mut tx = self.client.transaction()?;
        let fresh = insert_group(&mut tx, rows)?;
        let with_samples: Vec<&BatchRow> = rows
            .iter()
            .zip(&fresh)
            .filter(|(r, new)| **new && r.samples.is_some())
            .map(|(r, _)| r)
            .collect();
        let col =
            |f: fn(&BatchRow) -> &str| -> Vec<&str> { with_samples.iter().map(|r| f(r)).collect() };
        let (ids, models, versions) =
            (col(|r| &r.batch_id), col(|r| &r.model), col(|r| &r.version));
        let texts = col(|r| r.samples.as_deref().unwrap_or("[]"));
        let received: Vec<i64> = with_samples.iter().map(|r| r.received).collect();
        tx.execute(
            "INSERT INTO samples (batch_id, model, version, received, rows)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])",
            &[&ids, &models, &versions, &received, &texts],
        )?;
        tx.commit()?;
        Ok(fresh)
    }

    fn samples(
        &mut self,
        model: &str,
        version: &str,
        since: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self.client.query(
            "SELECT rows FROM samples
             WHERE model = $1 AND version = $2 AND received >= $3 ORDER BY received",
            &[&model, &version, &since],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn sketches(
        &mut self,
        model: &str,
        version: &str,
        since: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let rows = self.client.query(
            "SELECT received, sketch FROM batches
             WHERE model = $1 AND version = $2 AND received >= $3 ORDER BY received",
            &[&model, &version, &since],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn put_alert(&mut self, a: &AlertRow) -> Result<(), StoreError> {
        self.client.execute(
            "INSERT INTO alerts (at, model, version, kind, state, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&a.at, &a.model, &a.version, &a.kind, &a.state, &a.detail],
        )?;
        Ok(())
    }

    fn alerts(&mut self, limit: i64) -> Result<Vec<AlertRow>, StoreError> {
        // Insertion order: a sequence column would need a migration of
        // older databases; (at, ctid) orders alerts of one second too.
        let rows = self.client.query(
            "SELECT at, model, version, kind, state, detail FROM
             (SELECT *, ctid AS pos FROM alerts ORDER BY at DESC, ctid DESC LIMIT $1) AS latest
             ORDER BY at, pos",
            &[&limit],
        )?;
        Ok(rows
            .iter()
            .map(|r| AlertRow {
                at: r.get(0),
                model: r.get(1),
                version: r.get(2),
                kind: r.get(3),
                state: r.get(4),
                detail: r.get(5),
            })
            .collect())
    }

    fn has_batch(&mut self, batch_id: &str) -> Result<bool, StoreError> {
        let row = self.client.query_one(
            "SELECT COUNT(*) FROM batches WHERE batch_id = $1",
            &[&batch_id],
        )?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.client.simple_query("SELECT 1")?;
        Ok(())
    }

    fn put_ota(&mut self, key: &str, value: &str, e: &OtaEvent) -> Result<(), StoreError> {
        let mut tx = self.client.transaction()?;
        tx.execute(
            "INSERT INTO ota (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        tx.execute(
            "INSERT INTO ota_events (seq, at, model, channel, actor, action, from_version,
             to_version, percent, serial, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &e.seq, &e.at, &e.model, &e.channel, &e.actor, &e.action, &e.from, &e.to,
                &e.percent, &e.serial, &e.detail,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn ota(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.client.query("SELECT key, value FROM ota", &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn ota_events(&mut self) -> Result<Vec<OtaEvent>, StoreError> {
        let rows = self.client.query(
            "SELECT seq, at, model, channel, actor, action, from_version, to_version,
             percent, serial, detail FROM ota_events ORDER BY seq",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| OtaEvent {
                seq: r.get(0),
                at: r.get(1),
                model: r.get(2),
                channel: r.get(3),
                actor: r.get(4),
                action: r.get(5),
                from: r.get(6),
                to: r.get(7),
                percent: r.get(8),
                serial: r.get(9),
                detail: r.get(10),
            })
            .collect())
    }
}
