//! Persistence for skywarden, behind one type per concern: the embedded default is SQLite in
//! the data directory (`skywarden.db` for the engine and labels, `moderation.db` for the
//! moderation queue; WAL journal).
//!
//! What lives here, and the guarantees the engine builds on:
//!
//! - the **effect log** — append-only, one row per effect, unique by idempotency key, so a
//!   replay after a crash cannot log an effect twice;
//! - **subject state** — labels, tags, open reports and takedowns currently applied, per mode,
//!   against which effects are de-duplicated;
//! - **quota usage** per action verb and UTC day;
//! - **checkpoints** (a source's cursor) and **snapshots** (opaque state blobs: counters,
//!   account state), written in the same transaction as each other so they always agree. A
//!   snapshot's bytes go to a file of their own under `snapshots/` in the data directory
//!   (written and synced before the transaction commits; the database keeps its name, length
//!   and checksum), so a checkpoint neither copies the state through SQLite's pages and WAL
//!   nor grows the WAL by the state's size; an in-memory store keeps them in the database;
//! - **sink cursors**: how far each sink has consumed the effect log;
//! - **labels** ([`labels`]): the labeler's signed labels in stream order, in SQLite or
//!   Postgres behind the [`labels::LabelStore`] trait.
//!
//! The store decides nothing: de-duplication and quota policy belong to the engine, which
//! reads and writes through a [`Tx`] so that an effect, the state it changes and the quota it
//! uses commit together or not at all.

#![warn(missing_docs)]

pub mod labels;
pub mod moderation;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// A storage failure: the database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("store: {context}: {source}")]
pub struct StoreError {
    context: String,
    #[source]
    source: sqlx::Error,
}

fn err(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError { context, source }
}

/// The result type of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    event_time INTEGER NOT NULL,
    logged_at INTEGER NOT NULL,
    cursor INTEGER NOT NULL,
    did TEXT NOT NULL,
    rule TEXT NOT NULL,
    ruleset_version TEXT NOT NULL,
    mode TEXT NOT NULL,
    verb TEXT NOT NULL,
    subject TEXT NOT NULL,
    outcome TEXT NOT NULL,
    action TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS effects_subject ON effects (subject);
CREATE INDEX IF NOT EXISTS effects_rule ON effects (rule);
CREATE TABLE IF NOT EXISTS subject_state (
    mode TEXT NOT NULL,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (mode, subject, kind, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quota_usage (
    day INTEGER NOT NULL,
    verb TEXT NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (day, verb)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_files (
    name TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    generation INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    checksum INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sink_cursors (
    sink TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
);
"#;

/// The engine's database in the data directory: effect log, state, checkpoints, labels.
pub const ENGINE_DB: &str = "skywarden.db";

/// A pool on `dir`'s [`ENGINE_DB`] (see [`open_pool_file`]).
pub(crate) async fn open_pool(dir: &Path, connections: u32) -> Result<SqlitePool> {
    open_pool_file(dir, ENGINE_DB, connections).await
}

/// A pool on the database `file` in `dir`: WAL checkpointed every 8192 pages,
/// `synchronous=NORMAL`, 10 s busy timeout, statement journals in memory, a 16 MB page cache
/// per connection.
pub(crate) async fn open_pool_file(dir: &Path, file: &str, connections: u32) -> Result<SqlitePool> {
    let path = dir.join(file);
    let options = SqliteConnectOptions::from_str("sqlite:")
        .map_err(err("sqlite options"))?
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL survives a process crash (SIGKILL); a power cut may roll back the
        // last transactions, but effects, state and checkpoints roll back together.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        // Upserts and multi-row inserts inside a transaction keep a statement journal; on
        // disk (the default) every such statement writes a temporary file.
        .pragma("temp_store", "MEMORY")
        // The default 2 MB cache re-reads the effect log's and the queue's index pages from
        // the OS on every transaction.
        .pragma("cache_size", "-16384")
        // The default checkpoint every 1000 pages (4 MB) copies the same hot index pages
        // into the database file again and again; every 32 MB copies each once per round.
        .pragma("wal_autocheckpoint", "8192");
    SqlitePoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .map_err(err(format!("opening {}", path.display())))
}

/// The store: a pool of SQLite connections.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// Where snapshot files go (`snapshots/` in the data directory); `None` for an in-memory
    /// store, which keeps snapshots in the database.
    snapshot_dir: Option<PathBuf>,
}

/// One effect to append to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEffect {
    /// Unique per (event, op, rule, action): a replay produces the same key.
    pub idempotency_key: String,
    /// The event's time (µs since the epoch).
    pub event_time: i64,
    /// The source cursor of the event.
    pub cursor: i64,
    /// The DID whose event fired the rule.
    pub did: String,
    /// The rule that fired.
    pub rule: String,
    /// The ruleset version (content hash) the rule came from.
    pub ruleset_version: String,
    /// `live` or `shadow`.
    pub mode: String,
    /// The action verb: `label`, `tag`, `report`, ...
    pub verb: String,
    /// What the action is on: a DID or an `at://` URI.
    pub subject: String,
    /// `applied`, `shadow` or `over_quota`.
    pub outcome: String,
    /// The whole action as JSON, with its explanation.
    pub action: String,
}

/// An effect read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectRow {
    /// Position in the log (increasing).
    pub id: i64,
    /// When it was written (wall clock, µs since the epoch).
    pub logged_at: i64,
    /// The effect as appended.
    pub effect: NewEffect,
}

/// A page of a log (effects, moderation events) for a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage<T> {
    /// The rows the sink asked for, oldest first.
    pub rows: Vec<T>,
    /// Where the sink resumes: the last row's id, or past every row logged so far when the
    /// page is not full (the rows skipped are not the sink's).
    pub cursor: i64,
    /// Whether the page holds `limit` rows (more may be waiting).
    pub full: bool,
}

