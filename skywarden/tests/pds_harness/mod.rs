//! A real PDS for the integration tests: `tests/pds/harness.mjs` (installed by
//! `tests/pds/install.sh`) runs `@atproto/pds` with its PLC, answers `ready`, then runs a
//! scripted scenario per command (`abuse`, `phase1`, …) and reports what it did.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

/// `tests/pds` of the repository.
pub fn pds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pds")
}

/// A running harness.
pub struct Harness {
    /// The PDS's base URL.
    pub pds: String,
    /// Its PLC directory's URL.
    pub plc: String,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl Harness {
    /// Installs the pinned packages if needed, starts the PDS with its data in `work`, and
    /// waits for it to be ready.
    pub async fn start(work: &Path) -> Harness {
        let dir = pds_dir();
        let install = Command::new("bash")
            .arg(dir.join("install.sh"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run tests/pds/install.sh");
        assert!(
            install.status.success(),
            "tests/pds/install.sh failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        let mut child = Command::new("node")
            .arg(dir.join("harness.mjs"))
            .arg("--data-dir")
            .arg(work.join("pds-data"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(work.join("harness.log")).unwrap(),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/pds/harness.mjs");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut h = Harness {
            pds: String::new(),
            plc: String::new(),
            stdin,
            lines,
            _child: child,
        };
        let ready = h.next().await;
        h.pds = ready["pdsUrl"].as_str().unwrap().to_string();
        h.plc = ready["plcUrl"].as_str().unwrap().to_string();
        h
    }

    async fn next(&mut self) -> Value {
        let line = timeout(Duration::from_secs(180), self.lines.next_line())
            .await
            .expect("harness line within 180 s")
            .unwrap()
            .expect("harness output");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_ne!(v["type"], "error", "harness error: {v}");
        v
    }

    /// Runs a scenario phase and returns its report (`actions`, `lastSeq`, keys).
    pub async fn run(&mut self, phase: &str) -> Value {
        self.stdin
            .write_all(format!("{phase}\n").as_bytes())
            .await
            .unwrap();
        self.next().await
    }

    /// Asks the harness to stop.
    pub async fn exit(&mut self) {
        let _ = self.stdin.write_all(b"exit\n").await;
    }
}

/// The DID of the account created with `handle` in a phase's report.
pub fn did_of(report: &Value, handle: &str) -> String {
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "account_created" && a["handle"] == handle)
        .and_then(|a| a["did"].as_str())
        .unwrap_or_else(|| panic!("no account {handle}"))
        .to_string()
}
