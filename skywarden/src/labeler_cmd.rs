//! The labeler's wiring: its settings (shared by `serve`, `keys` and `labeler`), opening the
//! key and the label store, starting the fan-out and the label sink, and the `keys show` and
//! `labeler declare` commands.

use clap::{Args, Subcommand};
use skywarden_atproto::crypto::Curve;
use skywarden_labeler::hub::{HubConfig, LabelHub};
use skywarden_labeler::key::{KeyOrigin, LabelerKey, parse_curve};
use skywarden_labeler::metrics::LabelerMetrics;
use skywarden_labeler::service::{Declaration, did_web_document, did_web_for};
use skywarden_labeler::sink::{LabelSinkConfig, resign_all, run_label_sink};
use skywarden_server::LabelerApi;
use skywarden_store::Store;
use skywarden_store::labels::{LabelStore, PgLabelStore, SqliteLabelStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{Notify, watch};

/// The environment variable holding the signing key as hex (never a flag: flags show in `ps`).
pub const KEY_HEX_ENV: &str = "SKYWARDEN_SIGNING_KEY_HEX";

/// Labeler flags of `serve` (and of `keys`/`labeler`). Each may also come from
/// `SKYWARDEN_<NAME>` or the config file.
#[derive(Args, Debug, Default, Clone)]
pub struct LabelerArgs {
    /// Run the labeler: sign label effects, serve subscribeLabels and queryLabels [default: true].
    #[arg(long, value_name = "BOOL", env = "SKYWARDEN_LABELER")]
    pub labeler: Option<bool>,
    /// The labeler's DID, `src` of every label [default: did:web of --public-url].
    #[arg(long, value_name = "DID", env = "SKYWARDEN_LABELER_DID")]
    pub labeler_did: Option<String>,
    /// The public base URL of this service (the labeler's endpoint in its DID document)
    /// [default: http://<listen>].
    #[arg(long, value_name = "URL", env = "SKYWARDEN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Curve of a generated signing key: k256 or p256 [default: k256]. The key itself comes
    /// from SKYWARDEN_SIGNING_KEY_HEX, or the data directory's labeler.key.
    #[arg(long, value_name = "CURVE", env = "SKYWARDEN_SIGNING_KEY_TYPE")]
    pub signing_key_type: Option<String>,
    /// Keep labels in Postgres (postgres://…) instead of the data directory's SQLite.
    #[arg(long, value_name = "URL", env = "SKYWARDEN_POSTGRES_URL")]
    pub postgres_url: Option<String>,
}

/// The labeler part of the config file: top-level keys, plus the `[labeler]` declaration.
#[derive(Debug, Default)]
pub struct LabelerFile {
    /// `labeler_enabled` in the file.
    pub labeler_enabled: Option<bool>,
    /// `labeler_did`.
    pub labeler_did: Option<String>,
    /// `public_url`.
    pub public_url: Option<String>,
    /// `signing_key_type`.
    pub signing_key_type: Option<String>,
    /// `postgres_url`.
    pub postgres_url: Option<String>,
    /// `[labeler]`: label value definitions and report policy.
    pub labeler: Declaration,
}

/// Labeler settings after merging flags, environment and file.
#[derive(Debug, Clone)]
pub struct LabelerSettings {
    /// Whether the labeler runs.
    pub enabled: bool,
    /// The labeler's DID.
    pub did: String,
    /// Public base URL.
    pub public_url: String,
    /// Curve for a generated key.
    pub curve: Curve,
    /// Postgres URL for labels, if not SQLite.
    pub postgres_url: Option<String>,
    /// The declaration (`[labeler]`).
    pub declaration: Declaration,
}

impl LabelerArgs {
    /// Merges flags/environment over the file; `listen` gives the default public URL.
    pub fn settings(self, file: LabelerFile, listen: &str) -> Result<LabelerSettings, String> {
        let public_url = self
            .public_url
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"));
        url::Url::parse(&public_url).map_err(|e| format!("public_url `{public_url}`: {e}"))?;
        let did = match self.labeler_did.or(file.labeler_did) {
            Some(did) => did,
            None => did_web_for(&public_url).ok_or_else(|| {
                format!("public_url `{public_url}`: cannot derive a did:web; set labeler_did")
            })?,
        };
        skywarden_atproto::syntax::Did::new(&did).map_err(|e| format!("labeler_did: {e}"))?;
        let curve = parse_curve(
            self.signing_key_type
                .or(file.signing_key_type)
                .as_deref()
                .unwrap_or("k256"),
        )
        .map_err(|e| format!("signing_key_type: {e}"))?;
        file.labeler.validate()?;
        Ok(LabelerSettings {
            enabled: self.labeler.or(file.labeler_enabled).unwrap_or(true),
            did,
            public_url: public_url.trim_end_matches('/').to_string(),
            curve,
            postgres_url: self.postgres_url.or(file.postgres_url),
            declaration: file.labeler,
        })
    }
}

/// The signing key: SKYWARDEN_SIGNING_KEY_HEX if set (on `curve`), else the data directory's
/// key file, generated on first use.
pub fn open_key(settings: &LabelerSettings, data_dir: &Path) -> Result<LabelerKey, String> {
    if let Ok(hex) = std::env::var(KEY_HEX_ENV) {
        return LabelerKey::from_hex(settings.curve, &hex, KEY_HEX_ENV).map_err(|e| e.to_string());
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let (key, origin) =
        LabelerKey::load_or_generate(data_dir, settings.curve).map_err(|e| e.to_string())?;
    if let KeyOrigin::Generated(path) = origin {
        tracing::info!(path = %path.display(), did_key = key.did_key(), "generated a labeler signing key");
        eprintln!(
            "skywarden: generated a {} labeler signing key in {} ({})",
            key.curve_name(),
            path.display(),
            key.did_key()
        );
    }
    Ok(key)
}

/// The label store the settings name. The SQLite one gets connections of its own, so that
/// public readers (subscribers, queries) never hold the engine's.
pub async fn open_label_store(
    settings: &LabelerSettings,
    data_dir: &Path,
) -> Result<Arc<dyn LabelStore>, String> {
    Ok(match &settings.postgres_url {
        Some(url) => Arc::new(
            PgLabelStore::connect(url, None)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => Arc::new(
            SqliteLabelStore::open(data_dir, 4)
                .await
                .map_err(|e| e.to_string())?,
        ),
    })
}

/// A running labeler.
pub struct RunningLabeler {
    /// What the HTTP layer serves.
    pub api: LabelerApi,
    /// The signing key.
    pub key: Arc<LabelerKey>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningLabeler {
    /// Waits for the publisher and the sink to stop (after `shutdown` fired).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Opens the key and the store, re-signs labels signed by an earlier key, and starts the
/// publisher and the label sink (woken by `wake`, stopped by `shutdown`).
pub async fn start(
    settings: &LabelerSettings,
    data_dir: &Path,
    store: &Store,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> Result<RunningLabeler, String> {
    let key = Arc::new(open_key(settings, data_dir)?);
    let labels = open_label_store(settings, data_dir).await?;
    let hub = LabelHub::new(
        labels,
        Arc::new(LabelerMetrics::default()),
        HubConfig::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let resigned = resign_all(&hub, &key).await?;
    if resigned > 0 {
        tracing::info!(
            resigned,
            did_key = key.did_key(),
            "re-signed labels made with an earlier key"
        );
    }
    let did_document = settings
        .did
        .starts_with("did:web:")
        .then(|| did_web_document(&settings.did, &key.public(), &settings.public_url));
    tracing::info!(did = %settings.did, did_key = key.did_key(), "labeler ready");
    let tasks = vec![
        tokio::spawn(hub.clone().run(shutdown.clone())),
        tokio::spawn(run_label_sink(
            store.clone(),
            hub.clone(),
            key.clone(),
            LabelSinkConfig {
                labeler_did: settings.did.clone(),
                batch_size: 500,
            },
            wake,
            shutdown,
        )),
    ];
    Ok(RunningLabeler {
        api: LabelerApi { hub, did_document },
        key,
        tasks,
    })
}

/// `skywarden keys …`.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print the labeler's public key (generating the key on first use): the did:key to put
    /// under `#atproto_label` in the labeler's DID document.
    Show(ToolArgs),
}

/// `skywarden labeler …`.
#[derive(Subcommand, Debug)]
pub enum LabelerCommand {
    /// Print the `app.bsky.labeler.service` record built from the config file's `[labeler]`
    /// section, or write it to the labeler account's PDS.
    ///
    /// Examples:
    ///   skywarden labeler declare --config skywarden.toml
    ///   SKYWARDEN_PDS_PASSWORD=… skywarden labeler declare --config skywarden.toml \
    ///       --pds https://pds.example.org --identifier labeler.example.org
    #[command(verbatim_doc_comment)]
    Declare {
        #[command(flatten)]
        tool: ToolArgs,
        /// Write the record to this PDS (with the account's password in SKYWARDEN_PDS_PASSWORD).
        #[arg(long, value_name = "URL")]
        pds: Option<String>,
        /// The labeler account's handle or DID on --pds.
        #[arg(long, value_name = "HANDLE")]
        identifier: Option<String>,
    },
    /// Print the DID document of a did:web labeler (what /.well-known/did.json serves).
    DidDocument(ToolArgs),
}

/// What the key and declaration tools read: the config file and the data directory.
#[derive(Args, Debug, Default)]
pub struct ToolArgs {
    /// The TOML config file `serve` reads.
    #[arg(long, value_name = "FILE", env = "SKYWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory [default: ./skywarden-data].
    #[arg(long, value_name = "DIR", env = "SKYWARDEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub labeler: LabelerArgs,
}

impl ToolArgs {
    fn resolve(self) -> Result<(LabelerSettings, PathBuf), String> {
        let mut file = crate::serve_cmd::read_file_config(self.config.as_deref())?;
        let labeler_file = file.labeler_file();
        let data_dir = self
            .data_dir
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("skywarden-data"));
        let listen = file
            .listen
            .clone()
            .unwrap_or_else(|| crate::serve_cmd::DEFAULT_LISTEN.into());
        let settings = self.labeler.settings(labeler_file, &listen)?;
        Ok((settings, data_dir))
    }
}

/// Runs `skywarden keys …`.
pub fn keys(command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Show(args) => {
            let (settings, data_dir) = args.resolve()?;
            let key = open_key(&settings, &data_dir)?;
            let out = serde_json::json!({
                "curve": key.curve_name(),
                "didKey": key.did_key(),
                "publicKeyMultibase": key.public().to_multikey(),
                "verificationMethod": {
                    "id": format!("{}#atproto_label", settings.did),
                    "type": "Multikey",
                    "controller": settings.did,
                    "publicKeyMultibase": key.public().to_multikey(),
                },
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
    }
}

/// Runs `skywarden labeler …`.
pub async fn labeler(command: LabelerCommand) -> Result<(), String> {
    match command {
        LabelerCommand::DidDocument(args) => {
            let (settings, data_dir) = args.resolve()?;
            let key = open_key(&settings, &data_dir)?;
            let doc = did_web_document(&settings.did, &key.public(), &settings.public_url);
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            Ok(())
        }
        LabelerCommand::Declare {
            tool,
            pds,
            identifier,
        } => {
            let (settings, _) = tool.resolve()?;
            if settings.declaration.labels.is_empty() {
                return Err(
                    "the config file declares no label values: add [[labeler.label]] entries (see docs/labeler.md)".into(),
                );
            }
            let now = skywarden_atproto::syntax::Datetime::from_timestamp_micros(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64),
            )
            .map_err(|e| e.to_string())?;
            let record = settings.declaration.record(now.as_str());
            match (pds, identifier) {
                (None, None) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&record).unwrap_or_default()
                    );
                    Ok(())
                }
                (Some(pds), Some(identifier)) => {
                    let password = std::env::var("SKYWARDEN_PDS_PASSWORD").map_err(|_| {
                        "set SKYWARDEN_PDS_PASSWORD to the labeler account's (app) password"
                            .to_string()
                    })?;
                    let uri = put_service_record(&pds, &identifier, &password, record).await?;
                    println!("{uri}");
                    Ok(())
                }
                _ => Err("--pds and --identifier go together".into()),
            }
        }
    }
}

/// Logs in to `pds` and writes the `app.bsky.labeler.service/self` record; returns its URI.
async fn put_service_record(
    pds: &str,
    identifier: &str,
    password: &str,
    record: serde_json::Value,
) -> Result<String, String> {
    let base = pds.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let xrpc_failure = |what: &str, status: reqwest::StatusCode, body: String| {
        format!("{what}: the PDS answered {status}: {body}")
    };
    let session = http
        .post(format!("{base}/xrpc/com.atproto.server.createSession"))
        .json(&serde_json::json!({ "identifier": identifier, "password": password }))
        .send()
        .await
        .map_err(|e| format!("createSession: {e}"))?;
    let status = session.status();
    let body = session.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(xrpc_failure("createSession", status, body));
    }
    let session: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let (Some(did), Some(jwt)) = (session["did"].as_str(), session["accessJwt"].as_str()) else {
        return Err("createSession: the PDS's answer has no did or accessJwt".into());
    };
    let put = http
        .post(format!("{base}/xrpc/com.atproto.repo.putRecord"))
        .bearer_auth(jwt)
        .json(&serde_json::json!({
            "repo": did,
            "collection": "app.bsky.labeler.service",
            "rkey": "self",
            "record": record,
        }))
        .send()
        .await
        .map_err(|e| format!("putRecord: {e}"))?;
    let status = put.status();
    let body = put.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(xrpc_failure("putRecord", status, body));
    }
    let out: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(out["uri"].as_str().unwrap_or_default().to_string())
}
