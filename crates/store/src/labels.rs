//! The label store: every signed label the labeler has emitted, in stream order.
//!
//! A label's `seq` is its position on `com.atproto.label.subscribeLabels`. The log is
//! append-only except for two maintenance operations: re-signing (after a key rotation, the
//! row keeps its `seq`) and compaction (rows that a later label replaced may be deleted below
//! a sequence number, after which a cursor below it is *outdated*).
//!
//! Negation replaces state: there is one *current* row per `(src, uri, cid, val)`, the latest
//! one, which may be a negation. `queryLabels` reads current, non-negated, unexpired rows,
//! ordered by `(uri, seq)` so every URI pattern is one range scan of one index.
//!
//! Two backends pass the same test suite: [`SqliteLabelStore`] (embedded default, in
//! `skywarden.db`) and [`PgLabelStore`] (Postgres). Both serialise writers so that rows
//! become visible in `seq` order: a reader that has seen `seq = n` never later finds a row
//! below `n` appear, which is what lets the stream switch from replay to live without a gap.

use crate::{Result, StoreError, err};
use sqlx::Row;
use std::future::Future;
use std::pin::Pin;

/// A boxed future returned by [`LabelStore`] methods (the trait is used as `dyn LabelStore`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// One label as stored: the fields of `com.atproto.label.defs#label`, its signature, and the
/// did:key of the key that made the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLabel {
    /// Label format version (1).
    pub ver: i64,
    /// The labeler's DID.
    pub src: String,
    /// AT-URI or DID of the subject.
    pub uri: String,
    /// Pins the label to one version of a record.
    pub cid: Option<String>,
    /// The label value.
    pub val: String,
    /// Whether this is a negation.
    pub neg: bool,
    /// Creation time (atproto datetime).
    pub cts: String,
    /// Expiry time (atproto datetime), if any.
    pub exp: Option<String>,
    /// The expiry as µs since the epoch (what views compare), if any.
    pub exp_micros: Option<i64>,
    /// The 64-byte compact signature.
    pub sig: Vec<u8>,
    /// did:key of the signing key.
    pub signing_key: String,
}

/// A label to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLabel {
    /// The label.
    pub label: StoredLabel,
    /// Appending again with the same key is a no-op (the engine's effect key, for instance).
    pub idempotency_key: Option<String>,
}

/// A label read back with its stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRow {
    /// Position in the stream (increasing; gaps where rows were compacted).
    pub seq: i64,
    /// The label.
    pub label: StoredLabel,
}

/// Which URIs a query matches: `queryLabels`' `uriPatterns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriPattern {
    /// Exactly this URI.
    Exact(String),
    /// Every URI starting with this (a pattern ending in `*`; `*` alone is every URI).
    Prefix(String),
}

impl UriPattern {
    /// Parses a `uriPatterns` entry: a trailing `*` makes a prefix; `*` elsewhere is refused.
    pub fn parse(pattern: &str) -> std::result::Result<UriPattern, String> {
        match pattern.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => Ok(UriPattern::Prefix(prefix.to_string())),
            None if !pattern.contains('*') && !pattern.is_empty() => {
                Ok(UriPattern::Exact(pattern.to_string()))
            }
            _ => Err(format!(
                "uri pattern `{pattern}`: `*` is allowed only at the end, as a prefix wildcard"
            )),
        }
    }

    /// The half-open range `[lo, hi)` of URIs the pattern covers (`hi = None`: unbounded).
    fn range(&self) -> (String, Option<String>) {
        match self {
            // `\u{1}`: Postgres text cannot hold NUL, and no URI contains control characters.
            UriPattern::Exact(uri) => (uri.clone(), Some(format!("{uri}\u{1}"))),
            UriPattern::Prefix(prefix) => (prefix.clone(), successor(prefix)),
        }
    }
}

/// The least string greater than every string starting with `prefix` (`None`: unbounded).
fn successor(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            // Only ASCII bytes were changed, so the bytes stay UTF-8.
            return Some(String::from_utf8(bytes).unwrap_or_default());
        }
        if last >= 0x80 {
            // Non-ASCII tail: fall back to a bound above any character.
            return Some(format!("{prefix}\u{10FFFF}"));
        }
    }
    None
}