impl<T> LogPage<T> {
    /// Nothing new after `after`.
    pub(crate) fn empty(after: i64) -> Self {
        LogPage {
            rows: Vec::new(),
            cursor: after,
            full: false,
        }
    }

    /// The page of `rows` read with `limit` from a log whose last visible id was `end`.
    pub(crate) fn new(rows: Vec<T>, limit: u32, end: i64, id: impl Fn(&T) -> i64) -> Self {
        let full = rows.len() as u64 >= u64::from(limit);
        let cursor = match rows.last() {
            Some(last) if full => id(last),
            _ => end,
        };
        LogPage { rows, cursor, full }
    }
}

/// A page of the effect log for a sink ([`Store::applied_effects`]).
pub type EffectPage = LogPage<EffectRow>;

const EFFECT_COLUMNS: &str = "id, logged_at, idempotency_key, event_time, cursor, did, rule, \
     ruleset_version, mode, verb, subject, outcome, action";

fn effect_row(r: &sqlx::sqlite::SqliteRow) -> EffectRow {
    EffectRow {
        id: r.get(0),
        logged_at: r.get(1),
        effect: NewEffect {
            idempotency_key: r.get(2),
            event_time: r.get(3),
            cursor: r.get(4),
            did: r.get(5),
            rule: r.get(6),
            ruleset_version: r.get(7),
            mode: r.get(8),
            verb: r.get(9),
            subject: r.get(10),
            outcome: r.get(11),
            action: r.get(12),
        },
    }
}

impl Store {
    /// Opens (creating if needed) `skywarden.db` in `dir`, which must exist.
    pub async fn open(dir: &Path) -> Result<Store> {
        let store = Self::with_pool(open_pool(dir, 4).await?, Some(dir.join(SNAPSHOT_DIR))).await?;
        store.remove_unreferenced_snapshot_files().await?;
        Ok(store)
    }

