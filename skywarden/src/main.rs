//! The `skywarden` command line: wiring only; the work happens in the library crates.

mod default_rules;
mod labeler_cmd;
mod moderation_cmd;
mod rules_cmd;
mod serve_cmd;
mod simulate_cmd;

use clap::{Args, Parser, Subcommand};

/// Sources, workers and the effect writer run on different threads and free each other's
/// allocations; mimalloc handles that without the system allocator's arena lock contention
/// (measured: about a third more events/s in `cargo bench -p skywarden-engine --bench pipeline`).
/// Built without transparent huge pages (`no_thp`): with them, memory mimalloc purged and
/// reused faulted back in as zeroed 2 MiB pages (measured on `serve --archive`: about 6 %
/// more CPU and 45 MB more peak RSS).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use skywarden_ingest::archive::ArchiveWriter;
use skywarden_ingest::firehose::WsSettings;
use skywarden_ingest::metrics::SourceMetrics;
use skywarden_ingest::{Format, Source, SourceConfig, SourceError};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// skywarden — a Trust & Safety engine for the AT Protocol network (Bluesky).
///
/// It watches the network — a relay's firehose, a PDS, Jetstream, or a recorded archive — and
/// turns every frame into a typed, checked event: records resolved from the commit's blocks
/// with their CIDs verified, the signed commit checked against the frame, stale and replayed
/// events dropped.
///
/// `serve` runs rules on it and logs every action they fire, durably and explained.
///
/// Start with:
///   skywarden serve --archive testdata/firehose/pds-recording.skwa --log-format text
///   skywarden ingest --archive testdata/firehose/pds-recording.skwa --stats
///   skywarden ingest --relay wss://bsky.network | head
///   skywarden record --relay wss://bsky.network --out today.skwa --duration 60
#[derive(Parser)]
#[command(
    name = "skywarden",
    version,
    verbatim_doc_comment,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version.
    Version,
    /// Watch a source and print one JSON line per event (or a running summary with --stats).
    ///
    /// Each line has the event's cursor (firehose `seq` or Jetstream `time_us`), its kind
    /// (commit, identity, account, sync), the repo DID, and for commits each op's action and
    /// path. Pipe it to `jq`, or add --records to include the records themselves.
    ///
    /// Examples:
    ///   skywarden ingest --relay wss://bsky.network --cursor 123456789
    ///   skywarden ingest --jetstream wss://jetstream2.us-east.bsky.network --collection app.bsky.feed.post
    ///   skywarden ingest --archive capture.skwa --stats
    #[command(verbatim_doc_comment)]
    Ingest {
        #[command(flatten)]
        source: SourceArgs,
        /// Include each op's record (as atproto JSON) in the output.
        #[arg(long)]
        records: bool,
        /// Print a summary every second (and at the end) instead of one line per event.
        #[arg(long)]
        stats: bool,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Record a source's raw frames into an archive file, to replay later with --archive.
    ///
    /// Frames are stored exactly as received, zstd-compressed in chunks, so a replay decodes
    /// the same bytes. The file is flushed every second; a crash loses at most the last second,
    /// and --append cuts a torn tail before continuing. Recording from --archive converts a
    /// plain length-prefixed recording into skywarden's format.
    ///
    /// Examples:
    ///   skywarden record --relay wss://bsky.network --out network.skwa --duration 300
    ///   skywarden record --archive frames.bin --out frames.skwa
    #[command(verbatim_doc_comment)]
    Record {
        #[command(flatten)]
        source: SourceArgs,
        /// The archive file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Append to an existing archive instead of replacing it.
        #[arg(long)]
        append: bool,
        /// Stop after this many frames.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
        /// zstd level: 1 (fast) to 19 (small).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
        level: i32,
    },
    /// Rulesets: check, test, backtest against a recording, and the language reference.
    ///
    /// Examples:
    ///   skywarden rules check rules/
    ///   skywarden rules test rules/
    ///   skywarden rules run rules/ --archive testdata/firehose/pds-recording.skwa
    #[command(verbatim_doc_comment)]
    Rules {
        #[command(subcommand)]
        command: rules_cmd::RulesCommand,
    },
    /// Run the engine: watch a source, evaluate the ruleset, log effects durably, sign labels
    /// and serve them (subscribeLabels, queryLabels), and serve health, readiness and metrics
    /// over HTTP.
    ///
    /// Every flag can also be set as SKYWARDEN_<FLAG> (e.g. SKYWARDEN_DATA_DIR) or in the
    /// --config file; flags win over the environment, which wins over the file. SIGHUP
    /// reloads the ruleset; SIGINT/SIGTERM drain and checkpoint before exiting.
    ///
    /// Examples:
    ///   skywarden serve --relay wss://bsky.network --plc https://plc.directory
    ///   skywarden serve --archive testdata/firehose/pds-recording.skwa --rules rules/
    ///   skywarden serve --config /etc/skywarden/skywarden.toml
    #[command(verbatim_doc_comment)]
    Serve(Box<serve_cmd::ServeArgs>),
    /// The labeler's signing key.
    ///
    /// Examples:
    ///   skywarden keys show --data-dir /var/lib/skywarden
    #[command(verbatim_doc_comment)]
    Keys {
        #[command(subcommand)]
        command: labeler_cmd::KeysCommand,
    },
    /// A simulated network: signed firehose frames from simulated accounts, with abuse
    /// scenarios and their ground truth, written to an archive or served as a relay.
    ///
    /// Examples:
    ///   skywarden simulate --seed 7 --events 200000 --out sim.skwa --truth truth.jsonl
    ///   skywarden simulate --listen 127.0.0.1:2583 --rate 500
    ///   skywarden serve --relay ws://127.0.0.1:2583 --plc http://127.0.0.1:2583 --cursor 0
    #[command(verbatim_doc_comment)]
    Simulate(simulate_cmd::SimulateArgs),
    /// The labeler's identity: its service record and did:web document.
    Labeler {
        #[command(subcommand)]
        command: labeler_cmd::LabelerCommand,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false, id = "input")]