/// Sorted, merged ranges for a set of patterns.
fn ranges(patterns: &[UriPattern]) -> Vec<(String, Option<String>)> {
    let mut ranges: Vec<_> = patterns.iter().map(UriPattern::range).collect();
    ranges.sort();
    let mut merged: Vec<(String, Option<String>)> = Vec::new();
    for (lo, hi) in ranges {
        if let Some(last) = merged.last_mut() {
            let overlaps = match &last.1 {
                None => true,
                Some(last_hi) => lo <= *last_hi,
            };
            if overlaps {
                last.1 = match (&last.1, hi) {
                    (None, _) | (_, None) => None,
                    (Some(a), Some(b)) => Some(if *a > b { a.clone() } else { b }),
                };
                continue;
            }
        }
        merged.push((lo, hi));
    }
    merged
}

/// A `queryLabels` request.
#[derive(Debug, Clone)]
pub struct LabelQuery {
    /// URI patterns (at least one).
    pub patterns: Vec<UriPattern>,
    /// Only labels from these labelers (empty: any).
    pub sources: Vec<String>,
    /// Continue after this position (from [`LabelPage::cursor`]).
    pub after: Option<QueryCursor>,
    /// Labels per page (1–250 in the API).
    pub limit: u32,
    /// Labels with `exp` at or before this time (µs) are left out.
    pub now_micros: i64,
}

/// Where a page of [`LabelStore::query`] ended: results are ordered by `(uri, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryCursor {
    /// URI of the last label returned.
    pub uri: String,
    /// Sequence number of the last label returned.
    pub seq: i64,
}

impl QueryCursor {
    /// The cursor as the API shows it: `seq:uri`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.seq, self.uri)
    }

    /// Parses [`QueryCursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<QueryCursor> {
        let (seq, uri) = s.split_once(':')?;
        Some(QueryCursor {
            seq: seq.parse().ok()?,
            uri: uri.to_string(),
        })
    }
}

/// One page of query results.
#[derive(Debug, Clone)]
pub struct LabelPage {
    /// The labels, ordered by `(uri, seq)`.
    pub labels: Vec<LabelRow>,
    /// Present when the page is full: pass it back for the next one.
    pub cursor: Option<QueryCursor>,
}

/// A new signature for a stored label (key rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resign {
    /// The label's sequence number.
    pub seq: i64,
    /// The new signature.
    pub sig: Vec<u8>,
    /// did:key of the key that made it.
    pub signing_key: String,
}

/// Persistence of labels. Implemented by [`SqliteLabelStore`] and [`PgLabelStore`].
pub trait LabelStore: Send + Sync + std::fmt::Debug {
    /// Appends labels in order, each in the same transaction, and returns each one's `seq`
    /// (`None` when its idempotency key was already used). Each label becomes the current
    /// one for its `(src, uri, cid, val)`.
    fn append<'a>(&'a self, labels: &'a [NewLabel]) -> StoreFuture<'a, Vec<Option<i64>>>;
    /// Up to `limit` rows with `seq > after`, in `seq` order: the stream.
    fn after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<LabelRow>>;
    /// The highest `seq` (0 when empty).
    fn head(&self) -> StoreFuture<'_, i64>;
    /// Rows at or below this `seq` may have been compacted away (0: none).
    fn compacted_through(&self) -> StoreFuture<'_, i64>;
    /// Deletes replaced (non-current) rows with `seq <= through`; returns how many.
    fn compact(&self, through: i64) -> StoreFuture<'_, u64>;
    /// Current, non-negated, unexpired labels matching the query.
    fn query<'a>(&'a self, query: &'a LabelQuery) -> StoreFuture<'a, LabelPage>;
    /// The current, non-negated labels `src` has put on `uri` with value `val`, any `cid`
    /// (what a negation of that value must replace).
    fn current<'a>(
        &'a self,
        src: &'a str,
        uri: &'a str,
        val: &'a str,
    ) -> StoreFuture<'a, Vec<LabelRow>>;
    /// Up to `limit` rows with `seq > after` not signed by `signing_key`, in `seq` order.
    fn signed_by_other<'a>(
        &'a self,
        signing_key: &'a str,
        after: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<LabelRow>>;
    /// Replaces signatures (after a key rotation); rows keep their `seq`.
    fn resign<'a>(&'a self, updates: &'a [Resign]) -> StoreFuture<'a, ()>;
}

const COLUMNS: &str = "seq, ver, src, uri, cid, val, neg, cts, exp, exp_micros, sig, signing_key";