    /// An in-memory store (tests): one connection, gone when dropped.
    pub async fn open_in_memory() -> Result<Store> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(err("options"))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(err("opening an in-memory database"))?;
        Self::with_pool(pool, None).await
    }

    async fn with_pool(pool: SqlitePool, snapshot_dir: Option<PathBuf>) -> Result<Store> {
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(err("creating the schema"))?;
        Ok(Store { pool, snapshot_dir })
    }

    /// Starts a write transaction. It takes the write lock at once (`BEGIN IMMEDIATE`),
    /// waiting up to the busy timeout for other writers: a transaction that read first and
    /// wrote later could otherwise fail at once when another connection wrote in between.
    pub async fn begin(&self) -> Result<Tx> {
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("starting a transaction"))?;
        Ok(Tx {
            tx,
            snapshot_dir: self.snapshot_dir.clone(),
            superseded: Vec::new(),
        })
    }

    /// The saved cursor of `source`, if any.
    pub async fn checkpoint(&self, source: &str) -> Result<Option<i64>> {
        sqlx::query("SELECT cursor FROM checkpoints WHERE source = ?")
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .map(|row| row.map(|r| r.get::<i64, _>(0)))
            .map_err(err("reading the checkpoint"))
    }

    /// The snapshot saved under `name`, if any.
    pub async fn snapshot(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let file = sqlx::query("SELECT file, bytes, checksum FROM snapshot_files WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("reading a snapshot's file name"))?;
        if let Some(row) = file {
            let dir = self.snapshot_dir.as_deref().unwrap_or(Path::new(""));
            let path = dir.join(row.get::<String, _>(0));
            let (bytes, checksum) = (row.get::<i64, _>(1), row.get::<i64, _>(2));
            let data =
                tokio::task::spawn_blocking(move || read_snapshot_file(&path, bytes, checksum))
                    .await
                    .map_err(|e| io_error("reading a snapshot file", std::io::Error::other(e)))??;
            return Ok(Some(data));
        }
        // Snapshots of an in-memory store, or written before snapshots went to files.
        sqlx::query("SELECT data FROM snapshots WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map(|row| row.map(|r| r.get::<Vec<u8>, _>(0)))
            .map_err(err("reading a snapshot"))
    }

    /// Up to `limit` effects with `id > after`, oldest first.
    pub async fn effects_after(&self, after: i64, limit: u32) -> Result<Vec<EffectRow>> {
        let sql = format!("SELECT {EFFECT_COLUMNS} FROM effects WHERE id > ? ORDER BY id LIMIT ?");
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(err("reading the effect log"))?;
        Ok(rows.iter().map(effect_row).collect())
    }

    /// What a sink reads next: up to `limit` applied effects with `id > after`, oldest
    /// first, of the given verbs (all verbs when `verbs` is empty). Rows the sink does not
    /// want are skipped by the database, never read; [`EffectPage::cursor`] says where the
    /// sink resumes, past them.
    pub async fn applied_effects(
        &self,
        after: i64,
        limit: u32,
        verbs: &[&str],
    ) -> Result<EffectPage> {
        // Effects are written by one writer at a time and ids only grow, so every id up to the
        // largest one visible now is committed: the sink may resume after it.
        let end: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM effects")
            .fetch_one(&self.pool)
            .await
            .map_err(err("reading the effect log"))?
            .get(0);
        if end <= after {
            return Ok(LogPage::empty(after));
        }
        let mut sql = format!(
            "SELECT {EFFECT_COLUMNS} FROM effects \
             WHERE id > ? AND id <= ? AND outcome = 'applied'"
        );
        if !verbs.is_empty() {
            sql.push_str(" AND verb IN ");
            push_placeholders(&mut sql, 1, verbs.len());
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        let mut q = sqlx::query(&sql).bind(after).bind(end);
        for v in verbs {
            q = q.bind(*v);
        }
        let rows: Vec<EffectRow> = q
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(err("reading the effect log"))?
            .iter()
            .map(effect_row)
            .collect();
        Ok(LogPage::new(rows, limit, end, |r| r.id))
    }

    /// The number of effects in the log.
    pub async fn effect_count(&self) -> Result<i64> {
        sqlx::query("SELECT count(*) FROM effects")
            .fetch_one(&self.pool)
            .await
            .map(|r| r.get(0))
            .map_err(err("counting effects"))
    }

    /// The current values of kind `kind` (`label`, `tag`, ...) on `subject` in `mode`.
    pub async fn subject_values(
        &self,
        mode: &str,
        subject: &str,
        kind: &str,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT value FROM subject_state WHERE mode = ? AND subject = ? AND kind = ? ORDER BY value",
        )
        .bind(mode)
        .bind(subject)
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .map_err(err("reading subject state"))?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// How far sink `sink` has consumed the effect log (0 if never).
    pub async fn sink_cursor(&self, sink: &str) -> Result<i64> {
        sqlx::query("SELECT last_id FROM sink_cursors WHERE sink = ?")
            .bind(sink)
            .fetch_optional(&self.pool)
            .await
            .map(|row| row.map_or(0, |r| r.get(0)))
            .map_err(err("reading a sink cursor"))
    }

    /// Records that sink `sink` has consumed the effect log up to `last_id`.
    pub async fn set_sink_cursor(&self, sink: &str, last_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO sink_cursors (sink, last_id) VALUES (?, ?) \
             ON CONFLICT (sink) DO UPDATE SET last_id = excluded.last_id",
        )
        .bind(sink)
        .bind(last_id)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(err("saving a sink cursor"))
    }

    /// Removes snapshot files no checkpoint refers to: those of a transaction that did not
    /// commit, or replaced ones whose removal was cut short. Snapshot files are only written
    /// inside a write transaction, so under the write lock taken here, a file no row names
    /// cannot be one that another process (a running `serve`) is about to commit.
    async fn remove_unreferenced_snapshot_files(&self) -> Result<()> {
        let Some(dir) = self.snapshot_dir.clone() else {
            return Ok(());
        };
        let mut tx = self.begin().await?;
        let referenced: HashSet<String> = sqlx::query("SELECT file FROM snapshot_files")
            .fetch_all(&mut *tx.tx)
            .await
            .map_err(err("listing snapshot files"))?
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".snap")
                && !referenced.contains(&name)
                && let Err(e) = std::fs::remove_file(entry.path())
            {
                tracing::warn!(file = %entry.path().display(), error = %e, "could not remove an unused snapshot file");
            }
        }
        tx.commit().await
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Rows per statement in the batch methods of [`Tx`] (12 columns × 100 rows stays far below
/// SQLite's limit on bound parameters).
pub const BATCH_ROWS: usize = 100;

/// `items` in chunks for multi-row statements: [`BATCH_ROWS`] at a time, the rest in chunks
/// whose lengths are powers of two. A statement's text depends on its row count, and a
/// connection keeps the statements it has seen prepared: with only these few lengths each
/// statement is parsed and planned once per connection, not again for every new count.
pub(crate) fn statement_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= BATCH_ROWS {
            BATCH_ROWS
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// How many places an `IN (...)` list of `n` values (at most [`BATCH_ROWS`]) is bound with:
/// `n` rounded up to a power of two, or [`BATCH_ROWS`], for the reason given at
/// [`statement_chunks`]. See [`padded`] for what fills the extra places.
pub(crate) fn padded_len(n: usize) -> usize {
    if n <= 1 {
        return n;
    }
    n.next_power_of_two().min(BATCH_ROWS).max(n)
}

/// The values of `list` for `places` places of an `IN (...)` list: the values, then the last
/// one repeated, which leaves the set the list stands for unchanged.
pub(crate) fn padded<T>(list: &[T], places: usize) -> impl Iterator<Item = &T> {
    let fill = places.saturating_sub(list.len());
    list.iter()
        .chain(list.last().into_iter().cycle().take(fill))
}

/// Appends `rows` groups of `columns` placeholders: `(?, ?), (?, ?)`.
fn push_placeholders(sql: &mut String, rows: usize, columns: usize) {
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            sql.push_str(if c == 0 { "?" } else { ", ?" });
        }
        sql.push(')');
    }
}

/// One subject-state value to write with [`Tx::put_states`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateValue<'a> {
    /// `live` or `shadow`.
    pub mode: &'a str,
    /// A DID or an `at://` URI.
    pub subject: &'a str,
    /// `label`, `tag`, `flag`, `report` or `takedown`.
    pub kind: &'a str,
    /// The label value, tag, flag, report reason; empty for a takedown.
    pub value: &'a str,
    /// Since when (event time, µs).
    pub since: i64,
}

