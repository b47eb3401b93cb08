//! Signed webhook delivery with retries.
//!
//! [`Webhook::deliver`] POSTs a JSON body with these headers:
//!
//! * `Content-Type: application/json`
//! * `User-Agent: skywarden/<version>`
//! * `X-Skywarden-Timestamp: <unix seconds>` (of the attempt)
//! * `X-Skywarden-Signature: sha256=<hex>` when a secret is configured: the lowercase hex
//!   HMAC-SHA256, keyed with the secret, of the timestamp, a `.`, and the body (see [`sign`]).
//!   Receivers check it with [`verify`] (or any HMAC implementation) and should also refuse
//!   timestamps far from their clock, to stop replays.
//!
//! A 2xx answer is success. Connection errors, timeouts, 5xx and 429 are retried, up to
//! [`WebhookConfig::max_attempts`] attempts in all, after an exponential backoff with jitter
//! (the n-th retry waits between half and all of `initial_backoff * 2^(n-1)`, capped at
//! `max_backoff`); a 429's `Retry-After` in seconds replaces the backoff, also capped at
//! `max_backoff`. Any other status (other 4xx, and 3xx: redirects are not followed) fails at
//! once. Errors and logs name the URL without its query string, fragment or credentials; the
//! secret and signatures are never logged.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

/// The header carrying the attempt's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Skywarden-Timestamp";
/// The header carrying the body's signature, when a secret is configured.
pub const SIGNATURE_HEADER: &str = "X-Skywarden-Signature";

/// Where and how to deliver; `Debug` redacts the secret and the URL's query.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The receiver, `http` or `https`.
    pub url: Url,
    /// The HMAC key for `X-Skywarden-Signature`; without one, requests are not signed.
    pub secret: Option<String>,
    /// The timeout of each attempt, connection and response headers included.
    pub timeout: Duration,
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the first retry (before jitter); doubled for each further retry.
    pub initial_backoff: Duration,
    /// The longest wait between attempts, `Retry-After` included.
    pub max_backoff: Duration,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &display_url(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// No complete answer within the configured timeout.
    Timeout(Duration),
    /// The connection could not be made.
    Connect(String),
    /// The request failed otherwise.
    Other(String),
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Status(status) => write!(f, "HTTP {}", status_text(*status)),
            AttemptError::Timeout(timeout) => write!(f, "timed out after {timeout:?}"),
            AttemptError::Connect(reason) => write!(f, "could not connect: {reason}"),
            AttemptError::Other(reason) => write!(f, "request failed: {reason}"),
        }
    }
}

/// Why a webhook could not be set up or a delivery failed. URLs are shown without query
/// string, fragment or credentials.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A setting of [`WebhookConfig`] is unusable.
    #[error("webhook {url}: {reason}")]
    Config {
        /// The webhook URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("webhook {url}: could not create the HTTP client: {reason}")]
    Client {
        /// The webhook URL.
        url: String,
        /// The client's error.
        reason: String,
    },
    /// The receiver answered with a status that is not retried (3xx, or 4xx other than 429).
    #[error(
        "webhook {url} refused the delivery with HTTP {} (attempt {attempts}; not retried)",
        status_text(*status)
    )]
    Rejected {
        /// The webhook URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Attempts made, the refused one included.
        attempts: u32,
    },
    /// Every attempt failed with a retryable error.
    #[error("webhook delivery to {url} failed after {attempts} attempt(s); last error: {last}")]
    Exhausted {
        /// The webhook URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: AttemptError,
    },
}

impl WebhookError {
    /// Attempts made before this error (0 for configuration errors).
    pub fn attempts(&self) -> u32 {
        match self {
            WebhookError::Config { .. } | WebhookError::Client { .. } => 0,
            WebhookError::Rejected { attempts, .. } | WebhookError::Exhausted { attempts, .. } => {
                *attempts
            }
        }
    }
}

/// A webhook receiver, ready to deliver to.
pub struct Webhook {
    client: reqwest::Client,
    url: Url,
    /// `url` as errors and logs show it.
    shown_url: String,
    secret: Option<String>,
    timeout: Duration,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.shown_url)
            .field("signed", &self.secret.is_some())
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// Failure of one attempt, with what to do next.
enum Failure {
    Fatal(u16),
    Retry {
        error: AttemptError,
        retry_after: Option<Duration>,
    },
}

impl Webhook {
    /// Checks `config` (an `http` or `https` URL with a host, at least one attempt, a positive
    /// timeout, a non-empty secret if any) and builds the client, which follows no redirects.
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        let shown_url = display_url(&config.url);
        let invalid = |reason: &str| WebhookError::Config {
            url: shown_url.clone(),
            reason: reason.to_owned(),
        };
        if !matches!(config.url.scheme(), "http" | "https") {
            return Err(invalid(&format!(
                "the URL scheme must be http or https, not {:?}",
                config.url.scheme()
            )));
        }
        if !config.url.has_host() {
            return Err(invalid("the URL has no host"));
        }
        if config.max_attempts == 0 {
            return Err(invalid("max_attempts must be at least 1"));
        }
        if config.timeout.is_zero() {
            return Err(invalid("the timeout must be positive"));
        }
        if config.secret.as_deref() == Some("") {
            return Err(invalid(
                "the secret is empty; set a secret or none (unsigned requests)",
            ));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .user_agent(concat!("skywarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client {
                url: shown_url.clone(),
                reason: describe_http_error(&e),
            })?;
        Ok(Webhook {
            client,
            url: config.url,
            shown_url,
            secret: config.secret,
            timeout: config.timeout,
            max_attempts: config.max_attempts,
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
        })
    }

