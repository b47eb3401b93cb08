//! Asynchronous identity resolution for event authors: handle, PDS host and account creation
//! time, answered from a bounded in-memory cache so that the evaluation hot path never waits on
//! the network longer than it chooses to.
//!
//! [`IdentityResolver::lookup`] is synchronous and never blocks: a cache hit answers at once; a
//! miss (or an expired entry) starts at most one background fetch for that DID and answers
//! [`Lookup::Unknown`] (or the stale value while it is refreshed). A later lookup sees the
//! result. [`IdentityResolver::resolve_within`] additionally waits for an in-flight fetch, up to
//! a budget the caller picks.
//!
//! # Resolution
//!
//! * `did:plc:*`: `GET {plc_url}/{did}` (the DID document) and `GET {plc_url}/{did}/log/audit`
//!   (the operation log, whose first entry's `createdAt` is the account's creation time), run
//!   concurrently.
//! * `did:web:{host}` (hostname-level only, as in atproto; `%3A` may encode a port):
//!   `GET https://{host}/.well-known/did.json`. The creation time is unknown. Unless
//!   [`IdentityConfig::allow_private_addresses`] is set, a host that is, or resolves to, a
//!   loopback, private, link-local, unspecified, multicast or unique-local address is refused
//!   before any connection is made (the check runs in the HTTP client's DNS resolver, so the
//!   address connected to is the address checked), and no proxy is used.
//! * Any other method, and any string that is not a syntactically valid DID, is
//!   [`Lookup::NotFound`] at once, without a fetch and without a cache entry.
//!
//! The handle is the first `alsoKnownAs` entry starting with `at://`, as the DID document
//! claims it (normalised to lowercase; not verified against the handle's own DNS or HTTPS
//! record). The PDS host is the host name of the `serviceEndpoint` of the service whose id is
//! (or ends in) `#atproto_pds`. Redirects are not followed, and response bodies are read chunk
//! by chunk and refused beyond 64 KiB (only the first entry of an audit log is needed, so a
//! longer audit log is read up to 64 KiB and its first entry parsed from that prefix).
//!
//! # Caching
//!
//! Entries, positive and negative, live in a cache of at most
//! [`IdentityConfig::cache_capacity`] DIDs. When full, the *oldest-inserted* entry is evicted
//! (FIFO; refreshing an entry does not move it). Caches of 2048 entries or more are split into
//! up to 16 shards by DID hash, each with its share of the capacity and its own FIFO, so that
//! partitions on different cores rarely contend; the total never exceeds the capacity.
//!
//! * A resolved identity is fresh for [`IdentityConfig::ttl`].
//! * 404 or 410 from the PLC directory or the did:web host is cached as not found for
//!   [`IdentityConfig::negative_ttl`].
//! * Any other failure (timeout, connection error, 5xx, oversized or malformed body, refused
//!   address) is counted in [`IdentityStats::fetch_errors`], logged at debug level (DID and
//!   reason only; URLs are not logged) and also cached for `negative_ttl`: as not found, or,
//!   when a previously resolved identity was being refreshed, as that identity (stale data
//!   beats none during an outage of the directory).
//! * If the DID document resolves but the audit log does not, the identity is cached without a
//!   creation time for `negative_ttl` only, so the creation time is retried soon.
//!
//! # Throttling
//!
//! Fetches are throttled twice, and a throttled lookup starts no fetch (it answers as a miss
//! would and counts in [`IdentityStats::rate_limited`]; a later lookup tries again):
//!
//! * a token bucket of [`IdentityConfig::requests_per_second`] tokens per second, holding at
//!   most that many (at least 2). Each HTTP request costs one token, taken when the fetch starts:
//!   a did:plc fetch makes two requests (document and audit log) and costs 2, a did:web fetch 1;
//! * at most [`IdentityConfig::max_in_flight`] fetches at once.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use skywarden_atproto::syntax::{Datetime, Handle, validate_did};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use url::Url;

use crate::webhook::describe_http_error;