/// A write transaction: everything done through it commits atomically.
pub struct Tx {
    tx: Transaction<'static, Sqlite>,
    snapshot_dir: Option<PathBuf>,
    /// Snapshot files this transaction replaces: removed once it has committed.
    superseded: Vec<PathBuf>,
}

impl Tx {
    /// Appends `effect` unless an effect with the same idempotency key is already logged.
    /// Returns whether it was appended.
    pub async fn insert_effect(&mut self, effect: &NewEffect, logged_at: i64) -> Result<bool> {
        Ok(self.insert_effects(&[effect], logged_at).await? == 1)
    }

    /// Appends `effects` in order (in the chunks [`statement_chunks`] cuts), skipping any
    /// whose idempotency key is already logged. Returns how many were appended.
    pub async fn insert_effects(&mut self, effects: &[&NewEffect], logged_at: i64) -> Result<u64> {
        let mut appended = 0;
        for chunk in statement_chunks(effects) {
            let mut sql = String::from(
                "INSERT INTO effects (idempotency_key, event_time, logged_at, cursor, did, rule, \
                 ruleset_version, mode, verb, subject, outcome, action) VALUES ",
            );
            push_placeholders(&mut sql, chunk.len(), 12);
            sql.push_str(" ON CONFLICT (idempotency_key) DO NOTHING");
            let mut query = sqlx::query(&sql);
            for effect in chunk {
                query = query
                    .bind(&effect.idempotency_key)
                    .bind(effect.event_time)
                    .bind(logged_at)
                    .bind(effect.cursor)
                    .bind(&effect.did)
                    .bind(&effect.rule)
                    .bind(&effect.ruleset_version)
                    .bind(&effect.mode)
                    .bind(&effect.verb)
                    .bind(&effect.subject)
                    .bind(&effect.outcome)
                    .bind(&effect.action);
            }
            appended += query
                .execute(&mut *self.tx)
                .await
                .map_err(err("appending to the effect log"))?
                .rows_affected();
        }
        Ok(appended)
    }

    /// Which of `keys` are idempotency keys of logged effects.
    pub async fn logged_keys(&mut self, keys: &[&str]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for chunk in keys.chunks(BATCH_ROWS) {
            let mut sql =
                String::from("SELECT idempotency_key FROM effects WHERE idempotency_key IN ");
            let places = padded_len(chunk.len());
            push_placeholders(&mut sql, 1, places);
            let mut query = sqlx::query(&sql);
            for key in padded(chunk, places) {
                query = query.bind(*key);
            }
            for row in query
                .fetch_all(&mut *self.tx)
                .await
                .map_err(err("reading the effect log"))?
            {
                found.insert(row.get(0));
            }
        }
        Ok(found)
    }

    /// The state values `subjects` have in `mode`, as `(subject, kind, value)`.
    pub async fn states_of(
        &mut self,
        mode: &str,
        subjects: &[&str],
    ) -> Result<HashSet<(String, String, String)>> {
        let mut found = HashSet::new();
        for chunk in subjects.chunks(BATCH_ROWS) {
            let mut sql = String::from(
                "SELECT subject, kind, value FROM subject_state WHERE mode = ? AND subject IN ",
            );
            let places = padded_len(chunk.len());
            push_placeholders(&mut sql, 1, places);
            let mut query = sqlx::query(&sql).bind(mode);
            for subject in padded(chunk, places) {
                query = query.bind(*subject);
            }
            for row in query
                .fetch_all(&mut *self.tx)
                .await
                .map_err(err("reading subject state"))?
            {
                found.insert((row.get(0), row.get(1), row.get(2)));
            }
        }
        Ok(found)
    }