    /// POSTs `body` (JSON), retrying as the module describes; answers the number of attempts
    /// used.
    pub async fn deliver(&self, body: &[u8]) -> Result<u32, WebhookError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, retry_after) = match self.attempt(body).await {
                Ok(()) => return Ok(attempt),
                Err(Failure::Fatal(status)) => {
                    return Err(WebhookError::Rejected {
                        url: self.shown_url.clone(),
                        status,
                        attempts: attempt,
                    });
                }
                Err(Failure::Retry { error, retry_after }) => (error, retry_after),
            };
            if attempt >= self.max_attempts {
                return Err(WebhookError::Exhausted {
                    url: self.shown_url.clone(),
                    attempts: attempt,
                    last: error,
                });
            }
            let delay = match retry_after {
                Some(after) => after.min(self.max_backoff),
                None => self.backoff(attempt),
            };
            tracing::debug!(
                url = %self.shown_url,
                attempt,
                max_attempts = self.max_attempts,
                error = %error,
                retry_in = ?delay,
                "webhook delivery attempt failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, body: &[u8]) -> Result<(), Failure> {
        let timestamp = unix_seconds();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .body(body.to_vec());
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, sign(secret, timestamp, body));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let error = if e.is_timeout() {
                    AttemptError::Timeout(self.timeout)
                } else if e.is_connect() {
                    AttemptError::Connect(describe_http_error(&e))
                } else {
                    AttemptError::Other(describe_http_error(&e))
                };
                return Err(Failure::Retry {
                    error,
                    retry_after: None,
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Failure::Retry {
                error: AttemptError::Status(status.as_u16()),
                retry_after,
            });
        }
        if status.is_server_error() {
            return Err(Failure::Retry {
                error: AttemptError::Status(status.as_u16()),
                retry_after: None,
            });
        }
        Err(Failure::Fatal(status.as_u16()))
    }

    /// The wait after `failed` attempts: between half and all of
    /// `initial_backoff * 2^(failed-1)`, capped at `max_backoff`.
    fn backoff(&self, failed: u32) -> Duration {
        let exponent = failed.saturating_sub(1).min(30);
        let full = self
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff);
        let half = full / 2;
        full - half + half.mul_f64(random_unit())
    }
}

/// The signature header value: `sha256=` and the lowercase hex HMAC-SHA256, keyed with
/// `secret`, of `"{timestamp}."` followed by `body`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * tag.len());
    out.push_str("sha256=");
    crate::push_hex(&mut out, &tag);
    out
}

/// Whether `header` is the signature of `body` sent at `timestamp` under `secret`; the
/// comparison takes constant time. Hex digits may be upper or lower case.
pub fn verify(secret: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&tag).is_ok()
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// `url` without credentials, query string or fragment.
fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// A status with its reason phrase, e.g. `503 Service Unavailable`.
fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A uniformly distributed number in [0, 1), from the standard library's randomly keyed hasher
/// (good enough for jitter).
fn random_unit() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let bits = RandomState::new().hash_one(nanos);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The message of an HTTP client error and its sources, without the request URL (which may
/// carry a token in its query).
pub(crate) fn describe_http_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url()
        && let Some(stripped) = text.strip_suffix(&format!(" for url ({url})"))
    {
        text = stripped.to_owned();
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let signature = sign("k", 1, b"{}");
        assert_eq!(signature.len(), 7 + 64);
        assert!(verify("k", 1, b"{}", &signature));
        assert!(verify(
            "k",
            1,
            b"{}",
            &signature.to_ascii_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify("k", 1, b"{}", &signature[..signature.len() - 1]));
        assert!(!verify("k", 1, b"{}", "sha256=zz"));
        assert!(!verify(
            "k",
            1,
            b"{}",
            &signature.replace("sha256=", "sha1=")
        ));
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        let url = Url::parse("https://user:pw@hooks.example/a/b?token=t#f").unwrap();
        assert_eq!(display_url(&url), "https://hooks.example/a/b");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let webhook = Webhook::new(WebhookConfig {
            url: Url::parse("http://localhost/").unwrap(),
            secret: None,
            timeout: Duration::from_secs(1),
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        })
        .unwrap();
        for (failed, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let delay = webhook.backoff(failed);
            let full = Duration::from_millis(full);
            assert!(delay >= full / 2 && delay <= full, "{failed}: {delay:?}");
        }
    }
}