const SQLITE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ver INTEGER NOT NULL,
    src TEXT NOT NULL,
    uri TEXT NOT NULL,
    cid TEXT NOT NULL,
    val TEXT NOT NULL,
    neg BOOLEAN NOT NULL,
    cts TEXT NOT NULL,
    exp TEXT,
    exp_micros INTEGER,
    sig BLOB NOT NULL,
    signing_key TEXT NOT NULL,
    current BOOLEAN NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS labels_current ON labels (src, uri, cid, val) WHERE current;
CREATE INDEX IF NOT EXISTS labels_view ON labels (uri, seq) WHERE current AND NOT neg;
CREATE INDEX IF NOT EXISTS labels_signing_key ON labels (signing_key, seq);
CREATE TABLE IF NOT EXISTS label_keys (
    idempotency_key TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS label_meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"#;

// `COLLATE "C"` makes `uri` compare bytewise, as in SQLite, so prefix ranges are exact.
const POSTGRES_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS labels (
    seq BIGSERIAL PRIMARY KEY,
    ver BIGINT NOT NULL,
    src TEXT NOT NULL,
    uri TEXT COLLATE "C" NOT NULL,
    cid TEXT NOT NULL,
    val TEXT NOT NULL,
    neg BOOLEAN NOT NULL,
    cts TEXT NOT NULL,
    exp TEXT,
    exp_micros BIGINT,
    sig BYTEA NOT NULL,
    signing_key TEXT NOT NULL,
    current BOOLEAN NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS labels_current ON labels (src, uri, cid, val) WHERE current;
CREATE INDEX IF NOT EXISTS labels_view ON labels (uri, seq) WHERE current AND NOT neg;
CREATE INDEX IF NOT EXISTS labels_signing_key ON labels (signing_key, seq);
CREATE TABLE IF NOT EXISTS label_keys (
    idempotency_key TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS label_meta (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
"#;

/// SQL for one query range; `$n` placeholders work in both SQLite and Postgres when they
/// appear in increasing order. `table` is `labels`, or SQLite's `labels INDEXED BY …` to pin
/// the plan to the view index (one range scan, no sort) whatever the statistics say.
fn range_sql(table: &str, has_hi: bool, has_after: bool, sources: usize) -> String {
    let mut sql = format!(
        "SELECT {COLUMNS} FROM {table} WHERE current AND NOT neg AND uri >= $1 \
         AND (exp_micros IS NULL OR exp_micros > $2)"
    );
    let mut n = 3;
    if has_hi {
        sql.push_str(&format!(" AND uri < ${n}"));
        n += 1;
    }
    if has_after {
        sql.push_str(&format!(
            " AND (uri > ${} OR (uri = ${} AND seq > ${}))",
            n,
            n + 1,
            n + 2
        ));
        n += 3;
    }
    if sources > 0 {
        let list: Vec<String> = (0..sources).map(|i| format!("${}", n + i)).collect();
        sql.push_str(&format!(" AND src IN ({})", list.join(", ")));
        n += sources;
    }
    sql.push_str(&format!(" ORDER BY uri, seq LIMIT ${n}"));
    sql
}

/// Implements [`LabelStore`] for a pool type; the two backends differ only in their schema
/// and in how writers are serialised.
macro_rules! label_store {
    ($store:ident, $db:ty, $begin:expr, $serialise:expr, $query_table:expr) => {
        impl LabelStore for $store {
            fn append<'a>(
                &'a self,
                labels: &'a [NewLabel],
            ) -> StoreFuture<'a, Vec<Option<i64>>> {
                Box::pin(async move {
                    let mut tx = match $begin {
                        Some(begin) => self.pool.begin_with(begin).await,
                        None => self.pool.begin().await,
                    }
                    .map_err(err("starting a transaction"))?;
                    if let Some(sql) = $serialise {
                        sqlx::query(sql)
                            .execute(&mut *tx)
                            .await
                            .map_err(err("serialising label writers"))?;
                    }
                    let mut out = Vec::with_capacity(labels.len());
                    for new in labels {
                        // Keys outlive compaction: they have their own table.
                        if let Some(key) = &new.idempotency_key {
                            let fresh = sqlx::query(
                                "INSERT INTO label_keys (idempotency_key) VALUES ($1) \
                                 ON CONFLICT DO NOTHING",
                            )
                            .bind(key)
                            .execute(&mut *tx)
                            .await
                            .map_err(err("recording a label key"))?
                            .rows_affected();
                            if fresh == 0 {
                                out.push(None);
                                continue;
                            }
                        }
                        let l = &new.label;
                        let cid = l.cid.clone().unwrap_or_default();
                        sqlx::query(
                            "UPDATE labels SET current = FALSE WHERE src = $1 AND uri = $2 \
                             AND cid = $3 AND val = $4 AND current",
                        )
                        .bind(&l.src)
                        .bind(&l.uri)
                        .bind(&cid)
                        .bind(&l.val)
                        .execute(&mut *tx)
                        .await
                        .map_err(err("replacing a label"))?;
                        let seq: i64 = sqlx::query(
                            "INSERT INTO labels (ver, src, uri, cid, val, neg, cts, exp, \
                             exp_micros, sig, signing_key, current) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, TRUE) \
                             RETURNING seq",
                        )
                        .bind(l.ver)
                        .bind(&l.src)
                        .bind(&l.uri)
                        .bind(&cid)
                        .bind(&l.val)
                        .bind(l.neg)
                        .bind(&l.cts)
                        .bind(&l.exp)
                        .bind(l.exp_micros)
                        .bind(&l.sig)
                        .bind(&l.signing_key)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(err("appending a label"))?
                        .get(0);
                        out.push(Some(seq));
                    }
                    tx.commit().await.map_err(err("committing labels"))?;
                    Ok(out)
                })
            }

            fn after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<LabelRow>> {
                Box::pin(async move {
                    let sql = format!("SELECT {COLUMNS} FROM labels WHERE seq > $1 ORDER BY seq LIMIT $2");
                    let rows = sqlx::query(&sql)
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(err("reading the label stream"))?;
                    Ok(rows.iter().map(label_row).collect())
                })
            }

            fn head(&self) -> StoreFuture<'_, i64> {
                Box::pin(async move {
                    sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM labels")
                        .fetch_one(&self.pool)
                        .await
                        .map(|r| r.get::<i64, _>(0))
                        .map_err(err("reading the label head"))
                })
            }

            fn compacted_through(&self) -> StoreFuture<'_, i64> {
                Box::pin(async move {
                    sqlx::query("SELECT value FROM label_meta WHERE name = 'compacted_through'")
                        .fetch_optional(&self.pool)
                        .await
                        .map(|r| r.map_or(0, |r| r.get::<i64, _>(0)))
                        .map_err(err("reading label compaction"))
                })
            }

            fn compact(&self, through: i64) -> StoreFuture<'_, u64> {
                Box::pin(async move {
                    let mut tx = match $begin {
                        Some(begin) => self.pool.begin_with(begin).await,
                        None => self.pool.begin().await,
                    }
                    .map_err(err("starting a transaction"))?;
                    let deleted = sqlx::query("DELETE FROM labels WHERE NOT current AND seq <= $1")
                        .bind(through)
                        .execute(&mut *tx)
                        .await
                        .map_err(err("compacting labels"))?
                        .rows_affected();
                    sqlx::query(
                        "INSERT INTO label_meta (name, value) VALUES ('compacted_through', $1) \
                         ON CONFLICT (name) DO UPDATE SET value = \
                         CASE WHEN excluded.value > label_meta.value THEN excluded.value ELSE label_meta.value END",
                    )
                    .bind(through)
                    .execute(&mut *tx)
                    .await
                    .map_err(err("recording label compaction"))?;
                    tx.commit().await.map_err(err("committing compaction"))?;
                    Ok(deleted)
                })
            }

            fn query<'a>(&'a self, query: &'a LabelQuery) -> StoreFuture<'a, LabelPage> {
                Box::pin(async move {
                    let limit = query.limit.max(1) as usize;
                    let mut labels = Vec::new();
                    for (lo, hi) in ranges(&query.patterns) {
                        if labels.len() >= limit {
                            break;
                        }
                        let after = query.after.as_ref();
                        if let (Some(c), Some(hi)) = (after, &hi)
                            && c.uri >= *hi
                        {
                            continue;
                        }
                        let sql = range_sql($query_table, hi.is_some(), after.is_some(), query.sources.len());
                        let mut q = sqlx::query(&sql).bind(lo).bind(query.now_micros);
                        if let Some(hi) = hi {
                            q = q.bind(hi);
                        }
                        if let Some(c) = after {
                            q = q.bind(c.uri.clone()).bind(c.uri.clone()).bind(c.seq);
                        }
                        for s in &query.sources {
                            q = q.bind(s.clone());
                        }
                        let rows = q
                            .bind((limit - labels.len()) as i64)
                            .fetch_all(&self.pool)
                            .await
                            .map_err(err("querying labels"))?;
                        labels.extend(rows.iter().map(label_row));
                    }
                    let cursor = (labels.len() >= limit).then(|| {
                        let last = &labels[labels.len() - 1];
                        QueryCursor { uri: last.label.uri.clone(), seq: last.seq }
                    });
                    Ok(LabelPage { labels, cursor })
                })
            }

            fn current<'a>(
                &'a self,
                src: &'a str,
                uri: &'a str,
                val: &'a str,
            ) -> StoreFuture<'a, Vec<LabelRow>> {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM labels WHERE src = $1 AND uri = $2 AND val = $3 \
                         AND current AND NOT neg ORDER BY seq"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(src)
                        .bind(uri)
                        .bind(val)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(err("reading current labels"))?;
                    Ok(rows.iter().map(label_row).collect())
                })
            }

            fn signed_by_other<'a>(
                &'a self,
                signing_key: &'a str,
                after: i64,
                limit: u32,
            ) -> StoreFuture<'a, Vec<LabelRow>> {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM labels WHERE seq > $1 AND signing_key <> $2 \
                         ORDER BY seq LIMIT $3"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(after)
                        .bind(signing_key)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(err("reading labels to re-sign"))?;
                    Ok(rows.iter().map(label_row).collect())
                })
            }

            fn resign<'a>(&'a self, updates: &'a [Resign]) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = match $begin {
                        Some(begin) => self.pool.begin_with(begin).await,
                        None => self.pool.begin().await,
                    }
                    .map_err(err("starting a transaction"))?;
                    for u in updates {
                        sqlx::query("UPDATE labels SET sig = $1, signing_key = $2 WHERE seq = $3")
                            .bind(&u.sig)
                            .bind(&u.signing_key)
                            .bind(u.seq)
                            .execute(&mut *tx)
                            .await
                            .map_err(err("re-signing a label"))?;
                    }
                    tx.commit().await.map_err(err("committing signatures"))
                })
            }
        }

        fn label_row(r: &<$db as sqlx::Database>::Row) -> LabelRow {
            let cid: String = r.get(4);
            LabelRow {
                seq: r.get(0),
                label: StoredLabel {
                    ver: r.get(1),
                    src: r.get(2),
                    uri: r.get(3),
                    cid: (!cid.is_empty()).then_some(cid),
                    val: r.get(5),
                    neg: r.get(6),
                    cts: r.get(7),
                    exp: r.get(8),
                    exp_micros: r.get(9),
                    sig: r.get(10),
                    signing_key: r.get(11),
                },
            }
        }
    };
}