struct SourceChoice {
    /// A relay or PDS base URL (ws://, wss://, http://, https://); the
    /// com.atproto.sync.subscribeRepos path is appended.
    #[arg(long, value_name = "URL", group = "input")]
    relay: Option<String>,
    /// A Jetstream base URL; /subscribe is appended.
    #[arg(long, value_name = "URL", group = "input")]
    jetstream: Option<String>,
    /// A recorded archive (skywarden's format, or plain [u32le length][frame] recordings).
    #[arg(long, value_name = "FILE", group = "input")]
    archive: Option<PathBuf>,
    /// JSON lines of events, as printed by `skywarden ingest --records` (`rules run` only).
    #[arg(long, value_name = "FILE", group = "input")]
    events: Option<PathBuf>,
}

#[derive(Args)]
pub struct SourceArgs {
    #[command(flatten)]
    choice: SourceChoice,
    /// Resume after this cursor (firehose seq, or Jetstream time_us).
    #[arg(long, value_name = "N")]
    cursor: Option<i64>,
    /// Jetstream only: the collections to receive (repeatable; default all).
    #[arg(long = "collection", value_name = "NSID")]
    collections: Vec<String>,
    /// Jetstream only: ask for uncompressed JSON instead of zstd.
    #[arg(long)]
    no_compress: bool,
    /// Frames larger than this many bytes are skipped and counted.
    #[arg(long, value_name = "BYTES", default_value_t = 5 << 20)]
    max_frame_bytes: usize,
}

impl SourceArgs {
    /// The JSON-lines event file, if that is the chosen input.
    pub fn events_file(&self) -> Option<&std::path::Path> {
        self.choice.events.as_deref()
    }