    /// Gives each subject its value (`since` replaced if it has it).
    pub async fn put_states(&mut self, rows: &[StateValue<'_>]) -> Result<()> {
        for chunk in statement_chunks(rows) {
            let mut sql = String::from(
                "INSERT INTO subject_state (mode, subject, kind, value, since) VALUES ",
            );
            push_placeholders(&mut sql, chunk.len(), 5);
            sql.push_str(
                " ON CONFLICT (mode, subject, kind, value) DO UPDATE SET since = excluded.since",
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = query
                    .bind(row.mode)
                    .bind(row.subject)
                    .bind(row.kind)
                    .bind(row.value)
                    .bind(row.since);
            }
            query
                .execute(&mut *self.tx)
                .await
                .map_err(err("writing subject state"))?;
        }
        Ok(())
    }

    /// Removes `value` of `kind` from `subject` in `mode`; returns whether it was there.
    pub async fn clear_state(
        &mut self,
        mode: &str,
        subject: &str,
        kind: &str,
        value: &str,
    ) -> Result<bool> {
        sqlx::query(
            "DELETE FROM subject_state WHERE mode = ? AND subject = ? AND kind = ? AND value = ?",
        )
        .bind(mode)
        .bind(subject)
        .bind(kind)
        .bind(value)
        .execute(&mut *self.tx)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(err("writing subject state"))
    }

    /// How many `verb` actions were applied on UTC day `day` (days since the epoch).
    pub async fn quota_used(&mut self, day: i64, verb: &str) -> Result<i64> {
        sqlx::query("SELECT used FROM quota_usage WHERE day = ? AND verb = ?")
            .bind(day)
            .bind(verb)
            .fetch_optional(&mut *self.tx)
            .await
            .map(|r| r.map_or(0, |r| r.get(0)))
            .map_err(err("reading quota usage"))
    }

    /// Counts `n` more `verb` actions on `day`.
    pub async fn add_quota(&mut self, day: i64, verb: &str, n: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO quota_usage (day, verb, used) VALUES (?, ?, ?) \
             ON CONFLICT (day, verb) DO UPDATE SET used = used + excluded.used",
        )
        .bind(day)
        .bind(verb)
        .bind(n)
        .execute(&mut *self.tx)
        .await
        .map(|_| ())
        .map_err(err("writing quota usage"))
    }

    /// Saves `source`'s cursor.
    pub async fn set_checkpoint(&mut self, source: &str, cursor: i64, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO checkpoints (source, cursor, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        )
        .bind(source)
        .bind(cursor)
        .bind(now)
        .execute(&mut *self.tx)
        .await
        .map(|_| ())
        .map_err(err("saving the checkpoint"))
    }

    /// Saves a snapshot under `name`, replacing the previous one. On disk the bytes go to a
    /// new file, written and synced now; the transaction records its name, length and
    /// checksum, and the file it replaces is removed once the transaction has committed. A
    /// transaction that does not commit leaves the previous snapshot in place (its unused new
    /// file is removed the next time the store is opened).
    pub async fn put_snapshot(&mut self, name: &str, data: Vec<u8>, now: i64) -> Result<()> {
        let Some(dir) = self.snapshot_dir.clone() else {
            return sqlx::query(
                "INSERT INTO snapshots (name, data, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(data)
            .bind(now)
            .execute(&mut *self.tx)
            .await
            .map(|_| ())
            .map_err(err("saving a snapshot"));
        };
        let previous = sqlx::query("SELECT file, generation FROM snapshot_files WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(err("reading a snapshot's file name"))?
            .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1)));
        let generation = previous.as_ref().map_or(1, |(_, g)| g + 1);
        let file = snapshot_file_name(name, generation);
        let (bytes, checksum) = (data.len() as i64, snapshot_checksum(&data));
        let path = dir.join(&file);
        let replaced = previous.map(|(old, _)| dir.join(old));
        tokio::task::spawn_blocking(move || write_snapshot_file(&dir, &path, &data))
            .await
            .map_err(|e| io_error("writing a snapshot file", std::io::Error::other(e)))??;
        sqlx::query(
            "INSERT INTO snapshot_files (name, file, generation, bytes, checksum, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET file = excluded.file, \
             generation = excluded.generation, bytes = excluded.bytes, \
             checksum = excluded.checksum, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(&file)
        .bind(generation)
        .bind(bytes)
        .bind(checksum)
        .bind(now)
        .execute(&mut *self.tx)
        .await
        .map_err(err("saving a snapshot's file name"))?;
        // A snapshot kept in the database by an earlier version is now stale.
        sqlx::query("DELETE FROM snapshots WHERE name = ?")
            .bind(name)
            .execute(&mut *self.tx)
            .await
            .map_err(err("removing an old snapshot"))?;
        self.superseded.extend(replaced);
        Ok(())
    }