/// Labels in SQLite (the embedded default): the `labels` table of `skywarden.db`. SQLite
/// has one writer at a time, so rows become visible in `seq` order.
#[derive(Debug, Clone)]
pub struct SqliteLabelStore {
    pool: sqlx::SqlitePool,
}

impl SqliteLabelStore {
    /// The label store in `store`'s database (created if missing), sharing its connections.
    pub async fn new(store: &crate::Store) -> Result<SqliteLabelStore> {
        Self::with_pool(store.pool.clone()).await
    }

    /// The label store in `dir`'s `skywarden.db` with connections of its own, so that
    /// subscribers and queries never wait for the engine's connections (nor the engine for
    /// theirs). Writers still take turns on the database's write lock.
    pub async fn open(dir: &std::path::Path, connections: u32) -> Result<SqliteLabelStore> {
        Self::with_pool(crate::open_pool(dir, connections).await?).await
    }

    async fn with_pool(pool: sqlx::SqlitePool) -> Result<SqliteLabelStore> {
        sqlx::raw_sql(SQLITE_SCHEMA)
            .execute(&pool)
            .await
            .map_err(err("creating the label schema"))?;
        Ok(SqliteLabelStore { pool })
    }
}

/// The view index, pinned: SQLite then refuses the query rather than scan.
const SQLITE_QUERY_TABLE: &str = "labels INDEXED BY labels_view";