    pub fn open(&self) -> Result<Source, SourceError> {
        let config = SourceConfig {
            cursor: self.cursor,
            ..SourceConfig::default()
        };
        let settings = WsSettings {
            max_frame_bytes: self.max_frame_bytes,
            ..WsSettings::default()
        };
        let c = &self.choice;
        if let Some(url) = &c.relay {
            Source::firehose(url, settings, config)
        } else if let Some(url) = &c.jetstream {
            Source::jetstream(
                url,
                self.collections.clone(),
                !self.no_compress,
                settings,
                config,
            )
        } else if let Some(path) = &c.archive {
            Source::archive(path, config)
        } else if c.events.is_some() {
            Err(SourceError::Config(
                "--events is only read by `skywarden rules run`".into(),
            ))
        } else {
            Err(SourceError::Config(
                "choose a source: --relay, --jetstream or --archive".into(),
            ))
        }
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // `serve` logs at info (one line per action), in JSON unless told otherwise; the tools log
    // warnings as text.
    let serve_settings = match &mut cli.command {
        Command::Serve(args) => match std::mem::take(args.as_mut()).settings() {
            Ok(settings) => Some(settings),
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let default_level = if serve_settings.is_some() {
        "info"
    } else {
        "warn"
    };
    let json = serve_settings
        .as_ref()
        .is_some_and(|s| s.log_format == "json");
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKYWARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if json {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Version => {
                println!("skywarden {}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
            Command::Ingest {
                source,
                records,
                stats,
                limit,
            } => ingest(source, records, stats, limit).await,
            Command::Record {
                source,
                out,
                append,
                limit,
                duration,
                level,
            } => record(source, out, append, limit, duration, level).await,
            Command::Rules { command } => rules_cmd::run(command).await,
            Command::Keys { command } => labeler_cmd::keys(command),
            Command::Simulate(args) => simulate_cmd::run(args).await,
            Command::Labeler { command } => labeler_cmd::labeler(command).await,
            Command::Serve(_) => match serve_settings {
                Some(settings) => serve_cmd::run(settings).await,
                None => Err("serve settings missing".into()),
            },
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) or, on Unix, SIGTERM (what
/// `kill` and service managers send).
pub(crate) async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A flag set once the process is asked to stop ([`stop_requested`]).
fn interrupted() -> Arc<std::sync::atomic::AtomicBool> {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        stop_requested().await;
        f.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    flag
}

async fn ingest(
    args: SourceArgs,
    records: bool,
    stats: bool,
    limit: Option<u64>,
) -> Result<(), String> {
    let mut source = args.open().map_err(|e| e.to_string())?;
    let metrics = source.metrics();
    let stop = interrupted();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut count = 0u64;
    let outcome = loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) || limit.is_some_and(|l| count >= l) {
            break Ok(());
        }
        // Wake up every second even when the stream is quiet, to flush and report.
        let next = tokio::time::timeout(Duration::from_secs(1), source.next_event()).await;
        match next {
            Ok(Ok(Some(event))) => {
                count += 1;
                if !stats {
                    let line = event.to_json(records);
                    if writeln!(out, "{line}").is_err() {
                        // The reader went away (`| head`): a normal end.
                        return Ok(());
                    }
                }
            }
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(e)) => break Err(e.to_string()),
            Err(_) => {}
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            if stats {
                let _ = writeln!(out, "{}", summary(&metrics, started.elapsed()));
            }
            if out.flush().is_err() {
                return Ok(());
            }
            last_report = Instant::now();
        }
    };
    if stats {
        let _ = writeln!(out, "{}", summary(&metrics, started.elapsed()));
    }
    let _ = out.flush();
    if let Some(cursor) = source.cursor() {
        eprintln!("resume with --cursor {cursor}");
    }
    outcome
}

fn summary(metrics: &SourceMetrics, elapsed: Duration) -> serde_json::Value {
    let s = metrics.snapshot();
    let secs = elapsed.as_secs_f64().max(1e-9);
    // Only the counters that moved, to keep the line short.
    let nonzero = |pairs: &[(&str, u64)]| -> serde_json::Map<String, serde_json::Value> {
        pairs
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), (*n).into()))
            .collect()
    };
    let (frames, dropped) = (nonzero(&s.frames), nonzero(&s.dropped));
    serde_json::json!({
        "elapsed_s": (secs * 1000.0).round() / 1000.0,
        "events": s.events,
        "events_per_s": (s.events as f64 / secs).round(),
        "mb": (s.bytes as f64 / 1e6 * 100.0).round() / 100.0,
        "frames": frames,
        "dropped": dropped,
        "decode_errors": s.decode_errors,
        "oversized": s.oversized,
        "reconnects": s.reconnects,
        "outdated_cursor": s.outdated_cursor,
        "cursor": s.last_cursor,
        "lag_s": (s.lag_seconds * 1000.0).round() / 1000.0,
    })
}

async fn record(
    args: SourceArgs,
    out: PathBuf,
    append: bool,
    limit: Option<u64>,
    duration: Option<u64>,
    level: i32,
) -> Result<(), String> {
    let mut source = args.open().map_err(|e| e.to_string())?;
    let format = source.format();
    let writer = if append {
        ArchiveWriter::append(&out, format)
    } else {
        ArchiveWriter::create(&out, format)
    };
    let mut writer = writer.map_err(|e| e.to_string())?.level(level);
    let stop = interrupted();
    let deadline = duration.map(|d| Instant::now() + Duration::from_secs(d));
    let mut last_flush = Instant::now();
    let mut count = 0u64;
    let outcome = loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed)
            || limit.is_some_and(|l| count >= l)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break Ok(());
        }
        match tokio::time::timeout(Duration::from_secs(1), source.next_raw()).await {
            Ok(Ok(Some(frame))) => {
                writer.write(&frame).map_err(|e| e.to_string())?;
                count += 1;
            }
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(e)) => break Err(e.to_string()),
            Err(_) => {}
        }
        if last_flush.elapsed() >= Duration::from_secs(1) {
            writer.flush().map_err(|e| e.to_string())?;
            last_flush = Instant::now();
        }
    };
    writer.finish().map_err(|e| e.to_string())?;
    let kind = match format {
        Format::Firehose => "firehose",
        Format::Jetstream => "jetstream",
    };
    eprintln!("recorded {count} {kind} frames to {}", out.display());
    if let Some(cursor) = source.cursor() {
        eprintln!("resume with --cursor {cursor}");
    }
    outcome
}
