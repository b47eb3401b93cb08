//! Identity resolution against a local mock PLC directory.
//!
//! The mock answers by the name after `did:plc:`: `missing*` 404, `gone*` 410, `broken*` 500,
//! `slow*` after 2 s, `delayed*` after 200 ms, `huge*` with a 10 MB (valid) document, anything
//! else with a document (handle `{name}.bsky.social`, PDS `https://pds.example.com`) and an
//! audit log whose first entry was created at 2023-04-01T12:34:56.789Z.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use skywarden_engine::identity::{IdentityConfig, IdentityResolver, Lookup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

const CREATED_AT: &str = "2023-04-01T12:34:56.789Z";
const CREATED_AT_MICROS: i64 = 1_680_352_496_789_000;

#[derive(Default)]
struct Mock {
    requests: Mutex<HashMap<String, usize>>,
}

impl Mock {
    fn requests(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.requests.lock().unwrap().values().sum()
    }
}

async fn plc(State(mock): State<Arc<Mock>>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    *mock
        .requests
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    let (did, audit) = match path.strip_suffix("/log/audit") {
        Some(did) => (did, true),
        None => (path.as_str(), false),
    };
    let did = did.trim_start_matches('/');
    let name = did.strip_prefix("did:plc:").unwrap_or_default();
    if name.starts_with("missing") {
        return StatusCode::NOT_FOUND.into_response();
    }
    if name.starts_with("gone") {
        return StatusCode::GONE.into_response();
    }
    if name.starts_with("broken") {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if name.starts_with("slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if name.starts_with("delayed") {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = if audit {
        serde_json::json!([
            {"did": did, "operation": {}, "cid": "x", "nullified": false, "createdAt": CREATED_AT},
            {"did": did, "operation": {}, "cid": "y", "nullified": false, "createdAt": "2024-01-01T00:00:00Z"},
        ])
    } else {
        let mut doc = serde_json::json!({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": did,
            "alsoKnownAs": [format!("at://{name}.bsky.social")],
            "service": [{
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.example.com"
            }]
        });
        if name.starts_with("huge") {
            doc["padding"] = "a".repeat(10 * 1024 * 1024).into();
        }
        doc
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn serve_plc() -> (Arc<Mock>, Url) {
    let mock = Arc::new(Mock::default());
    let app = Router::new().fallback(plc).with_state(mock.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (mock, Url::parse(&format!("http://{addr}")).unwrap())
}

fn config(plc_url: Url) -> IdentityConfig {
    IdentityConfig {
        plc_url,
        requests_per_second: 1000,
        max_in_flight: 64,
        request_timeout: Duration::from_secs(5),
        allow_private_addresses: true,
        ..IdentityConfig::default()
    }
}

/// Waits up to 3 s for `condition`.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_known_did_resolves_to_handle_pds_and_creation_time() {
    let (mock, url) = serve_plc().await;
    let resolver = IdentityResolver::new(config(url)).unwrap();
    assert_eq!(resolver.lookup("did:plc:alice"), Lookup::Unknown);
    let Lookup::Known(identity) = resolver.resolve_within("did:plc:alice", WAIT).await else {
        panic!("did:plc:alice did not resolve");
    };
    assert_eq!(identity.handle.as_deref(), Some("alice.bsky.social"));
    assert_eq!(identity.pds_host.as_deref(), Some("pds.example.com"));
    assert_eq!(identity.created_at, Some(CREATED_AT_MICROS));

    // Now a cache hit, without requests.
    assert_eq!(resolver.lookup("did:plc:alice"), Lookup::Known(identity));
    assert_eq!(mock.requests("/did:plc:alice"), 1);
    assert_eq!(mock.requests("/did:plc:alice/log/audit"), 1);
    let stats = resolver.stats();
    assert_eq!(stats.fetches.load(Relaxed), 1);
    assert_eq!(
        stats.misses.load(Relaxed),
        2,
        "lookup and resolve_within both missed"
    );
    assert_eq!(stats.hits.load(Relaxed), 1);
    assert_eq!(stats.fetch_errors.load(Relaxed), 0);
    assert_eq!(stats.in_flight.load(Relaxed), 0);
    assert_eq!(resolver.len(), 1);
}

#[tokio::test]
async fn an_identity_event_updates_the_cached_handle_without_fetching() {
    let (mock, url) = serve_plc().await;
    let resolver = IdentityResolver::new(config(url)).unwrap();
    assert!(matches!(
        resolver.resolve_within("did:plc:carol", WAIT).await,
        Lookup::Known(_)
    ));
    resolver.observe_handle("did:plc:carol", Some("carol.example.com"));
    let Lookup::Known(identity) = resolver.lookup("did:plc:carol") else {
        panic!("carol is cached");
    };
    assert_eq!(identity.handle.as_deref(), Some("carol.example.com"));
    assert_eq!(identity.created_at, Some(CREATED_AT_MICROS));
    resolver.observe_handle("did:plc:carol", None);
    let Lookup::Known(identity) = resolver.lookup("did:plc:carol") else {
        panic!("carol is cached");
    };
    assert_eq!(identity.handle, None);

    // Not cached: nothing happens.
    resolver.observe_handle("did:plc:dave", Some("dave.example.com"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(resolver.stats().fetches.load(Relaxed), 1);
    assert_eq!(mock.requests("/did:plc:dave"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_did_start_one_fetch() {
    let (mock, url) = serve_plc().await;
    let resolver = IdentityResolver::new(config(url)).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let answers: Vec<Lookup> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let resolver = resolver.clone();
                let barrier = barrier.clone();
                scope.spawn(move || {
                    barrier.wait();
                    (0..50)
                        .map(|_| resolver.lookup("did:plc:delayedbob"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(answers.len(), 200);
    assert!(answers.iter().all(|a| *a == Lookup::Unknown));
    assert!(matches!(
        resolver.resolve_within("did:plc:delayedbob", WAIT).await,
        Lookup::Known(_)
    ));
    assert_eq!(mock.requests("/did:plc:delayedbob"), 1);
    assert_eq!(mock.requests("/did:plc:delayedbob/log/audit"), 1);
    assert_eq!(resolver.stats().fetches.load(Relaxed), 1);
    assert_eq!(resolver.stats().rate_limited.load(Relaxed), 0);
}

#[tokio::test]
async fn not_found_is_cached_for_the_negative_ttl_and_entries_expire() {
    let (mock, url) = serve_plc().await;
    let resolver = IdentityResolver::new(IdentityConfig {
        ttl: Duration::from_millis(400),
        negative_ttl: Duration::from_millis(400),
        ..config(url)
    })
    .unwrap();

    assert_eq!(
        resolver.resolve_within("did:plc:missing1", WAIT).await,
        Lookup::NotFound
    );
    assert_eq!(
        resolver.resolve_within("did:plc:gone1", WAIT).await,
        Lookup::NotFound
    );
    assert!(matches!(
        resolver.resolve_within("did:plc:erin", WAIT).await,
        Lookup::Known(_)
    ));
    for _ in 0..10 {
        assert_eq!(resolver.lookup("did:plc:missing1"), Lookup::NotFound);
        assert_eq!(resolver.lookup("did:plc:gone1"), Lookup::NotFound);
        assert!(matches!(resolver.lookup("did:plc:erin"), Lookup::Known(_)));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.requests("/did:plc:missing1"), 1);
    assert_eq!(mock.requests("/did:plc:gone1"), 1);
    assert_eq!(mock.requests("/did:plc:erin"), 1);
    assert!(resolver.stats().negative_hits.load(Relaxed) >= 20);
    assert_eq!(resolver.stats().fetch_errors.load(Relaxed), 0);

    // After expiry, a lookup answers the stale value and refetches in the background.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(resolver.lookup("did:plc:missing1"), Lookup::NotFound);
    assert!(matches!(resolver.lookup("did:plc:erin"), Lookup::Known(_)));
    eventually("the refetches", || {
        mock.requests("/did:plc:missing1") == 2 && mock.requests("/did:plc:erin") == 2
    })
    .await;
    eventually("the refetches to finish", || {
        resolver.stats().in_flight.load(Relaxed) == 0
    })
    .await;
    assert_eq!(resolver.lookup("did:plc:missing1"), Lookup::NotFound);
    assert!(matches!(resolver.lookup("did:plc:erin"), Lookup::Known(_)));
    assert_eq!(resolver.stats().fetches.load(Relaxed), 5);

    // A server error is a counted failure, also cached for the negative TTL.
    assert_eq!(
        resolver.resolve_within("did:plc:broken1", WAIT).await,
        Lookup::NotFound
    );
    assert_eq!(resolver.lookup("did:plc:broken1"), Lookup::NotFound);
    assert_eq!(mock.requests("/did:plc:broken1"), 1);
    assert!(resolver.stats().fetch_errors.load(Relaxed) >= 1);
}

#[tokio::test]
async fn the_rate_limit_caps_requests_and_counts_refusals() {
    let (mock, url) = serve_plc().await;
    let resolver = IdentityResolver::new(IdentityConfig {
        requests_per_second: 5,
        ..config(url)
    })
    .unwrap();
    let start = Instant::now();
    let dids: Vec<String> = (0..50).map(|i| format!("did:plc:rate{i}")).collect();
    for did in &dids {
        assert_eq!(resolver.lookup(did), Lookup::Unknown);
    }
    let stats = resolver.stats();
    let started = stats.fetches.load(Relaxed);
    // Each did:plc fetch is two requests: the burst of 5 tokens pays for 2 fetches.
    assert!((1..=3).contains(&started), "{started} fetches started");
    assert_eq!(stats.rate_limited.load(Relaxed), 50 - started);

    tokio::time::sleep(Duration::from_millis(900).saturating_sub(start.elapsed())).await;
    let requests = mock.total();
    assert!(
        requests <= 6,
        "{requests} requests in the first second at 5 per second"
    );
    assert_eq!(requests as u64, 2 * started);
    let resolved = dids
        .iter()
        .filter(|did| matches!(resolver.lookup(did), Lookup::Known(_)))
        .count();
    assert_eq!(resolved as u64, started, "only the fetched DIDs resolved");

    // The bucket refills: later lookups start new fetches.
    tokio::time::sleep(Duration::from_millis(1300).saturating_sub(start.elapsed())).await;
    for did in &dids {
        resolver.lookup(did);
    }
    assert!(stats.fetches.load(Relaxed) > started);
}

#[tokio::test]
async fn resolve_within_gives_up_after_its_budget() {
    let (mock, url) = serve_plc().await;
    let resolver = IdentityResolver::new(config(url)).unwrap();
    let start = Instant::now();
    let answer = resolver
        .resolve_within("did:plc:slow1", Duration::from_millis(50))
        .await;
    let elapsed = start.elapsed();
    assert_eq!(answer, Lookup::Unknown);
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(50), "took {elapsed:?}");
    assert_eq!(resolver.stats().in_flight.load(Relaxed), 1);
    // Still in flight: lookups neither block nor start another fetch.
    assert_eq!(resolver.lookup("did:plc:slow1"), Lookup::Unknown);
    eventually("the request to arrive", || {
        mock.requests("/did:plc:slow1") == 1
    })
    .await;
    assert_eq!(resolver.stats().fetches.load(Relaxed), 1);
}

#[tokio::test]
async fn the_cache_holds_at_most_its_capacity() {
    let (mock, url) = serve_plc().await;
    let resolver = IdentityResolver::new(IdentityConfig {
        cache_capacity: 8,
        ..config(url)
    })
    .unwrap();
    for i in 0..20 {
        let did = format!("did:plc:cap{i}");
        assert!(matches!(
            resolver.resolve_within(&did, WAIT).await,
            Lookup::Known(_)
        ));
        assert!(resolver.len() <= 8, "{} cached", resolver.len());
    }
    assert_eq!(resolver.len(), 8);
    // The 8 most recently inserted are still cached; the oldest were evicted.
    for i in 12..20 {
        assert!(matches!(
            resolver.lookup(&format!("did:plc:cap{i}")),
            Lookup::Known(_)
        ));
    }
    assert_eq!(resolver.lookup("did:plc:cap0"), Lookup::Unknown);
    eventually("the evicted DID to be refetched", || {
        mock.requests("/did:plc:cap0") == 2
    })
    .await;
    assert_eq!(resolver.stats().fetches.load(Relaxed), 21);
}

#[tokio::test]
async fn unsupported_or_malformed_dids_are_not_fetched() {
    let (mock, url) = serve_plc().await;
    let resolver = IdentityResolver::new(config(url)).unwrap();
    for did in [
        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "did:plc:a/b",
        "did:plc:a?b",
        "did:plc:a#b",
        "did:plc:a b",
        "did:web:example.com:user:alice",
        "did:web:example.com%2Fpath",
        "alice.bsky.social",
        "",
    ] {
        assert_eq!(
            resolver.resolve_within(did, WAIT).await,
            Lookup::NotFound,
            "{did}"
        );
    }
    assert_eq!(resolver.stats().fetches.load(Relaxed), 0);
    assert_eq!(mock.total(), 0);
    assert!(resolver.is_empty());
}

/// A TCP listener that counts connections and closes them at once.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Relaxed);
            drop(socket);
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn did_web_on_a_private_address_is_refused_without_connecting() {
    let (_mock, url) = serve_plc().await;
    let (port, accepted) = counting_listener().await;
    let resolver = IdentityResolver::new(IdentityConfig {
        allow_private_addresses: false,
        ..config(url.clone())
    })
    .unwrap();
    for did in [
        format!("did:web:127.0.0.1%3A{port}"),
        format!("did:web:localhost%3A{port}"),
    ] {
        assert_eq!(
            resolver.resolve_within(&did, WAIT).await,
            Lookup::NotFound,
            "{did}"
        );
    }
    assert_eq!(resolver.stats().fetches.load(Relaxed), 2);
    assert_eq!(resolver.stats().fetch_errors.load(Relaxed), 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Relaxed), 0, "a refused host was connected to");

    // Control: with private addresses allowed, the same DID does reach the listener (and
    // fails there, since it does not speak TLS).
    let permissive = IdentityResolver::new(config(url)).unwrap();
    assert_eq!(
        permissive
            .resolve_within(&format!("did:web:127.0.0.1%3A{port}"), WAIT)
            .await,
        Lookup::NotFound
    );
    assert!(accepted.load(Relaxed) >= 1);
}

#[tokio::test]
async fn a_huge_body_is_refused() {
    // With a Content-Length.
    let (mock, url) = serve_plc().await;
    let resolver = IdentityResolver::new(config(url)).unwrap();
    assert_eq!(
        resolver.resolve_within("did:plc:huge1", WAIT).await,
        Lookup::NotFound
    );
    assert_eq!(mock.requests("/did:plc:huge1"), 1);
    assert_eq!(resolver.stats().fetch_errors.load(Relaxed), 1);

    // Chunked, without a length: reading stops at the limit.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                let open =
                    r#"{"id":"did:plc:stream1","alsoKnownAs":["at://s.bsky.social"],"padding":""#;
                let mut out = format!("{head}{:x}\r\n{open}\r\n", open.len()).into_bytes();
                let pad = vec![b'a'; 64 * 1024];
                for _ in 0..160 {
                    out.extend_from_slice(format!("{:x}\r\n", pad.len()).as_bytes());
                    out.extend_from_slice(&pad);
                    out.extend_from_slice(b"\r\n");
                    if socket.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                let _ = socket.write_all(b"2\r\n\"}\r\n0\r\n\r\n").await;
            });
        }
    });
    let resolver =
        IdentityResolver::new(config(Url::parse(&format!("http://{addr}")).unwrap())).unwrap();
    let start = Instant::now();
    assert_eq!(
        resolver.resolve_within("did:plc:stream1", WAIT).await,
        Lookup::NotFound
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(resolver.stats().fetch_errors.load(Relaxed) >= 1);
}