/// Response bodies larger than this are refused (audit logs are read up to it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Caches at least this large are sharded (one shard per this many entries, up to
/// [`MAX_SHARDS`]).
const ENTRIES_PER_SHARD: usize = 1024;
/// The most shards a cache is split into.
const MAX_SHARDS: usize = 16;
/// Time-to-live values are clamped to this so that expiry instants cannot overflow.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How identities are resolved, cached and throttled.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The PLC directory, e.g. `https://plc.directory`.
    pub plc_url: Url,
    /// The most DIDs cached, resolved and not found alike; when full the oldest-inserted entry
    /// is evicted.
    pub cache_capacity: usize,
    /// How long a resolved identity is served before it is re-resolved (the stale value is
    /// still served while the refresh is in flight).
    pub ttl: Duration,
    /// How long a not-found or failed resolution is remembered before it is retried.
    pub negative_ttl: Duration,
    /// The rate of HTTP requests across all fetches (token bucket; bursts up to this many, at
    /// least 2). Over the limit, a lookup does not start a fetch.
    pub requests_per_second: u32,
    /// The most fetches in flight at once.
    pub max_in_flight: usize,
    /// The timeout of each HTTP request, connection and body included.
    pub request_timeout: Duration,
    /// Allow did:web hosts that are or resolve to loopback, private, link-local, unspecified,
    /// multicast or unique-local addresses. Off by default: such hosts are refused (SSRF).
    pub allow_private_addresses: bool,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            plc_url: Url::parse("https://plc.directory").expect("a valid constant URL"),
            cache_capacity: 100_000,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
            requests_per_second: 50,
            max_in_flight: 16,
            request_timeout: Duration::from_secs(5),
            allow_private_addresses: false,
        }
    }
}

/// Why an [`IdentityResolver`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A setting of [`IdentityConfig`] is unusable.
    #[error("identity resolver configuration: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("identity resolver: could not create the HTTP client: {0}")]
    Client(String),
    /// [`IdentityResolver::new`] was called outside a tokio runtime.
    #[error(
        "identity resolver: must be created inside a tokio runtime (it spawns its fetches there)"
    )]
    NoRuntime,
}

/// What is known about an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The handle the DID document claims (lowercase), if any and syntactically valid.
    pub handle: Option<String>,
    /// The host name of the account's PDS, if the document names one.
    pub pds_host: Option<String>,
    /// When the account was created, in microseconds since the Unix epoch (did:plc only).
    pub created_at: Option<i64>,
    /// The account's atproto signing key (`did:key:…`, from the `#atproto` verification
    /// method), which verifies its commits and its service-auth tokens.
    pub signing_key: Option<String>,
}

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The identity (possibly stale while it is being refreshed).
    Known(Arc<Identity>),
    /// The DID does not resolve: not found, unsupported method, invalid DID, or a recent fetch
    /// failed (retried after the negative TTL).
    NotFound,
    /// Not resolved yet: a fetch was started or is in flight, or was throttled.
    Unknown,
}

/// Counters of the resolver, read with relaxed loads (exported as metrics).
#[derive(Debug, Default)]
pub struct IdentityStats {
    /// Lookups answered with a cached identity (fresh or stale).
    pub hits: AtomicU64,
    /// Lookups of DIDs not in the cache.
    pub misses: AtomicU64,
    /// Lookups answered with a cached not-found (fresh or stale).
    pub negative_hits: AtomicU64,
    /// Fetches started.
    pub fetches: AtomicU64,
    /// Fetches (or the audit-log half of a did:plc fetch) that failed other than by not found.
    pub fetch_errors: AtomicU64,
    /// Fetches not started because of the request rate limit or the in-flight cap.
    pub rate_limited: AtomicU64,
    /// Fetches in flight now (a gauge).
    pub in_flight: AtomicU64,
}

/// Resolves DIDs to [`Identity`] in the background, with caches; cheap to clone (shared).
#[derive(Clone)]
pub struct IdentityResolver {
    inner: Arc<Inner>,
}

impl fmt::Debug for IdentityResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityResolver")
            .field("config", &self.inner.config)
            .field("cached", &self.len())
            .field("stats", &self.inner.stats)
            .finish()
    }
}

struct Inner {
    config: IdentityConfig,
    /// `plc_url` without a trailing slash.
    plc_base: String,
    plc_client: reqwest::Client,
    web_client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    permits: Arc<Semaphore>,
    bucket: Mutex<TokenBucket>,
    stats: IdentityStats,
}

