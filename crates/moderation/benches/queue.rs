//! The moderation backend at scale, on Postgres: 1M subjects and 5M events, then
//! `emitEvent` throughput and `queryStatuses` / `queryEvents` latency (p50/p99) for the
//! common queue views, through the service's own entry point (`Moderation::call`: input
//! checks, auth, store, views; no HTTP).
//!
//!   cargo bench -p skywarden-moderation --bench queue             # load once, then measure
//!   cargo bench -p skywarden-moderation --bench queue -- --reload  # drop and reload the data
//!   cargo bench -p skywarden-moderation --bench queue -- --explain # also print query plans
//!
//! The data lives in the Postgres schema `moderation_bench` of `SKYWARDEN_BENCH_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`), kept between runs. It is loaded with
//! set-based SQL (`generate_series`): 1M subjects (2/3 accounts, 1/3 records; 10 % open, 2 %
//! escalated, 60 % closed, the rest never reviewed; 3 % taken down, 0.5 % appealed; 5 % tagged
//! `spam-wave`), and 5M events spread over them and over 90 days.

use serde_json::json;
use skywarden_moderation::auth::{KeyFuture, KeyResolver};
use skywarden_moderation::metrics::ModerationMetrics;
use skywarden_moderation::service::{Directory, Input, Moderation, ModerationConfig};
use skywarden_moderation::sets::ListSets;
use skywarden_store::moderation::{ModStore, PgModStore};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A measured view: its name, the method, the query parameters.
type View = (&'static str, &'static str, Vec<(&'static str, String)>);

const SUBJECTS: i64 = 1_000_000;
const EVENTS: i64 = 5_000_000;
const PASSWORD: &str = "bench-admin-password";

struct NoKeys;
impl KeyResolver for NoKeys {
    fn signing_key<'a>(&'a self, _: &'a str) -> KeyFuture<'a> {
        Box::pin(async { Ok(None) })
    }
}
struct NoHandles;
impl Directory for NoHandles {
    fn handle<'a>(
        &'a self,
        _: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(async { None })
    }
}

fn did(n: i64) -> String {
    format!("did:plc:bench{n:016}")
}

/// The datetime form the store keeps, from SQL: `YYYY-MM-DDTHH:MI:SS.MSZ`.
const TS: &str = r#"to_char((timestamp '2026-09-01' + (%s) * interval '1 second'), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#;

fn ts(expr: &str) -> String {
    TS.replace("%s", expr)
}

async fn load(pool: &sqlx::PgPool) {
    let started = Instant::now();
    // Subjects: g = 1..1M; every third is a record of account g-1's DID.
    let subject_key = "CASE WHEN g % 3 = 0 THEN 'at://did:plc:bench' || lpad((g - 1)::text, 16, '0') || '/app.bsky.feed.post/3k' || g::text ELSE 'did:plc:bench' || lpad(g::text, 16, '0') END";
    let did = "'did:plc:bench' || lpad((CASE WHEN g % 3 = 0 THEN g - 1 ELSE g END)::text, 16, '0')";
    let sql = format!(
        "INSERT INTO mod_subjects (subject_key, did, uri, cid, collection, review_state, takendown, appealed, \
         suspend_until, mute_until, mute_reporting_until, last_reviewed_by, last_reviewed_at, last_reported_at, \
         last_appealed_at, priority_score, comment, tags, blob_cids, queue_bucket, created_at, updated_at) \
         SELECT {subject_key}, {did}, \
           CASE WHEN g % 3 = 0 THEN {subject_key} END, \
           CASE WHEN g % 3 = 0 THEN 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm' END, \
           CASE WHEN g % 3 = 0 THEN 'app.bsky.feed.post' END, \
           CASE WHEN g % 100 < 10 THEN 'tools.ozone.moderation.defs#reviewOpen' \
                WHEN g % 100 < 12 THEN 'tools.ozone.moderation.defs#reviewEscalated' \
                WHEN g % 100 < 72 THEN 'tools.ozone.moderation.defs#reviewClosed' \
                ELSE 'tools.ozone.moderation.defs#reviewNone' END, \
           g % 100 BETWEEN 20 AND 22, g % 200 = 13, NULL, '', NULL, \
           CASE WHEN g % 100 BETWEEN 10 AND 71 THEN 'did:plc:moderator' END, \
           CASE WHEN g % 100 BETWEEN 10 AND 71 THEN {reviewed} ELSE '' END, \
           CASE WHEN g % 100 < 72 THEN {reported} ELSE '' END, \
           CASE WHEN g % 200 = 13 THEN {reported} END, \
           (g * 7919) % 101, NULL, \
           CASE WHEN g % 20 = 0 THEN '[\"spam-wave\"]' ELSE '[]' END, '[]', \
           (hashtext({did}) & 2147483647)::bigint, {created}, {reported} \
         FROM generate_series(1::bigint, {SUBJECTS}) g",
        reviewed = ts("((g * 104729) % 7776000) + 3600"),
        reported = ts("(g * 104729) % 7776000"),
        created = ts("(g * 104729) % 7776000 - 60"),
    );
    sqlx::raw_sql(&sql).execute(pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO mod_subject_tags (tag, subject_id) SELECT 'spam-wave', id FROM mod_subjects WHERE tags <> '[]'",
    )
    .execute(pool)
    .await
    .unwrap();
    eprintln!("  subjects loaded in {:.0?}", started.elapsed());
    // Events: 5 per subject on average, types in a realistic mix.
    let key = subject_key.replace('g', "s");
    let did_s = did.replace('g', "s");
    let sql = format!(
        "INSERT INTO mod_events (type, subject_key, subject_did, subject_uri, subject_cid, subject_collection, \
         subject, event, blob_cids, created_by, created_at, mod_tool, mod_tool_name, external_id, comment, report_type, terms) \
         SELECT 'tools.ozone.moderation.defs#' || t, {key}, {did_s}, \
           CASE WHEN s % 3 = 0 THEN {key} END, NULL, CASE WHEN s % 3 = 0 THEN 'app.bsky.feed.post' END, \
           '{{}}', '{{\"$type\":\"tools.ozone.moderation.defs#' || t || '\"}}', '[]', \
           CASE WHEN t = 'modEventReport' THEN 'did:plc:reporter' || (e % 5000)::text ELSE 'did:plc:moderator' END, \
           {created}, NULL, NULL, NULL, CASE WHEN e % 4 = 0 THEN 'comment ' || e::text END, \
           CASE WHEN t = 'modEventReport' THEN 'com.atproto.moderation.defs#reasonSpam' END, ' ' \
         FROM (SELECT e, ((e * 48271) % {SUBJECTS}) + 1 AS s, \
                 (ARRAY['modEventReport','modEventReport','modEventReport','modEventAcknowledge','modEventLabel','modEventTag','modEventComment','modEventEscalate','modEventTakedown','modEventReport'])[(e % 10) + 1] AS t \
               FROM generate_series(1::bigint, {EVENTS}) e) x",
        created = ts("(e * 7776) / 5 % 7776000"),
    );
    sqlx::raw_sql(&sql).execute(pool).await.unwrap();
    sqlx::raw_sql("ANALYZE mod_subjects; ANALYZE mod_events; ANALYZE mod_subject_tags;")
        .execute(pool)
        .await
        .unwrap();
    eprintln!("  events loaded in {:.0?}", started.elapsed());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` probes benches; this one needs Postgres and minutes.
    }
    let url = std::env::var("SKYWARDEN_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    if args.iter().any(|a| a == "--reload") {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql("DROP SCHEMA IF EXISTS moderation_bench CASCADE")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let store = PgModStore::connect(&url, Some("moderation_bench"))
        .await
        .unwrap();
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM mod_subjects")
        .fetch_one(store.pool())
        .await
        .unwrap();
    if have < SUBJECTS {
        eprintln!("loading {SUBJECTS} subjects and {EVENTS} events into schema moderation_bench…");
        load(store.pool()).await;
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM mod_events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let subjects: i64 = sqlx::query_scalar("SELECT count(*) FROM mod_subjects")
        .fetch_one(store.pool())
        .await
        .unwrap();
    println!("data: {subjects} subjects, {events} events (Postgres schema moderation_bench)");

    let store: Arc<dyn ModStore> = Arc::new(store);
    let service = Arc::new(Moderation::new(
        store.clone(),
        Arc::new(NoKeys),
        Arc::new(NoHandles),
        None,
        ListSets::new(None, Arc::new(|| {})),
        ModerationConfig {
            service_did: "did:plc:benchservice".into(),
            admin_password: Some(PASSWORD.into()),
            reports_per_minute: 1_000_000,
            pds_url: None,
            appview_url: None,
        },
        Arc::new(ModerationMetrics::default()),
        Arc::new(tokio::sync::Notify::new()),
    ));
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("admin:{PASSWORD}")
        )
    );

    // emitEvent: reports, acknowledgements and tags on existing subjects.
    for concurrency in [1usize, 8] {
        let n = 3000usize;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let service = service.clone();
            let auth = auth.clone();
            tasks.push(tokio::spawn(async move {
                for i in (worker..n).step_by(concurrency) {
                    let s = (i as i64 * 2_654_435_761) % SUBJECTS + 1;
                    let subject = if s % 3 == 0 {
                        json!({"$type": "com.atproto.repo.strongRef", "uri": format!("at://{}/app.bsky.feed.post/3k{s}", did(s - 1)), "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"})
                    } else {
                        json!({"$type": "com.atproto.admin.defs#repoRef", "did": did(s)})
                    };
                    let event = match i % 3 {
                        0 => json!({"$type": "tools.ozone.moderation.defs#modEventReport", "reportType": "com.atproto.moderation.defs#reasonSpam", "comment": "bench"}),
                        1 => json!({"$type": "tools.ozone.moderation.defs#modEventAcknowledge", "comment": "ok"}),
                        _ => json!({"$type": "tools.ozone.moderation.defs#modEventTag", "add": ["bench"], "remove": []}),
                    };
                    let body = json!({"event": event, "subject": subject, "createdBy": "did:plc:benchservice"});
                    service
                        .call("tools.ozone.moderation.emitEvent", Some(&auth), Input::Body(body))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "emitEvent, {concurrency} concurrent caller(s): {n} events in {secs:.2} s = {:.0} events/s",
            n as f64 / secs
        );
    }

    // Queue views, as the Ozone UI asks for them.
    // A cursor 20 pages into the open queue.
    let deep_cursor = {
        let mut c: Option<String> = None;
        for _ in 0..20 {
            let mut q = vec![(
                "reviewState".to_string(),
                "tools.ozone.moderation.defs#reviewOpen".to_string(),
            )];
            if let Some(c) = &c {
                q.push(("cursor".to_string(), c.clone()));
            }
            let out = service
                .call(
                    "tools.ozone.moderation.queryStatuses",
                    Some(&auth),
                    Input::Query(q),
                )
                .await
                .unwrap();
            c = out["cursor"].as_str().map(str::to_string);
        }
        c.unwrap_or_default()
    };
    let open = ("reviewState", "tools.ozone.moderation.defs#reviewOpen");
    let views: Vec<View> = vec![
        (
            "open queue (reviewOpen, lastReportedAt desc)",
            "queryStatuses",
            vec![(open.0, open.1.into())],
        ),
        (
            "escalated queue",
            "queryStatuses",
            vec![(
                "reviewState",
                "tools.ozone.moderation.defs#reviewEscalated".into(),
            )],
        ),
        (
            "appealed",
            "queryStatuses",
            vec![("appealed", "true".into())],
        ),
        (
            "taken down, lastReviewedAt desc",
            "queryStatuses",
            vec![
                ("takendown", "true".into()),
                ("sortField", "lastReviewedAt".into()),
            ],
        ),
        (
            "open, tag spam-wave",
            "queryStatuses",
            vec![(open.0, open.1.into()), ("tags", "spam-wave".into())],
        ),
        (
            "open, page 21 (cursor)",
            "queryStatuses",
            vec![(open.0, open.1.into()), ("cursor", deep_cursor.clone())],
        ),
        (
            "open, queue 2 of 4",
            "queryStatuses",
            vec![
                (open.0, open.1.into()),
                ("queueCount", "4".into()),
                ("queueIndex", "1".into()),
            ],
        ),
        (
            "open, priorityScore desc",
            "queryStatuses",
            vec![
                (open.0, open.1.into()),
                ("sortField", "priorityScore".into()),
            ],
        ),
        ("all subjects, lastReportedAt desc", "queryStatuses", vec![]),
        (
            "one subject",
            "queryStatuses",
            vec![("subject", did(48_272))],
        ),
        (
            "an account and its records",
            "queryStatuses",
            vec![
                ("subject", did(48_272)),
                ("includeAllUserRecords", "true".into()),
            ],
        ),
        (
            "events of a subject",
            "queryEvents",
            vec![("subject", did(48_272))],
        ),
        ("latest events", "queryEvents", vec![]),
        (
            "latest reports",
            "queryEvents",
            vec![("types", "tools.ozone.moderation.defs#modEventReport".into())],
        ),
    ];
    println!(
        "{:<44} {:>9} {:>9} {:>6}",
        "view (limit 50)", "p50", "p99", "rows"
    );
    for (name, method, params) in &views {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let method = format!("tools.ozone.moderation.{method}");
        let mut times = Vec::new();
        let mut rows = 0;
        for i in 0..220 {
            let started = Instant::now();
            let out = service
                .call(&method, Some(&auth), Input::Query(params.clone()))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if i >= 20 {
                times.push(started.elapsed());
            }
            rows = out["subjectStatuses"]
                .as_array()
                .or(out["events"].as_array())
                .map_or(0, Vec::len);
        }
        times.sort();
        println!(
            "{name:<44} {:>7.2}ms {:>7.2}ms {rows:>6}",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }
    if args.iter().any(|a| a == "--explain") {
        explain(&url).await;
    }
}

async fn explain(url: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("SET search_path = moderation_bench")
        .execute(&mut conn)
        .await
        .unwrap();
    for sql in [
        "SELECT id FROM mod_subjects WHERE review_state = 'tools.ozone.moderation.defs#reviewOpen' AND mute_until <= '2026-12-01' ORDER BY last_reported_at DESC, id DESC LIMIT 50",
        "SELECT id FROM mod_subjects WHERE appealed AND mute_until <= '2026-12-01' ORDER BY last_reported_at DESC, id DESC LIMIT 50",
        "SELECT id FROM mod_subjects WHERE review_state = 'tools.ozone.moderation.defs#reviewOpen' AND EXISTS (SELECT 1 FROM mod_subject_tags t WHERE t.tag = 'spam-wave' AND t.subject_id = mod_subjects.id) ORDER BY last_reported_at DESC, id DESC LIMIT 50",
    ] {
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN ANALYZE {sql}"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        println!("\n{sql}\n{}", plan.join("\n"));
    }
}
