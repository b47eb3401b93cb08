//! `skywarden serve`: settings from flags, `SKYWARDEN_*` variables and a config file, merged in
//! that order of precedence; then wiring: store, ruleset, identity, engine, HTTP, signals,
//! sinks. `docs/operations/configuration.md` documents every setting.

use crate::default_rules;
use crate::labeler_cmd::{LabelerArgs, LabelerFile, LabelerSettings};
use crate::moderation_cmd::{ModerationArgs, ModerationFile, ModerationSettings};
use clap::Args;
use serde::Deserialize;
use skywarden_engine::identity::{IdentityConfig, IdentityResolver};
use skywarden_engine::sinks::{WebhookSinkConfig, run_webhook_sink};
use skywarden_engine::webhook::WebhookConfig;
use skywarden_engine::{Engine, EngineConfig, RulesOrigin, RulesSlot};
use skywarden_ingest::firehose::WsSettings;
use skywarden_ingest::{Source, SourceConfig};
use skywarden_server::{AppState, Readiness};
use skywarden_store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Flags of `skywarden serve`. Each may also come from `SKYWARDEN_<NAME>` or the config file.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML config file (see docs/operations/configuration.md).
    #[arg(long, value_name = "FILE", env = "SKYWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the database and state [default: ./skywarden-data].
    #[arg(long, value_name = "DIR", env = "SKYWARDEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for HTTP: health, readiness, metrics [default: 127.0.0.1:2480].
    #[arg(long, value_name = "ADDR", env = "SKYWARDEN_LISTEN")]
    pub listen: Option<String>,
    /// Source: a relay or PDS base URL (subscribeRepos).
    #[arg(long, value_name = "URL", env = "SKYWARDEN_RELAY")]
    pub relay: Option<String>,
    /// Source: a Jetstream base URL.
    #[arg(long, value_name = "URL", env = "SKYWARDEN_JETSTREAM")]
    pub jetstream: Option<String>,
    /// Source: a recorded archive; serve exits when it ends.
    #[arg(long, value_name = "FILE", env = "SKYWARDEN_ARCHIVE")]
    pub archive: Option<PathBuf>,
    /// Start after this source cursor when there is no checkpoint yet (0 replays everything a
    /// relay or PDS still holds) [default: live].
    #[arg(long, value_name = "N", env = "SKYWARDEN_CURSOR")]
    pub cursor: Option<i64>,
    /// Ruleset directory [default: the built-in ruleset].
    #[arg(long, value_name = "DIR", env = "SKYWARDEN_RULES")]
    pub rules: Option<PathBuf>,
    /// PLC directory URL for identity resolution (e.g. https://plc.directory) [default: none,
    /// no resolution].
    #[arg(long, value_name = "URL", env = "SKYWARDEN_PLC")]
    pub plc: Option<String>,
    /// Worker partitions [default: the number of cores].
    #[arg(long, value_name = "N", env = "SKYWARDEN_PARTITIONS")]
    pub partitions: Option<usize>,
    /// Events queued per partition before the source waits [default: 4096].
    #[arg(long, value_name = "N", env = "SKYWARDEN_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Events per worker batch [default: 256].
    #[arg(long, value_name = "N", env = "SKYWARDEN_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Checkpoint at least every this many milliseconds [default: 10000].
    #[arg(long, value_name = "MS", env = "SKYWARDEN_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// Checkpoint at least every this many events [default: 500000].
    #[arg(long, value_name = "N", env = "SKYWARDEN_CHECKPOINT_EVENTS")]
    pub checkpoint_events: Option<u64>,
    /// Group commit: the effect writer commits at most once per this many milliseconds
    /// (0: at once) [default: 50].
    #[arg(long, value_name = "MS", env = "SKYWARDEN_COMMIT_WINDOW_MS")]
    pub commit_window_ms: Option<u64>,
    /// How long evaluation may wait for an unresolved identity, in ms [default: 0].
    #[arg(long, value_name = "MS", env = "SKYWARDEN_IDENTITY_BUDGET_MS")]
    pub identity_budget_ms: Option<u64>,
    /// Daily quota for an action verb, VERB=N (repeatable; e.g. takedown=100).
    #[arg(
        long = "quota",
        value_name = "VERB=N",
        env = "SKYWARDEN_QUOTAS",
        value_delimiter = ','
    )]
    pub quotas: Vec<String>,
    /// A webhook sink, NAME=URL (repeatable). Its secret comes from
    /// SKYWARDEN_WEBHOOK_<NAME>_SECRET.
    #[arg(
        long = "webhook",
        value_name = "NAME=URL",
        env = "SKYWARDEN_WEBHOOKS",
        value_delimiter = ','
    )]
    pub webhooks: Vec<String>,
    /// Reload the ruleset when its files change (polling; SIGHUP always reloads) [default: true].
    #[arg(long, value_name = "BOOL", env = "SKYWARDEN_WATCH_RULES")]
    pub watch_rules: Option<bool>,
    /// Log format: json or text [default: json].
    #[arg(long, value_name = "FORMAT", env = "SKYWARDEN_LOG_FORMAT")]
    pub log_format: Option<String>,
    #[command(flatten)]
    pub labeler: LabelerArgs,
    #[command(flatten)]
    pub moderation: ModerationArgs,
}