/// One shard of the cache, with the fetches in flight for its DIDs.
struct Shard {
    entries: HashMap<Arc<str>, Entry>,
    /// Keys of `entries` in insertion order (always the same set as `entries`).
    order: VecDeque<Arc<str>>,
    capacity: usize,
    /// Each in-flight fetch's completion signal (becomes `true`, or the sender is dropped).
    in_flight: HashMap<Arc<str>, watch::Receiver<bool>>,
}

struct Entry {
    value: Cached,
    expires: Instant,
}

#[derive(Clone)]
enum Cached {
    Found(Arc<Identity>),
    NotFound,
}

impl From<Cached> for Lookup {
    fn from(c: Cached) -> Lookup {
        match c {
            Cached::Found(identity) => Lookup::Known(identity),
            Cached::NotFound => Lookup::NotFound,
        }
    }
}

/// What a fetch found.
enum Outcome {
    /// Resolved; `complete` is false when part of it (the creation time) failed.
    Found { identity: Identity, complete: bool },
    /// 404 or 410.
    NotFound,
    /// Anything else; already counted and logged.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Plc,
    Web,
}

impl Method {
    /// The method of a DID this resolver can fetch, or `None` (invalid or unsupported).
    fn of(did: &str) -> Option<Method> {
        // Validated without allocating: this runs for every lookup.
        validate_did(did).ok()?;
        let (method, id) = did.strip_prefix("did:")?.split_once(':')?;
        match method {
            "plc" => Some(Method::Plc),
            "web" => web_authority(id).map(|_| Method::Web),
            _ => None,
        }
    }

    /// Rate-limit tokens one fetch takes (one per HTTP request).
    fn cost(self) -> f64 {
        match self {
            Method::Plc => 2.0,
            Method::Web => 1.0,
        }
    }
}

struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    fn take(&mut self, n: f64) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Locks a mutex, recovering the data if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl IdentityResolver {
    /// A resolver with an empty cache. Must be called inside a tokio runtime: fetches are
    /// spawned onto it (lookups themselves may then come from any thread).
    pub fn new(config: IdentityConfig) -> Result<Self, IdentityError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| IdentityError::NoRuntime)?;
        if !matches!(config.plc_url.scheme(), "http" | "https") || !config.plc_url.has_host() {
            return Err(IdentityError::Config(format!(
                "plc_url must be an http or https URL with a host, got scheme {:?}",
                config.plc_url.scheme()
            )));
        }
        if config.cache_capacity == 0 {
            return Err(IdentityError::Config(
                "cache_capacity must be at least 1".into(),
            ));
        }
        if config.requests_per_second == 0 {
            return Err(IdentityError::Config(
                "requests_per_second must be at least 1".into(),
            ));
        }
        if config.max_in_flight == 0 || config.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(IdentityError::Config(format!(
                "max_in_flight must be between 1 and {}, got {}",
                Semaphore::MAX_PERMITS,
                config.max_in_flight
            )));
        }
        if config.request_timeout.is_zero() {
            return Err(IdentityError::Config(
                "request_timeout must be positive".into(),
            ));
        }

        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(config.request_timeout)
                .connect_timeout(config.request_timeout)
                .user_agent(concat!("skywarden/", env!("CARGO_PKG_VERSION")))
        };
        let client_error = |e: reqwest::Error| IdentityError::Client(describe_http_error(&e));
        let plc_client = builder().build().map_err(client_error)?;
        let web_client = if config.allow_private_addresses {
            builder().build()
        } else {
            builder()
                .no_proxy()
                .dns_resolver(Arc::new(PublicOnlyResolver))
                .build()
        }
        .map_err(client_error)?;

        let shard_count = (config.cache_capacity / ENTRIES_PER_SHARD).clamp(1, MAX_SHARDS);
        let shards = (0..shard_count)
            .map(|i| {
                let capacity = config.cache_capacity / shard_count
                    + usize::from(i < config.cache_capacity % shard_count);
                Mutex::new(Shard {
                    entries: HashMap::new(),
                    order: VecDeque::new(),
                    capacity,
                    in_flight: HashMap::new(),
                })
            })
            .collect();
        let burst = f64::from(config.requests_per_second.max(2));
        let bucket = TokenBucket {
            tokens: burst,
            capacity: burst,
            per_second: f64::from(config.requests_per_second),
            last: Instant::now(),
        };
        let plc_base = config.plc_url.as_str().trim_end_matches('/').to_owned();
        Ok(IdentityResolver {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(config.max_in_flight)),
                config,
                plc_base,
                plc_client,
                web_client,
                runtime,
                shards,
                hasher: RandomState::new(),
                bucket: Mutex::new(bucket),
                stats: IdentityStats::default(),
            }),
        })
    }

    /// Answers from the cache without blocking. On a miss or an expired entry, starts one
    /// background fetch for `did` (unless one is in flight or throttling refuses it) and
    /// answers [`Lookup::Unknown`] on a miss, the stale value otherwise.
    pub fn lookup(&self, did: &str) -> Lookup {
        let Some(method) = Method::of(did) else {
            return Lookup::NotFound;
        };
        let inner = &self.inner;
        let stats = &inner.stats;
        let (cached, fetch) = {
            let mut shard = lock(inner.shard(did));
            let cached = shard
                .entries
                .get(did)
                .map(|e| (e.value.clone(), e.expires > Instant::now()));
            match &cached {
                Some((Cached::Found(_), _)) => stats.hits.fetch_add(1, Relaxed),
                Some((Cached::NotFound, _)) => stats.negative_hits.fetch_add(1, Relaxed),
                None => stats.misses.fetch_add(1, Relaxed),
            };
            if let Some((value, true)) = cached {
                return value.into();
            }
            let fetch = if shard.in_flight.contains_key(did) {
                None
            } else {
                self.prepare_fetch(&mut shard, did, method)
            };
            (cached, fetch)
        };
        // Spawned with the shard unlocked: a task refused by a shutting-down runtime is dropped
        // at once, and its guard locks the shard.
        if let Some(guard) = fetch {
            inner.runtime.spawn(async move {
                let mut guard = guard;
                let outcome = fetch_identity(&guard.inner, &guard.did, method).await;
                guard.outcome = Some(outcome);
            });
        }
        cached.map_or(Lookup::Unknown, |(value, _)| value.into())
    }

    /// [`lookup`](Self::lookup), and if that leaves a fetch for `did` in flight, waits for it at
    /// most `budget`; then answers from the cache.
    pub async fn resolve_within(&self, did: &str, budget: Duration) -> Lookup {
        let first = self.lookup(did);
        if first != Lookup::Unknown {
            return first;
        }
        let pending = lock(self.inner.shard(did)).in_flight.get(did).cloned();
        if let Some(mut done) = pending {
            // An error means the fetch ended without signalling (cancelled): answer from cache.
            let _ = tokio::time::timeout(budget, done.wait_for(|finished| *finished)).await;
        }
        self.peek(did)
    }

    /// Records the handle an `#identity` event announced for `did`, if `did` is cached as
    /// resolved (`None` clears it). Starts no fetch.
    pub fn observe_handle(&self, did: &str, handle: Option<&str>) {
        let mut shard = lock(self.inner.shard(did));
        if let Some(Entry {
            value: Cached::Found(identity),
            ..
        }) = shard.entries.get_mut(did)
            && identity.handle.as_deref() != handle
        {
            *identity = Arc::new(Identity {
                handle: handle.map(str::to_owned),
                ..Identity::clone(identity)
            });
        }
    }

    /// The resolver's counters.
    pub fn stats(&self) -> &IdentityStats {
        &self.inner.stats
    }

    /// How many DIDs are cached now (resolved and not found alike).
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| lock(s).entries.len())
            .sum()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached answer for `did`, expired or not, without counting or fetching.
    fn peek(&self, did: &str) -> Lookup {
        lock(self.inner.shard(did))
            .entries
            .get(did)
            .map_or(Lookup::Unknown, |e| e.value.clone().into())
    }

    /// Registers a fetch of `did` as in flight, if the in-flight cap and the rate limit allow;
    /// the caller spawns it.
    fn prepare_fetch(&self, shard: &mut Shard, did: &str, method: Method) -> Option<FetchGuard> {
        let inner = &self.inner;
        let Ok(permit) = inner.permits.clone().try_acquire_owned() else {
            inner.stats.rate_limited.fetch_add(1, Relaxed);
            return None;
        };
        if !lock(&inner.bucket).take(method.cost()) {
            inner.stats.rate_limited.fetch_add(1, Relaxed);
            return None;
        }
        let did: Arc<str> = Arc::from(did);
        let (done, pending) = watch::channel(false);
        shard.in_flight.insert(did.clone(), pending);
        inner.stats.fetches.fetch_add(1, Relaxed);
        inner.stats.in_flight.fetch_add(1, Relaxed);
        Some(FetchGuard {
            inner: self.inner.clone(),
            did,
            done,
            outcome: None,
            _permit: permit,
        })
    }
}

