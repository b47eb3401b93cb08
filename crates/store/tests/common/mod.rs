//! The two-backend harness of the store's test suites: SQLite in a temporary data directory,
//! and Postgres (the server at `SKYWARDEN_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`) in a schema of its own, dropped after.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The server to test against; the machine's own is started if it is down
/// (`tests/services/postgres.sh`).
pub fn postgres_url() -> String {
    if let Ok(url) = std::env::var("SKYWARDEN_TEST_POSTGRES") {
        return url;
    }
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/services/postgres.sh");
        let out = std::process::Command::new("bash").arg(&script).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("{}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("cannot run {}: {e}", script.display()),
        }
    });
    "postgres://postgres@127.0.0.1:5432/test".into()
}

static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

/// A fresh, unique name (for a schema or a directory).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        SCHEMAS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops a test schema.
pub async fn drop_schema(url: &str, schema: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// Runs `$suite` on both backends, as two tests, through `with_sqlite` and `with_postgres`
/// defined by the suite.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::with_sqlite(super::$name).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::with_postgres(super::$name).await;
            }
        }
    };
}