/// Where HTTP listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2480";

/// Reads the config file (`None`: every setting absent).
pub fn read_file_config(path: Option<&std::path::Path>) -> Result<FileConfig, String> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Ok(FileConfig::default()),
    }
}

/// The config file: the same settings as the flags, plus structured quotas, webhooks and the
/// labeler's declaration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) listen: Option<String>,
    relay: Option<String>,
    jetstream: Option<String>,
    archive: Option<PathBuf>,
    cursor: Option<i64>,
    rules: Option<PathBuf>,
    plc: Option<String>,
    partitions: Option<usize>,
    queue_capacity: Option<usize>,
    batch_size: Option<usize>,
    checkpoint_interval_ms: Option<u64>,
    checkpoint_events: Option<u64>,
    commit_window_ms: Option<u64>,
    identity_budget_ms: Option<u64>,
    watch_rules: Option<bool>,
    log_format: Option<String>,
    #[serde(default)]
    quotas: BTreeMap<String, i64>,
    #[serde(default)]
    webhook: Vec<FileWebhook>,
    labeler_enabled: Option<bool>,
    labeler_did: Option<String>,
    public_url: Option<String>,
    signing_key_type: Option<String>,
    postgres_url: Option<String>,
    #[serde(default)]
    labeler: skywarden_labeler::service::Declaration,
    #[serde(default)]
    moderation: ModerationFile,
}