impl Inner {
    fn shard(&self, did: &str) -> &Mutex<Shard> {
        let i = (self.hasher.hash_one(did) % self.shards.len() as u64) as usize;
        &self.shards[i]
    }
}

/// An in-flight fetch. Dropping it (normally after `outcome` is set; on cancellation or a
/// panic without one) stores the outcome, ends the in-flight state and wakes waiters.
struct FetchGuard {
    inner: Arc<Inner>,
    did: Arc<str>,
    done: watch::Sender<bool>,
    outcome: Option<Outcome>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        {
            let mut shard = lock(self.inner.shard(&self.did));
            if let Some(outcome) = self.outcome.take() {
                shard.store(&self.did, outcome, &self.inner.config);
            }
            shard.in_flight.remove(&*self.did);
        }
        self.inner.stats.in_flight.fetch_sub(1, Relaxed);
        self.done.send_replace(true);
    }
}

impl Shard {
    fn store(&mut self, did: &Arc<str>, outcome: Outcome, config: &IdentityConfig) {
        let (value, ttl) = match outcome {
            Outcome::Found { identity, complete } => (
                Cached::Found(Arc::new(identity)),
                if complete {
                    config.ttl
                } else {
                    config.negative_ttl
                },
            ),
            Outcome::NotFound => (Cached::NotFound, config.negative_ttl),
            Outcome::Failed => match self.entries.get(did) {
                Some(Entry {
                    value: Cached::Found(old),
                    ..
                }) => (Cached::Found(old.clone()), config.negative_ttl),
                _ => (Cached::NotFound, config.negative_ttl),
            },
        };
        let expires = Instant::now() + ttl.min(MAX_TTL);
        if let Some(entry) = self.entries.get_mut(did) {
            *entry = Entry { value, expires };
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.entries.insert(did.clone(), Entry { value, expires });
        self.order.push_back(did.clone());
    }
}

/// Why one HTTP fetch failed.
enum FetchError {
    /// 404 or 410.
    NotFound,
    Status(u16),
    TooLarge,
    Http(reqwest::Error),
    Invalid(String),
    Refused(IpAddr),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::NotFound => f.write_str("not found"),
            FetchError::Status(s) => write!(f, "HTTP status {s}"),
            FetchError::TooLarge => write!(f, "response body larger than {MAX_BODY_BYTES} bytes"),
            FetchError::Http(e) if e.is_timeout() => f.write_str("timed out"),
            FetchError::Http(e) => f.write_str(&describe_http_error(e)),
            FetchError::Invalid(reason) => write!(f, "invalid response: {reason}"),
            FetchError::Refused(ip) => write!(
                f,
                "refused: the host is a non-public address ({ip}) and private addresses are not allowed"
            ),
        }
    }
}

/// Resolves `did` (already validated as `method`); counts and logs failures.
async fn fetch_identity(inner: &Inner, did: &str, method: Method) -> Outcome {
    let failed = |what: &str, e: &FetchError| {
        inner.stats.fetch_errors.fetch_add(1, Relaxed);
        tracing::debug!(did, error = %e, "identity resolution: {what} failed");
    };
    match method {
        Method::Plc => {
            let doc_url = format!("{}/{did}", inner.plc_base);
            let audit_url = format!("{doc_url}/log/audit");
            let (doc, audit) = tokio::join!(
                get_json(&inner.plc_client, &doc_url, false),
                get_json(&inner.plc_client, &audit_url, true)
            );
            let mut identity = match doc.and_then(|body| parse_document(&body, did)) {
                Ok(identity) => identity,
                Err(FetchError::NotFound) => return Outcome::NotFound,
                Err(e) => {
                    failed("fetching the DID document from the PLC directory", &e);
                    return Outcome::Failed;
                }
            };
            match audit.and_then(|body| parse_created_at(&body)) {
                Ok(created_at) => {
                    identity.created_at = Some(created_at);
                    Outcome::Found {
                        identity,
                        complete: true,
                    }
                }
                Err(e) => {
                    failed("fetching the audit log from the PLC directory", &e);
                    Outcome::Found {
                        identity,
                        complete: false,
                    }
                }
            }
        }
        Method::Web => {
            let result = async {
                let id = did.strip_prefix("did:web:").unwrap_or_default();
                let (host, port) =
                    web_authority(id).ok_or_else(|| FetchError::Invalid("bad did:web".into()))?;
                if !inner.config.allow_private_addresses
                    && let Ok(ip) = host.parse::<IpAddr>()
                    && !is_public(ip)
                {
                    return Err(FetchError::Refused(ip));
                }
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let url = format!("https://{host}{port}/.well-known/did.json");
                let body = get_json(&inner.web_client, &url, false).await?;
                parse_document(&body, did)
            }
            .await;
            match result {
                Ok(identity) => Outcome::Found {
                    identity,
                    complete: true,
                },
                Err(FetchError::NotFound) => Outcome::NotFound,
                Err(e) => {
                    failed("fetching the did:web document", &e);
                    Outcome::Failed
                }
            }
        }
    }
}