    /// Commits everything done through this transaction.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await.map_err(err("committing"))?;
        for path in self.superseded {
            // Left behind, a file is removed the next time the store is opened.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "could not remove a replaced snapshot file");
            }
        }
        Ok(())
    }
}

/// Where snapshot files live, under the data directory.
const SNAPSHOT_DIR: &str = "snapshots";

/// A snapshot's file name: the name's safe characters (for people looking at the directory),
/// a hash of the whole name (so that names differing only in other characters stay apart) and
/// the generation.
fn snapshot_file_name(name: &str, generation: i64) -> String {
    let readable: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
    format!("{readable}.{hash:016x}.{generation}.snap")
}

/// The checksum the database keeps of a snapshot file (xxh3, as a signed SQLite integer).
fn snapshot_checksum(data: &[u8]) -> i64 {
    xxhash_rust::xxh3::xxh3_64(data) as i64
}

fn io_error(context: &str, source: std::io::Error) -> StoreError {
    StoreError {
        context: context.to_string(),
        source: sqlx::Error::Io(source),
    }
}

/// Writes `data` to `path` in `dir` and syncs the file and the directory, so that the file is
/// durable before the transaction naming it commits.
fn write_snapshot_file(dir: &Path, path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let context = |what: &str| format!("{what} snapshot file {}", path.display());
    std::fs::create_dir_all(dir).map_err(|e| io_error(&context("creating the directory of"), e))?;
    let mut file = std::fs::File::create(path).map_err(|e| io_error(&context("creating"), e))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&context("writing"), e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&context("syncing the directory of"), e))?;
    Ok(())
}