impl FileConfig {
    /// The labeler's settings from the file.
    pub fn labeler_file(&mut self) -> LabelerFile {
        LabelerFile {
            labeler_enabled: self.labeler_enabled,
            labeler_did: self.labeler_did.take(),
            public_url: self.public_url.take(),
            signing_key_type: self.signing_key_type.take(),
            postgres_url: self.postgres_url.take(),
            labeler: std::mem::take(&mut self.labeler),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhook {
    name: String,
    url: String,
    secret: Option<String>,
    secret_env: Option<String>,
    #[serde(default)]
    all_actions: bool,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
}

/// Settings after merging flags, environment and file.
#[derive(Debug)]
pub struct Settings {
    data_dir: PathBuf,
    listen: String,
    source: SourceSetting,
    start_cursor: Option<i64>,
    rules: Option<PathBuf>,
    plc: Option<String>,
    engine: EngineConfig,
    webhooks: Vec<WebhookSinkConfig>,
    watch_rules: bool,
    /// `json` or `text`.
    pub log_format: String,
    labeler: LabelerSettings,
    moderation: ModerationSettings,
}

#[derive(Debug)]
enum SourceSetting {
    Relay(String),
    Jetstream(String),
    Archive(PathBuf),
}

impl ServeArgs {
    /// Merges flags and environment (already in `self`) over the config file and defaults.
    pub fn settings(self) -> Result<Settings, String> {
        let mut file = read_file_config(self.config.as_deref())?;
        let labeler_file = file.labeler_file();
        let relay = self.relay.or(file.relay);
        let jetstream = self.jetstream.or(file.jetstream);
        let archive = self.archive.or(file.archive);
        let source = match (relay, jetstream, archive) {
            (Some(r), None, None) => SourceSetting::Relay(r),
            (None, Some(j), None) => SourceSetting::Jetstream(j),
            (None, None, Some(a)) => SourceSetting::Archive(a),
            (None, None, None) => {
                return Err("choose one source: --relay, --jetstream or --archive".into());
            }
            _ => return Err("choose only one source of --relay, --jetstream and --archive".into()),
        };
        let mut quotas = file.quotas;
        for q in &self.quotas {
            let (verb, n) = q
                .split_once('=')
                .ok_or_else(|| format!("--quota {q}: expected VERB=N"))?;
            let n: i64 = n
                .parse()
                .map_err(|_| format!("--quota {q}: {n} is not a number"))?;
            quotas.insert(verb.to_string(), n);
        }
        let known = [
            "label",
            "negate_label",
            "tag",
            "flag",
            "report",
            "takedown",
            "escalate",
            "acknowledge",
            "comment",
            "notify",
        ];
        if let Some(v) = quotas.keys().find(|v| !known.contains(&v.as_str())) {
            return Err(format!(
                "quota for unknown verb `{v}`; verbs are {}",
                known.join(", ")
            ));
        }
        let mut webhooks = Vec::new();
        for w in file.webhook {
            let secret = match (&w.secret, &w.secret_env) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                    format!("webhook {}: environment variable {var} is not set", w.name)
                })?),
                (None, None) => None,
            };
            webhooks.push(webhook(
                &w.name,
                &w.url,
                secret,
                w.all_actions,
                w.timeout_ms,
                w.max_attempts,
            )?);
        }
        for w in &self.webhooks {
            let (name, url) = w
                .split_once('=')
                .ok_or_else(|| format!("--webhook {w}: expected NAME=URL"))?;
            let var = format!(
                "SKYWARDEN_WEBHOOK_{}_SECRET",
                name.to_ascii_uppercase().replace('-', "_")
            );
            webhooks.push(webhook(
                name,
                url,
                std::env::var(var).ok(),
                false,
                None,
                None,
            )?);
        }
        let defaults = EngineConfig::default();
        let engine = EngineConfig {
            partitions: self
                .partitions
                .or(file.partitions)
                .unwrap_or(defaults.partitions),
            queue_capacity: self
                .queue_capacity
                .or(file.queue_capacity)
                .unwrap_or(defaults.queue_capacity),
            batch_size: self
                .batch_size
                .or(file.batch_size)
                .unwrap_or(defaults.batch_size),
            checkpoint_interval: self
                .checkpoint_interval_ms
                .or(file.checkpoint_interval_ms)
                .map_or(defaults.checkpoint_interval, Duration::from_millis),
            checkpoint_events: self
                .checkpoint_events
                .or(file.checkpoint_events)
                .unwrap_or(defaults.checkpoint_events),
            commit_window: self
                .commit_window_ms
                .or(file.commit_window_ms)
                .map_or(defaults.commit_window, Duration::from_millis),
            quotas,
            identity_budget: self
                .identity_budget_ms
                .or(file.identity_budget_ms)
                .map_or(defaults.identity_budget, Duration::from_millis),
            source_name: match &source {
                SourceSetting::Relay(u) => format!("relay:{u}"),
                SourceSetting::Jetstream(u) => format!("jetstream:{u}"),
                SourceSetting::Archive(p) => format!(
                    "archive:{}",
                    std::fs::canonicalize(p)
                        .unwrap_or_else(|_| p.clone())
                        .display()
                ),
            },
        };
        let log_format = self
            .log_format
            .or(file.log_format)
            .unwrap_or_else(|| "json".into());
        if log_format != "json" && log_format != "text" {
            return Err(format!("log format `{log_format}`: expected json or text"));
        }
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let labeler = self.labeler.settings(labeler_file, &listen)?;
        let moderation = self
            .moderation
            .settings(std::mem::take(&mut file.moderation))?;
        Ok(Settings {
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("skywarden-data")),
            listen,
            source,
            start_cursor: self.cursor.or(file.cursor),
            rules: self.rules.or(file.rules),
            plc: self.plc.or(file.plc),
            engine,
            webhooks,
            watch_rules: self.watch_rules.or(file.watch_rules).unwrap_or(true),
            log_format,
            labeler,
            moderation,
        })
    }
}

fn webhook(
    name: &str,
    url: &str,
    secret: Option<String>,
    all_actions: bool,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
) -> Result<WebhookSinkConfig, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("webhook {name}: bad URL: {e}"))?;
    Ok(WebhookSinkConfig {
        name: name.to_string(),
        webhook: WebhookConfig {
            url: parsed,
            secret,
            timeout: Duration::from_millis(timeout_ms.unwrap_or(10_000)),
            max_attempts: max_attempts.unwrap_or(5),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        },
        all_actions,
        batch_size: 100,
    })
}