/// GETs `url` and reads at most [`MAX_BODY_BYTES`] of its body: a longer body is an error, or,
/// with `prefix_ok`, cut at the limit.
async fn get_json(
    client: &reqwest::Client,
    url: &str,
    prefix_ok: bool,
) -> Result<Vec<u8>, FetchError> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(FetchError::Http)?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Err(FetchError::NotFound);
    }
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    if !prefix_ok
        && response
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(FetchError::Http)? {
        let room = MAX_BODY_BYTES.saturating_sub(body.len());
        if chunk.len() > room {
            if prefix_ok {
                body.extend_from_slice(&chunk[..room]);
                break;
            }
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct DidDocument {
    id: String,
    #[serde(default, rename = "alsoKnownAs")]
    also_known_as: Vec<serde_json::Value>,
    #[serde(default)]
    service: Vec<serde_json::Value>,
    #[serde(default, rename = "verificationMethod")]
    verification_method: Vec<serde_json::Value>,
}

/// Handle and PDS host from a DID document, which must be `did`'s.
fn parse_document(body: &[u8], did: &str) -> Result<Identity, FetchError> {
    let doc: DidDocument = serde_json::from_slice(body)
        .map_err(|e| FetchError::Invalid(format!("DID document: {e}")))?;
    if doc.id != did {
        return Err(FetchError::Invalid(format!(
            "the DID document is for {:?}, not the DID requested",
            doc.id
        )));
    }
    let handle = doc
        .also_known_as
        .iter()
        .filter_map(serde_json::Value::as_str)
        .find_map(|aka| aka.strip_prefix("at://"))
        .and_then(|h| Handle::new(h).ok())
        .map(|h| h.normalized().into_string());
    let pds_host = doc
        .service
        .iter()
        .find(|s| {
            s["id"]
                .as_str()
                .is_some_and(|id| id.ends_with("#atproto_pds"))
        })
        .and_then(|s| s["serviceEndpoint"].as_str())
        .and_then(|endpoint| Url::parse(endpoint).ok())
        .and_then(|u| u.host_str().map(str::to_owned));
    let signing_key = doc
        .verification_method
        .iter()
        .find(|m| m["id"].as_str().is_some_and(|id| id.ends_with("#atproto")))
        .and_then(|m| {
            let kind = m["type"].as_str().unwrap_or("Multikey");
            let multibase = m["publicKeyMultibase"].as_str()?;
            skywarden_atproto::crypto::PublicKey::from_verification_method(kind, multibase).ok()
        })
        .map(|k| k.to_did_key());
    Ok(Identity {
        handle,
        pds_host,
        created_at: None,
        signing_key,
    })
}

/// The `createdAt` of the first entry of a PLC audit log, in µs; `body` may be a prefix of the
/// log (cut at the size limit), as long as it holds the first entry whole.
fn parse_created_at(body: &[u8]) -> Result<i64, FetchError> {
    #[derive(Deserialize)]
    struct AuditEntry {
        #[serde(rename = "createdAt")]
        created_at: String,
    }
    let invalid = |reason: String| FetchError::Invalid(format!("audit log: {reason}"));
    let rest = body
        .trim_ascii_start()
        .strip_prefix(b"[")
        .ok_or_else(|| invalid("not a JSON array".into()))?;
    if rest.trim_ascii_start().starts_with(b"]") {
        return Err(invalid("empty".into()));
    }
    let first = serde_json::Deserializer::from_slice(rest)
        .into_iter::<AuditEntry>()
        .next()
        .ok_or_else(|| invalid("empty".into()))?
        .map_err(|e| invalid(format!("first entry: {e}")))?;
    Datetime::new(&first.created_at)
        .map(|d| d.timestamp_micros())
        .map_err(|e| invalid(format!("first entry: {e}")))
}

/// Host (lowercase) and port of a hostname-level did:web's method-specific id, in which only
/// `%3A` (the port separator) may be percent-encoded; `None` for path-level or malformed ids.
fn web_authority(id: &str) -> Option<(String, Option<u16>)> {
    let lower = id.to_ascii_lowercase();
    let (host, port) = match lower.split_once("%3a") {
        Some((host, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (host, Some(port.parse::<u16>().ok().filter(|p| *p != 0)?))
        }
        None => (lower.as_str(), None),
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    valid_host.then(|| (host.to_owned(), port))
}

/// A DNS resolver for reqwest that refuses names resolving to any non-public address.
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(format!(
                    "refused: {host} resolves to a non-public address ({}) and private addresses are not allowed",
                    bad.ip()
                )
                .into());
            }
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `ip` is a globally routable unicast address (not loopback, private, link-local,
/// unspecified, multicast, unique-local, shared, reserved or documentation space).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || a >= 240 // reserved
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 192 && b == 0 && c == 0)) // IETF protocol assignments
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) embeds an IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || s[..6] == [0; 6] // IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "100.64.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "64:ff9b::101:101"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn web_authorities() {
        assert_eq!(
            web_authority("example.com"),
            Some(("example.com".into(), None))
        );
        assert_eq!(
            web_authority("Example.COM%3A8443"),
            Some(("example.com".into(), Some(8443)))
        );
        assert_eq!(web_authority("example.com:user:alice"), None);
        assert_eq!(web_authority("example.com%2Fpath"), None);
        assert_eq!(web_authority("example.com%3A"), None);
        assert_eq!(web_authority("example.com%3A0"), None);
        assert_eq!(web_authority("example.com%3A99999"), None);
        assert_eq!(web_authority(""), None);
        assert_eq!(web_authority("a..b"), None);
        assert_eq!(Method::of("did:web:example.com%3A443"), Some(Method::Web));
        assert_eq!(Method::of("did:web:example.com:path"), None);
        assert_eq!(Method::of("did:plc:abc"), Some(Method::Plc));
        assert_eq!(Method::of("did:key:z6Mk"), None);
        assert_eq!(Method::of("did:plc:a/b"), None);
        assert_eq!(Method::of("did:plc:a b"), None);
        assert_eq!(Method::of("did:plc:a?b"), None);
        assert_eq!(Method::of("did:plc:a#b"), None);
    }

    #[test]
    fn created_at_from_a_prefix_of_the_audit_log() {
        let log = br#" [{"did":"did:plc:x","createdAt":"2023-04-01T12:34:56.789Z"},{"did":"did:plc:x","crea"#;
        assert_eq!(parse_created_at(log).ok(), Some(1_680_352_496_789_000));
        assert!(parse_created_at(b"[]").is_err());
        assert!(parse_created_at(b"{}").is_err());
        assert!(parse_created_at(br#"[{"createdAt":"yesterday"}]"#).is_err());
    }

    #[test]
    fn document_fields() {
        let doc = br##"{"id":"did:plc:x","alsoKnownAs":["https://x","at://Alice.Example.COM"],
            "service":[{"id":"#other","serviceEndpoint":"https://other.example"},
                       {"id":"did:plc:x#atproto_pds","type":"AtprotoPersonalDataServer",
                        "serviceEndpoint":"https://PDS.example.com:8443/"}]}"##;
        let identity = parse_document(doc, "did:plc:x").ok().unwrap();
        assert_eq!(identity.handle.as_deref(), Some("alice.example.com"));
        assert_eq!(identity.pds_host.as_deref(), Some("pds.example.com"));
        assert!(parse_document(doc, "did:plc:y").is_err());
    }
}