mod sqlite_impl {
    use super::*;
    label_store!(
        SqliteLabelStore,
        sqlx::Sqlite,
        Some("BEGIN IMMEDIATE"),
        None::<&str>,
        SQLITE_QUERY_TABLE
    );
}

/// Labels in Postgres. Writers take a transaction-scoped advisory lock, so rows commit in
/// `seq` order even with several writers (or several skywarden processes).
#[derive(Debug, Clone)]
pub struct PgLabelStore {
    pool: sqlx::PgPool,
}

/// The advisory lock key label writers take (arbitrary, fixed: "skywlabl").
const LABEL_WRITE_LOCK: &str = "SELECT pg_advisory_xact_lock(8319665371513102956)";

impl PgLabelStore {
    /// Connects to `url` (`postgres://…`) and creates the schema if missing. With `schema`,
    /// tables live in that Postgres schema (created if missing), e.g. to keep test runs apart.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<PgLabelStore> {
        let pool = pg_pool(url, schema, 8).await?;
        sqlx::raw_sql(POSTGRES_SCHEMA)
            .execute(&pool)
            .await
            .map_err(err("creating the label schema"))?;
        Ok(PgLabelStore { pool })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A Postgres pool on `url`; with `schema`, every connection works in that Postgres schema
/// (created if missing), e.g. to keep test runs apart.
pub(crate) async fn pg_pool(
    url: &str,
    schema: Option<&str>,
    connections: u32,
) -> Result<sqlx::PgPool> {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;
    let mut options = PgConnectOptions::from_str(url).map_err(err("postgres url"))?;
    if let Some(schema) = schema {
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError {
                context: format!("postgres schema `{schema}`"),
                source: sqlx::Error::Protocol(
                    "schema names are letters, digits and underscores".into(),
                ),
            });
        }
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(err(format!("connecting to {}", redact(url))))?;
        sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&admin)
            .await
            .map_err(err("creating the schema"))?;
        admin.close().await;
        options = options.options([("search_path", schema)]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .map_err(err(format!("connecting to {}", redact(url))))?;
    Ok(pool)
}