/// Runs the service until the source ends (archives) or SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> Result<(), String> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", settings.data_dir.display()))?;
    let store = Store::open(&settings.data_dir)
        .await
        .map_err(|e| e.to_string())?;
    let describe = |diagnostics: Vec<skywarden_rules::Diagnostic>| {
        let lines: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        format!("the ruleset has errors:\n{}", lines.join("\n"))
    };
    let (ruleset, origin) = match &settings.rules {
        Some(dir) => (
            skywarden_rules::Ruleset::load_dir(dir).map_err(describe)?,
            RulesOrigin::Dir(dir.clone()),
        ),
        None => (default_rules::load().map_err(describe)?, RulesOrigin::Fixed),
    };
    tracing::info!(version = %ruleset.version, rules = ruleset.rules.len(), "ruleset loaded");
    let rules = Arc::new(RulesSlot::new(ruleset, origin));
    let identity = match &settings.plc {
        Some(plc) => Some(
            IdentityResolver::new(IdentityConfig {
                plc_url: url::Url::parse(plc).map_err(|e| format!("--plc {plc}: {e}"))?,
                ..IdentityConfig::default()
            })
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    // Service auth resolves callers' DIDs even when enrichment does not.
    let moderation_identity = match &identity {
        Some(i) => i.clone(),
        None => IdentityResolver::new(IdentityConfig::default()).map_err(|e| e.to_string())?,
    };
    let engine = Engine::start(settings.engine, store.clone(), rules.clone(), identity)
        .await
        .map_err(|e| e.to_string())?;
    let cursor = engine.resume_cursor().or(settings.start_cursor);
    let source = open_source(&settings.source, cursor)?;
    let metrics = engine.metrics();
    if let Ok(mut slot) = metrics.live.source.lock() {
        *slot = Some(source.metrics());
    }

    let readiness = Arc::new(Mutex::new(Readiness::Starting));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (sinks_stop_tx, sinks_stop_rx) = watch::channel(false);
    let labeler = if settings.labeler.enabled {
        Some(
            crate::labeler_cmd::start(
                &settings.labeler,
                &settings.data_dir,
                &store,
                engine.sinks_wake(),
                sinks_stop_rx.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    let moderation = if settings.moderation.enabled() {
        let reload = rules.clone();
        Some(
            crate::moderation_cmd::start(
                &settings.moderation,
                crate::moderation_cmd::Wiring {
                    data_dir: &settings.data_dir,
                    effects: &store,
                    labeler_settings: &settings.labeler,
                    labeler: labeler.as_ref(),
                    identity: moderation_identity,
                    rules_dir: rules.dir().map(std::path::Path::to_path_buf),
                    on_set_change: Arc::new(move || reload.request_reload()),
                    effects_wake: engine.sinks_wake(),
                    shutdown: sinks_stop_rx.clone(),
                },
            )
            .await?,
        )
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let http = {
        let state = AppState {
            metrics: metrics.clone(),
            rules: rules.clone(),
            readiness: readiness.clone(),
            labeler: labeler.as_ref().map(|l| l.api.clone()),
            moderation: moderation.as_ref().map(|m| m.service.clone()),
        };
        let mut stop = shutdown_rx.clone();
        tokio::spawn(skywarden_server::serve(listener, state, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };
    spawn_signals(rules.clone(), shutdown_tx.clone());
    if settings.watch_rules && rules.dir().is_some() {
        tokio::spawn(skywarden_engine::rules::watch_dir(
            rules.clone(),
            Duration::from_secs(1),
        ));
    }
    let mut sinks = Vec::new();
    for w in &settings.webhooks {
        sinks.push(tokio::spawn(run_webhook_sink(
            store.clone(),
            w.clone(),
            engine.sinks_wake(),
            metrics.clone(),
            sinks_stop_rx.clone(),
        )));
    }
    tracing::info!(listen = %local, cursor = ?cursor, "serving");
    eprintln!("skywarden serving on http://{local} (resuming after cursor {cursor:?})");
    set(&readiness, Readiness::Ready);
    // The engine's loop runs as a task, not on this thread: the runtime's threads poll the
    // socket themselves, so each wait for the next frame is not a wake-up handed from a
    // runtime thread to this one.
    let result = match tokio::spawn(async move { engine.run(source, shutdown_rx).await }).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(skywarden_engine::EngineError::Restore(format!(
            "the engine task stopped: {e}"
        ))),
    };
    set(&readiness, Readiness::Stopping);
    match &result {
        Ok(summary) => tracing::info!(
            events = summary.events,
            checkpoints = summary.checkpoints,
            cursor = ?summary.cursor,
            source_ended = summary.source_ended,
            "engine stopped"
        ),
        Err(e) => {
            set(&readiness, Readiness::Failed(e.to_string()));
            tracing::error!(error = %e, "engine stopped with an error");
        }
    }
    // Let sinks catch up with the log for a little while, then stop them.
    let mut cursors: Vec<String> = settings
        .webhooks
        .iter()
        .map(|w| format!("webhook:{}", w.name))
        .collect();
    if labeler.is_some() {
        cursors.push(skywarden_labeler::sink::CURSOR.into());
    }
    if moderation.is_some() {
        cursors.push(skywarden_moderation::sinks::ENGINE_CURSOR.into());
    }
    // Each sink may take as long as it keeps moving; one that makes no progress for 10 s is
    // left behind (it resumes from its cursor at the next start).
    for name in &cursors {
        let mut last = -1;
        let mut stalled_since = tokio::time::Instant::now();
        loop {
            let at = store.sink_cursor(name).await.unwrap_or(0);
            let caught_up = store
                .effects_after(at, 1)
                .await
                .map(|r| r.is_empty())
                .unwrap_or(true);
            if caught_up {
                break;
            }
            if at != last {
                last = at;
                stalled_since = tokio::time::Instant::now();
            } else if stalled_since.elapsed() > Duration::from_secs(10) {
                tracing::warn!(sink = %name, cursor = at, "sink made no progress for 10 s; stopping it, it resumes from its cursor at the next start");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = sinks_stop_tx.send(true);
    for s in sinks {
        let _ = s.await;
    }
    if let Some(labeler) = labeler {
        labeler.join().await;
    }
    if let Some(moderation) = moderation {
        moderation.join().await;
    }
    let _ = shutdown_tx.send(true);
    let _ = http.await;
    store.close().await;
    result.map(|_| ()).map_err(|e| e.to_string())
}

fn set(readiness: &Mutex<Readiness>, value: Readiness) {
    if let Ok(mut r) = readiness.lock() {
        *r = value;
    }
}

fn open_source(setting: &SourceSetting, cursor: Option<i64>) -> Result<Source, String> {
    let config = SourceConfig {
        cursor,
        ..SourceConfig::default()
    };
    match setting {
        SourceSetting::Relay(url) => Source::firehose(url, WsSettings::default(), config),
        SourceSetting::Jetstream(url) => {
            Source::jetstream(url, Vec::new(), true, WsSettings::default(), config)
        }
        SourceSetting::Archive(path) => Source::archive(path, config),
    }
    .map_err(|e| e.to_string())
}

/// SIGHUP requests a ruleset reload; SIGINT and SIGTERM a graceful shutdown.
fn spawn_signals(rules: Arc<RulesSlot>, shutdown: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: ruleset reload requested");
                    rules.request_reload();
                }
            });
        }
    }
    tokio::spawn(async move {
        crate::stop_requested().await;
        tracing::info!("stop requested (SIGINT or SIGTERM): draining and checkpointing");
        let _ = shutdown.send(true);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "skywarden-config-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let path = file(
            r#"
data_dir = "/var/lib/skywarden"
archive = "stream.skwa"
partitions = 3
checkpoint_interval_ms = 2500
log_format = "text"

[quotas]
takedown = 50
label = 1000

[[webhook]]
name = "slack"
url = "https://hooks.example/abc"
secret = "from-file"
all_actions = true
"#,
        );
        let args = ServeArgs {
            config: Some(path.clone()),
            partitions: Some(5),
            quotas: vec!["takedown=7".into()],
            ..ServeArgs::default()
        };
        let s = args.settings().unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/skywarden"));
        assert_eq!(s.engine.partitions, 5, "the flag wins");
        assert_eq!(s.engine.checkpoint_interval, Duration::from_millis(2500));
        assert_eq!(s.engine.quotas["takedown"], 7);
        assert_eq!(s.engine.quotas["label"], 1000);
        assert_eq!(s.log_format, "text");
        assert_eq!(s.listen, "127.0.0.1:2480", "default");
        assert!(matches!(s.source, SourceSetting::Archive(_)));
        assert_eq!(s.webhooks.len(), 1);
        assert!(s.webhooks[0].all_actions);
        assert_eq!(s.webhooks[0].webhook.secret.as_deref(), Some("from-file"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn mistakes_are_refused_with_what_and_where() {
        let two_sources = ServeArgs {
            relay: Some("wss://a".into()),
            archive: Some("b".into()),
            ..ServeArgs::default()
        };
        assert!(
            two_sources
                .settings()
                .unwrap_err()
                .contains("only one source")
        );
        let none = ServeArgs::default();
        assert!(none.settings().unwrap_err().contains("choose one source"));
        let bad_quota = ServeArgs {
            relay: Some("wss://a".into()),
            quotas: vec!["takedwn=3".into()],
            ..ServeArgs::default()
        };
        assert!(
            bad_quota
                .settings()
                .unwrap_err()
                .contains("unknown verb `takedwn`")
        );
        let path = file("relay = \"wss://a\"\nparttions = 2\n");
        let typo = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let e = typo.settings().unwrap_err();
        assert!(
            e.contains("parttions") && e.contains(&path.display().to_string()),
            "{e}"
        );
        std::fs::remove_file(path).unwrap();
    }
}
