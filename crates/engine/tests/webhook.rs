//! Webhook delivery against a local receiver that answers a scripted sequence of statuses.

use std::collections::VecDeque;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use skywarden_engine::webhook::{
    AttemptError, SIGNATURE_HEADER, TIMESTAMP_HEADER, Webhook, WebhookConfig, WebhookError, sign,
    verify,
};
use tokio::net::TcpListener;
use url::Url;

/// One request as received.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Default)]
struct Receiver {
    /// Statuses to answer, in order; 200 once exhausted. 0 means never answer.
    script: Mutex<VecDeque<u16>>,
    /// `Retry-After` sent with 429.
    retry_after: Mutex<Option<String>>,
    received: Mutex<Vec<Received>>,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receiver.received.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
    });
    let status = receiver.script.lock().unwrap().pop_front().unwrap_or(200);
    if status == 0 {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let status = StatusCode::from_u16(status).unwrap();
    match receiver.retry_after.lock().unwrap().clone() {
        Some(after) if status == StatusCode::TOO_MANY_REQUESTS => {
            (status, [(header::RETRY_AFTER, after)]).into_response()
        }
        _ => status.into_response(),
    }
}

async fn serve(script: &[u16]) -> (Arc<Receiver>, Url) {
    let receiver = Arc::new(Receiver {
        script: Mutex::new(script.iter().copied().collect()),
        ..Receiver::default()
    });
    let app = Router::new().fallback(receive).with_state(receiver.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (
        receiver,
        Url::parse(&format!("http://{addr}/hooks/skywarden?token=hunter2")).unwrap(),
    )
}

fn config(url: Url, secret: Option<&str>) -> WebhookConfig {
    WebhookConfig {
        url,
        secret: secret.map(str::to_owned),
        timeout: Duration::from_secs(2),
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

const BODY: &[u8] =
    br#"{"webhook":"mods","effects":[{"id":1,"subject":"did:plc:x","note":"caf\u00e9 \u2603"}]}"#;

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let (receiver, url) = serve(&[503, 503, 200]).await;
    let webhook = Webhook::new(config(url, Some("s3cret"))).unwrap();
    assert_eq!(webhook.deliver(BODY).await.unwrap(), 3);
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    for request in &received {
        assert_eq!(request.body, BODY);
        assert_eq!(request.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            request.headers[header::USER_AGENT],
            concat!("skywarden/", env!("CARGO_PKG_VERSION"))
        );
        let timestamp: i64 = request.headers[TIMESTAMP_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let signature = request.headers[SIGNATURE_HEADER].to_str().unwrap();
        assert!(verify("s3cret", timestamp, &request.body, signature));
    }
}

#[tokio::test]
async fn too_many_requests_is_retried_after_a_capped_retry_after() {
    let (receiver, url) = serve(&[429, 200]).await;
    *receiver.retry_after.lock().unwrap() = Some("30".into());
    let webhook = Webhook::new(config(url, None)).unwrap();
    let start = Instant::now();
    assert_eq!(webhook.deliver(BODY).await.unwrap(), 2);
    // Retry-After: 30 is capped at max_backoff (50 ms).
    assert!(start.elapsed() < Duration::from_secs(2));
    let received = receiver.received.lock().unwrap().clone();
    assert!(
        !received[1].headers.contains_key(SIGNATURE_HEADER),
        "no secret, no signature"
    );
}

/// The signature as Python's standard library computes it.
fn python_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let script = "import hashlib, hmac, sys\n\
                  body = sys.stdin.buffer.read()\n\
                  message = sys.argv[2].encode() + b'.' + body\n\
                  digest = hmac.new(sys.argv[1].encode(), message, hashlib.sha256).hexdigest()\n\
                  sys.stdout.write('sha256=' + digest)";
    let mut child = Command::new("python3")
        .args(["-c", script, secret, timestamp])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_signature_matches_an_independent_implementation() {
    let (receiver, url) = serve(&[]).await;
    let secret = "correct horse battery staple ☃";
    let webhook = Webhook::new(config(url, Some(secret))).unwrap();
    assert_eq!(webhook.deliver(BODY).await.unwrap(), 1);
    let request = receiver.received.lock().unwrap()[0].clone();
    let timestamp = request.headers[TIMESTAMP_HEADER].to_str().unwrap();
    let signature = request.headers[SIGNATURE_HEADER].to_str().unwrap();
    assert_eq!(request.body, BODY);
    assert_eq!(
        signature,
        python_signature(secret, timestamp, &request.body),
        "the header differs from Python's hmac"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((timestamp.parse::<i64>().unwrap() - now).abs() <= 5);
    assert_eq!(
        sign(secret, 1_700_000_000, b"{}"),
        python_signature(secret, "1700000000", b"{}")
    );
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let (receiver, url) = serve(&[400]).await;
    let webhook = Webhook::new(config(url, Some("s3cret"))).unwrap();
    let error = webhook.deliver(BODY).await.unwrap_err();
    assert!(
        matches!(
            error,
            WebhookError::Rejected {
                status: 400,
                attempts: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.attempts(), 1);
    assert_eq!(receiver.received.lock().unwrap().len(), 1);
    let message = error.to_string();
    assert!(message.contains("400"), "{message}");
    assert!(message.contains("/hooks/skywarden"), "{message}");
    assert!(
        !message.contains("hunter2"),
        "the query string leaked: {message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn connection_refused_is_retried_up_to_max_attempts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = Url::parse(&format!("http://{addr}/hook?token=hunter2")).unwrap();
    let webhook = Webhook::new(WebhookConfig {
        max_attempts: 3,
        ..config(url, Some("s3cret"))
    })
    .unwrap();
    let start = Instant::now();
    let error = webhook.deliver(BODY).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    let WebhookError::Exhausted {
        attempts: 3,
        last: AttemptError::Connect(_),
        ..
    } = &error
    else {
        panic!("unexpected {error:?}");
    };
    let message = error.to_string();
    assert!(message.contains("after 3 attempt"), "{message}");
    assert!(message.contains("connect"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_each_attempt() {
    let (receiver, url) = serve(&[0, 0]).await;
    let webhook = Webhook::new(WebhookConfig {
        timeout: Duration::from_millis(200),
        max_attempts: 2,
        ..config(url, None)
    })
    .unwrap();
    let start = Instant::now();
    let error = webhook.deliver(BODY).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(
        matches!(
            error,
            WebhookError::Exhausted {
                attempts: 2,
                last: AttemptError::Timeout(_),
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("timed out after 200ms"), "{message}");
    assert_eq!(receiver.received.lock().unwrap().len(), 2);
}

#[test]
fn verify_rejects_tampering() {
    let signature = sign("s3cret", 1_700_000_000, BODY);
    assert!(verify("s3cret", 1_700_000_000, BODY, &signature));
    let mut tampered = BODY.to_vec();
    tampered[20] ^= 1;
    assert!(!verify("s3cret", 1_700_000_000, &tampered, &signature));
    assert!(!verify("s3cret", 1_700_000_001, BODY, &signature));
    assert!(!verify("other", 1_700_000_000, BODY, &signature));
    assert!(!verify("s3cret", 1_700_000_000, BODY, ""));
    assert!(!verify("s3cret", 1_700_000_000, BODY, "sha256="));
    assert!(!verify("s3cret", 1_700_000_000, BODY, &signature[7..]));
}

#[test]
fn configuration_is_checked_and_the_secret_redacted() {
    let url = Url::parse("https://hooks.example/x?token=hunter2").unwrap();
    let debug = format!("{:?}", config(url.clone(), Some("s3cret")));
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");

    let error = Webhook::new(config(Url::parse("ftp://hooks.example/").unwrap(), None))
        .unwrap_err()
        .to_string();
    assert!(error.contains("http or https"), "{error}");
    let error = Webhook::new(WebhookConfig {
        max_attempts: 0,
        ..config(url.clone(), None)
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("max_attempts"), "{error}");
    assert!(Webhook::new(config(url.clone(), Some(""))).is_err());
    let webhook = Webhook::new(config(url, Some("s3cret"))).unwrap();
    assert!(!format!("{webhook:?}").contains("s3cret"));
}