/// `url` without its password or query (which may hold one), for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "the configured postgres url".into(),
    }
}

mod pg_impl {
    use super::*;
    label_store!(
        PgLabelStore,
        sqlx::Postgres,
        None::<&str>,
        Some(LABEL_WRITE_LOCK),
        "labels"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_ranges_merge() {
        assert_eq!(
            UriPattern::parse("at://did:plc:a/*").unwrap(),
            UriPattern::Prefix("at://did:plc:a/".into())
        );
        assert_eq!(
            UriPattern::parse("did:plc:a").unwrap(),
            UriPattern::Exact("did:plc:a".into())
        );
        assert!(UriPattern::parse("at://*/app.bsky.feed.post/*").is_err());
        assert!(UriPattern::parse("").is_err());
        assert_eq!(successor("at://a"), Some("at://b".into()));
        assert_eq!(successor(""), None);
        let merged = ranges(&[
            UriPattern::Prefix("at://did:plc:a/".into()),
            UriPattern::Exact("at://did:plc:a/app.bsky.feed.post/1".into()),
            UriPattern::Exact("did:plc:z".into()),
        ]);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert_eq!(
            ranges(&[UriPattern::Prefix(String::new())]),
            [(String::new(), None)]
        );
        assert_eq!(
            QueryCursor::decode(
                &QueryCursor {
                    uri: "at://x:y".into(),
                    seq: 7
                }
                .encode()
            ),
            Some(QueryCursor {
                uri: "at://x:y".into(),
                seq: 7
            })
        );
    }

    #[tokio::test]
    async fn sqlite_serves_every_query_shape_from_the_view_index_without_sorting() {
        let store = crate::Store::open_in_memory().await.unwrap();
        let labels = SqliteLabelStore::new(&store).await.unwrap();
        for (has_hi, has_after, sources) in [(true, false, 0), (true, true, 2), (false, true, 0)] {
            let sql = format!(
                "EXPLAIN QUERY PLAN {}",
                range_sql(SQLITE_QUERY_TABLE, has_hi, has_after, sources)
            );
            let mut q = sqlx::query(&sql).bind("at://did:plc:a/").bind(0i64);
            if has_hi {
                q = q.bind("at://did:plc:a0");
            }
            if has_after {
                q = q
                    .bind("at://did:plc:a/x")
                    .bind("at://did:plc:a/x")
                    .bind(3i64);
            }
            for _ in 0..sources {
                q = q.bind("did:plc:src");
            }
            let plan: Vec<String> = q
                .bind(10i64)
                .fetch_all(&labels.pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(3))
                .collect();
            let plan = plan.join("; ");
            assert!(plan.contains("USING INDEX labels_view"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
        }
    }
}