/// Reads a snapshot file and checks it against the length and checksum the database recorded.
fn read_snapshot_file(path: &Path, bytes: i64, checksum: i64) -> Result<Vec<u8>> {
    let data = std::fs::read(path)
        .map_err(|e| io_error(&format!("reading snapshot file {}", path.display()), e))?;
    if data.len() as i64 != bytes || snapshot_checksum(&data) != checksum {
        return Err(io_error(
            &format!("reading snapshot file {}", path.display()),
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the file is damaged: {} bytes with checksum {:016x}, the checkpoint recorded {bytes} bytes with checksum {:016x}",
                    data.len(),
                    snapshot_checksum(&data) as u64,
                    checksum as u64
                ),
            ),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_chunks_cover_the_items_in_few_lengths() {
        for n in 0..=3 * BATCH_ROWS + 7 {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&items).collect();
            assert_eq!(chunks.concat(), items, "n = {n}");
            for c in &chunks {
                assert!(
                    c.len() == BATCH_ROWS || (c.len().is_power_of_two() && c.len() < BATCH_ROWS),
                    "n = {n}: a chunk of {}",
                    c.len()
                );
            }
        }
    }

    #[test]
    fn padded_lists_repeat_a_value_already_there() {
        assert_eq!(padded_len(0), 0);
        assert_eq!(padded_len(1), 1);
        assert_eq!(padded_len(3), 4);
        assert_eq!(padded_len(64), 64);
        assert_eq!(padded_len(65), BATCH_ROWS);
        assert_eq!(padded_len(BATCH_ROWS), BATCH_ROWS);
        let lengths: HashSet<usize> = (1..=BATCH_ROWS).map(padded_len).collect();
        assert!(lengths.len() <= 8, "{lengths:?}");
        let list = ["a", "b", "c"];
        let places = padded_len(list.len());
        let values: Vec<&str> = padded(&list, places).copied().collect();
        assert_eq!(values, ["a", "b", "c", "c"]);
        let empty: [&str; 0] = [];
        assert_eq!(padded(&empty, 0).count(), 0);
    }

    fn effect(key: &str) -> NewEffect {
        NewEffect {
            idempotency_key: key.into(),
            event_time: 1,
            cursor: 7,
            did: "did:plc:a".into(),
            rule: "r".into(),
            ruleset_version: "v".into(),
            mode: "live".into(),
            verb: "label".into(),
            subject: "did:plc:a".into(),
            outcome: "applied".into(),
            action: "{}".into(),
        }
    }

    #[tokio::test]
    async fn effects_are_unique_by_key_and_read_back_in_order() {
        let store = Store::open_in_memory().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        assert!(tx.insert_effect(&effect("a"), 10).await.unwrap());
        assert!(tx.insert_effect(&effect("b"), 11).await.unwrap());
        assert!(!tx.insert_effect(&effect("a"), 12).await.unwrap());
        assert_eq!(
            tx.logged_keys(&["a", "c"]).await.unwrap(),
            HashSet::from(["a".to_string()])
        );
        // Past one statement's rows: every key found, every effect appended once, in order.
        let many: Vec<NewEffect> = (0..BATCH_ROWS * 2 + 5)
            .map(|i| effect(&format!("k{i}")))
            .collect();
        let refs: Vec<&NewEffect> = many.iter().collect();
        assert_eq!(
            tx.insert_effects(&refs, 13).await.unwrap(),
            many.len() as u64
        );
        assert_eq!(tx.insert_effects(&refs, 14).await.unwrap(), 0);
        let keys: Vec<&str> = many.iter().map(|e| e.idempotency_key.as_str()).collect();
        assert_eq!(tx.logged_keys(&keys).await.unwrap().len(), many.len());
        tx.commit().await.unwrap();
        let rows = store.effects_after(0, 1000).await.unwrap();
        assert_eq!(rows.len(), 2 + BATCH_ROWS * 2 + 5);
        assert_eq!(rows[0].effect, effect("a"));
        assert_eq!(rows[1].effect.idempotency_key, "b");
        assert_eq!(rows[2].effect.idempotency_key, "k0");
        assert_eq!(
            rows.last().unwrap().effect.idempotency_key,
            format!("k{}", BATCH_ROWS * 2 + 4)
        );
        assert_eq!(
            store.effects_after(rows[0].id, 1000).await.unwrap().len(),
            rows.len() - 1
        );
    }

    #[tokio::test]
    async fn a_sink_reads_only_its_applied_verbs_and_resumes_past_the_rest() {
        let store = Store::open_in_memory().await.unwrap();
        assert_eq!(
            store.applied_effects(0, 10, &["label"]).await.unwrap(),
            EffectPage {
                rows: Vec::new(),
                cursor: 0,
                full: false
            }
        );
        let with = |key: &str, verb: &str, outcome: &str| NewEffect {
            verb: verb.into(),
            outcome: outcome.into(),
            ..effect(key)
        };
        let log = [
            with("a", "flag", "applied"),
            with("b", "label", "applied"),
            with("c", "label", "shadow"),
            with("d", "takedown", "applied"),
            with("e", "report", "applied"),
            with("f", "tag", "applied"),
        ];
        let mut tx = store.begin().await.unwrap();
        let refs: Vec<&NewEffect> = log.iter().collect();
        tx.insert_effects(&refs, 1).await.unwrap();
        tx.commit().await.unwrap();
        let ids: Vec<i64> = store
            .effects_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        let keys = |page: &EffectPage| -> Vec<String> {
            page.rows
                .iter()
                .map(|r| r.effect.idempotency_key.clone())
                .collect()
        };
        // A full page resumes after its last row; the next page, not full, past everything
        // logged, though the rows after its last one are not the sink's.
        let first = store
            .applied_effects(0, 1, &["label", "takedown"])
            .await
            .unwrap();
        assert_eq!(
            (keys(&first), first.cursor, first.full),
            (vec!["b".into()], ids[1], true)
        );
        let second = store
            .applied_effects(first.cursor, 5, &["label", "takedown"])
            .await
            .unwrap();
        assert_eq!(
            (keys(&second), second.cursor, second.full),
            (vec!["d".into()], ids[5], false)
        );
        let nothing = store
            .applied_effects(second.cursor, 5, &["label"])
            .await
            .unwrap();
        assert_eq!((nothing.rows.len(), nothing.cursor), (0, ids[5]));
        // No verbs: every applied effect, shadow ones left out.
        let all = store.applied_effects(0, 10, &[]).await.unwrap();
        assert_eq!(keys(&all), ["a", "b", "d", "e", "f"]);
        assert_eq!(all.cursor, ids[5]);
    }

    #[tokio::test]
    async fn a_rolled_back_transaction_leaves_nothing() {
        let store = Store::open_in_memory().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.insert_effect(&effect("a"), 1).await.unwrap();
        tx.set_checkpoint("src", 5, 1).await.unwrap();
        drop(tx);
        assert_eq!(store.effect_count().await.unwrap(), 0);
        assert_eq!(store.checkpoint("src").await.unwrap(), None);
    }

    fn snapshot_files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(SNAPSHOT_DIR))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn snapshots_live_in_files_that_replace_each_other_and_are_checked() {
        let dir = std::env::temp_dir().join(format!("skywarden-snapshots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let name = "relay wss://bsky.network/counters";
        {
            let store = Store::open(&dir).await.unwrap();
            assert_eq!(store.snapshot(name).await.unwrap(), None);
            let mut tx = store.begin().await.unwrap();
            tx.put_snapshot(name, b"first".to_vec(), 1).await.unwrap();
            tx.set_checkpoint("relay", 10, 1).await.unwrap();
            tx.commit().await.unwrap();
            let files = snapshot_files_in(&dir);
            assert_eq!(files.len(), 1, "{files:?}");
            assert!(
                files[0].starts_with("relay_wss___bsky_network_counters."),
                "{files:?}"
            );
            assert_eq!(
                std::fs::read(dir.join(SNAPSHOT_DIR).join(&files[0])).unwrap(),
                b"first"
            );
            // Not in the database's pages.
            let (inline,): (i64,) = sqlx::query_as("SELECT count(*) FROM snapshots")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(inline, 0);

            // A replacement removes the file it replaces once committed.
            let mut tx = store.begin().await.unwrap();
            tx.put_snapshot(name, b"second".to_vec(), 2).await.unwrap();
            tx.commit().await.unwrap();
            let replaced = snapshot_files_in(&dir);
            assert_eq!(replaced.len(), 1, "{replaced:?}");
            assert_ne!(replaced, files);
            assert_eq!(
                store.snapshot(name).await.unwrap().as_deref(),
                Some(&b"second"[..])
            );

            // A transaction that does not commit leaves the last committed snapshot readable;
            // its own file is left for the next open to remove.
            let mut tx = store.begin().await.unwrap();
            tx.put_snapshot(name, b"never committed".to_vec(), 3)
                .await
                .unwrap();
            drop(tx);
            assert_eq!(snapshot_files_in(&dir).len(), 2);
            assert_eq!(
                store.snapshot(name).await.unwrap().as_deref(),
                Some(&b"second"[..])
            );
            store.close().await;
        }
        {
            let store = Store::open(&dir).await.unwrap();
            assert_eq!(
                snapshot_files_in(&dir).len(),
                1,
                "the unused file is removed at open"
            );
            assert_eq!(
                store.snapshot(name).await.unwrap().as_deref(),
                Some(&b"second"[..])
            );

            // A damaged file is an error naming the file, not a silently different state.
            let file = dir.join(SNAPSHOT_DIR).join(&snapshot_files_in(&dir)[0]);
            std::fs::write(&file, b"secund").unwrap();
            let e = store.snapshot(name).await.unwrap_err().to_string();
            assert!(
                e.contains("damaged") && e.contains(&*file.to_string_lossy()),
                "{e}"
            );
            std::fs::write(&file, b"second!").unwrap();
            let e = store.snapshot(name).await.unwrap_err().to_string();
            assert!(
                e.contains("7 bytes") && e.contains("recorded 6 bytes"),
                "{e}"
            );

            // A snapshot an earlier version kept in the database is still read, and the next
            // checkpoint moves it to a file.
            sqlx::query(
                "INSERT INTO snapshots (name, data, updated_at) VALUES ('old', x'0102', 1)",
            )
            .execute(&store.pool)
            .await
            .unwrap();
            assert_eq!(
                store.snapshot("old").await.unwrap().as_deref(),
                Some(&[1u8, 2][..])
            );
            let mut tx = store.begin().await.unwrap();
            tx.put_snapshot("old", vec![3], 4).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(
                store.snapshot("old").await.unwrap().as_deref(),
                Some(&[3u8][..])
            );
            let (inline,): (i64,) = sqlx::query_as("SELECT count(*) FROM snapshots")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(inline, 0);
            store.close().await;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn state_quota_checkpoint_snapshot_and_sink_cursor() {
        let dir = std::env::temp_dir().join(format!("skywarden-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let store = Store::open(&dir).await.unwrap();
            let mut tx = store.begin().await.unwrap();
            let spam = |since| StateValue {
                mode: "live",
                subject: "did:x",
                kind: "label",
                value: "spam",
                since,
            };
            assert!(tx.states_of("live", &["did:x"]).await.unwrap().is_empty());
            tx.put_states(&[spam(1)]).await.unwrap();
            tx.put_states(&[spam(2)]).await.unwrap();
            let has = tx.states_of("live", &["did:x", "did:y"]).await.unwrap();
            assert_eq!(
                has.into_iter().collect::<Vec<_>>(),
                [("did:x".into(), "label".into(), "spam".into())]
            );
            assert!(tx.states_of("shadow", &["did:x"]).await.unwrap().is_empty());
            tx.add_quota(3, "label", 1).await.unwrap();
            tx.add_quota(3, "label", 2).await.unwrap();
            assert_eq!(tx.quota_used(3, "label").await.unwrap(), 3);
            assert_eq!(tx.quota_used(4, "label").await.unwrap(), 0);
            tx.set_checkpoint("src", 42, 1).await.unwrap();
            tx.put_snapshot("counters", b"\x00\x01".to_vec(), 1)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            store.set_sink_cursor("webhook", 9).await.unwrap();
            store.close().await;
        }
        let store = Store::open(&dir).await.unwrap();
        assert_eq!(
            store
                .subject_values("live", "did:x", "label")
                .await
                .unwrap(),
            ["spam"]
        );
        assert_eq!(store.checkpoint("src").await.unwrap(), Some(42));
        assert_eq!(
            store.snapshot("counters").await.unwrap().as_deref(),
            Some(&b"\x00\x01"[..])
        );
        assert_eq!(store.sink_cursor("webhook").await.unwrap(), 9);
        assert_eq!(store.sink_cursor("other").await.unwrap(), 0);
        let mut tx = store.begin().await.unwrap();
        assert!(
            tx.clear_state("live", "did:x", "label", "spam")
                .await
                .unwrap()
        );
        assert!(
            !tx.clear_state("live", "did:x", "label", "spam")
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
