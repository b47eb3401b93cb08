//! `skywarden simulate`: the simulated network, written to an archive or served as a relay.

use clap::Args;
use skywarden_ingest::archive::ArchiveWriter;
use skywarden_ingest::{Format, RawFrame};
use skywarden_sim::server::{ServeConfig, SimServer};
use skywarden_sim::{Network, SimConfig};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// Flags of `skywarden simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Seed: the same seed gives the same frames.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Ordinary accounts (one abusive account per 50 is added, at least one per scenario).
    #[arg(long, default_value_t = 10_000)]
    pub accounts: usize,
    /// Frames to generate (with --listen and a --rate: stop after this many; 0 never stops).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Write the frames to this archive (replay with `--archive FILE`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Serve com.atproto.sync.subscribeRepos and a PLC directory on this address
    /// (`serve --relay ws://ADDR --plc http://ADDR`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// With --listen: frames per second; 0 generates --events frames first and serves them as
    /// fast as subscribers read.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// With --listen and a --rate: generate --events frames first, then release them at the
    /// rate (each at its timestamp's distance from the first), so the rate is not bounded by
    /// the generator. Prints the release offset (wall clock minus simulated time) once started.
    #[arg(long)]
    pub pregenerate: bool,
    /// Write the ground truth (abusive accounts, scenario, first frame) as JSON lines here.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// No abuse scenarios: ordinary activity only.
    #[arg(long)]
    pub no_abuse: bool,
    /// Simulated time of the first event: `now` or an RFC 3339 datetime
    /// [default: now with --listen, 2026-01-01T00:00:00Z otherwise].
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl SimulateArgs {
    fn config(&self) -> Result<SimConfig, String> {
        let start = match self.start.as_deref() {
            Some("now") => now_micros(),
            None if self.listen.is_some() => now_micros(),
            None => SimConfig::default().start_micros,
            Some(t) => skywarden_atproto::syntax::Datetime::new(t)
                .map_err(|e| format!("--start: {e}"))?
                .timestamp_micros(),
        };
        // Live, simulated time advances with the wall clock; in archives, 1 ms per event.
        let step = if self.listen.is_some() && self.rate > 0 {
            (1_000_000 / self.rate.max(1)) as i64
        } else {
            1_000
        };
        Ok(SimConfig {
            seed: self.seed,
            accounts: self.accounts.max(1),
            start_micros: start,
            step_micros: step.max(1),
            abuse: !self.no_abuse,
        })
    }
}

fn write_truth(path: &std::path::Path, truth: &[skywarden_sim::Truth]) -> Result<(), String> {
    let mut out = String::new();
    for t in truth {
        out.push_str(&serde_json::to_string(t).map_err(|e| e.to_string())?);
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Runs `skywarden simulate`.
pub async fn run(args: SimulateArgs) -> Result<(), String> {
    let config = args.config()?;
    match (&args.out, &args.listen) {
        (Some(out), None) => {
            let mut network = Network::new(config);
            let mut w = ArchiveWriter::create(out, Format::Firehose).map_err(|e| e.to_string())?;
            for f in network.frames(args.events) {
                w.write(&RawFrame {
                    bytes: f.bytes.into(),
                    received_micros: f.time_micros,
                })
                .map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
            if let Some(path) = &args.truth {
                write_truth(path, network.truth())?;
            }
            eprintln!(
                "skywarden simulate: {} frames (last seq {}) to {}; {} abusive accounts in the ground truth",
                args.events,
                network.seq(),
                out.display(),
                network.truth().len()
            );
            Ok(())
        }
        (None, Some(listen)) => {
            let server = SimServer::new(
                Network::new(config),
                ServeConfig {
                    rate: args.rate,
                    events: args.events,
                    history: 2_000_000,
                    pregenerate: args.pregenerate,
                },
            );
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            let (stop_tx, stop_rx) = watch::channel(false);
            tokio::spawn(server.clone().run(stop_rx));
            if args.pregenerate {
                let s = server.clone();
                tokio::spawn(async move {
                    loop {
                        if let Some(offset) = s.release_offset_micros() {
                            eprintln!("skywarden simulate: releasing; offset_micros={offset}");
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
            }
            eprintln!(
                "skywarden simulate: relay at ws://{local} (subscribeRepos), PLC at http://{local}; \
                 try: skywarden serve --relay ws://{local} --plc http://{local} --cursor 0"
            );
            let app = server.router();
            let truth_path = args.truth.clone();
            // Stopped by SIGINT or SIGTERM, the ground truth is still written.
            let serving =
                axum::serve(listener, app).with_graceful_shutdown(crate::stop_requested());
            let result = serving.await.map_err(|e| e.to_string());
            let _ = stop_tx.send(true);
            if let Some(path) = truth_path {
                write_truth(&path, &server.truth())?;
            }
            result
        }
        _ => Err("choose one of --out FILE and --listen ADDR".into()),
    }
}
