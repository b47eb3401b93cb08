//! The simulated firehose checked by code skywarden did not write: `tests/pds/sim-check.mjs`
//! reads `subscribeRepos` from the simulator with `@atproto/xrpc-server`, checks each message
//! against the lexicons, resolves each account's key from the simulator's PLC directory with
//! `@atproto/identity`, and verifies each commit's signature and every op's MST proof with
//! `@atproto/repo`'s `verifyProofs` (what `@atproto/sync` does). `tests/pds/install.sh`
//! installs the pinned packages.

use skywarden_sim::server::{ServeConfig, SimServer};
use skywarden_sim::{Network, SimConfig};
use std::path::Path;
use std::process::Stdio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_frames_verify_in_atproto_repo() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pds");
    let install = tokio::process::Command::new("bash")
        .arg(dir.join("install.sh"))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        install.status.success(),
        "tests/pds/install.sh: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let server = SimServer::new(
        Network::new(SimConfig {
            seed: 9,
            accounts: 400,
            ..SimConfig::default()
        }),
        ServeConfig {
            rate: 0,
            events: 4000,
            history: 1 << 20,
            pregenerate: false,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let out = tokio::process::Command::new("node")
        .arg(dir.join("sim-check.mjs"))
        .arg("--service")
        .arg(format!("ws://{addr}"))
        .arg("--plc")
        .arg(format!("http://{addr}"))
        .arg("--until")
        .arg(server.head().to_string())
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sim-check.mjs: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    println!("{report}");
    assert_eq!(report["problemCount"], 0, "{report}");
    assert_eq!(report["lastSeq"], server.head(), "{report}");
    let commits = report["commits"].as_u64().unwrap();
    assert!(commits > 3000, "{report}");
    assert!(
        report["opsVerified"].as_u64().unwrap() >= commits,
        "{report}"
    );
    assert!(report["frames"]["identity"].as_u64().unwrap() > 0);
    assert!(report["frames"]["account"].as_u64().unwrap() > 0);
}
