//! The moderation backend's settings and wiring for `skywarden serve`: the store (SQLite in
//! the data directory, or the labeler's Postgres), the service, and its sinks.

use crate::labeler_cmd::{LabelerSettings, RunningLabeler};
use clap::Args;
use serde::Deserialize;
use skywarden_engine::identity::IdentityResolver;
use skywarden_moderation::metrics::ModerationMetrics;
use skywarden_moderation::service::{Moderation, ModerationConfig};
use skywarden_moderation::sets::ListSets;
use skywarden_moderation::sinks::{
    EventSink, LabelEvents, OzoneForwarder, PdsEnforcement, run_engine_sink, run_event_sink,
};
use skywarden_server::moderation::ResolverAdapter;
use skywarden_store::Store;
use skywarden_store::moderation::{ModStore, PgModStore, SqliteModStore};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{Notify, watch};

/// Moderation flags of `skywarden serve`.
#[derive(Args, Debug, Default)]
pub struct ModerationArgs {
    /// Serve the moderation API (createReport, tools.ozone.*) and file the engine's actions
    /// in its queue [default: true].
    #[arg(long, value_name = "BOOL", env = "SKYWARDEN_MODERATION")]
    pub moderation: Option<bool>,
    /// Enforce takedowns on this PDS through com.atproto.admin.updateSubjectStatus; the PDS
    /// admin password comes from SKYWARDEN_PDS_ADMIN_PASSWORD.
    #[arg(long, value_name = "URL", env = "SKYWARDEN_ENFORCE_PDS")]
    pub enforce_pds: Option<String>,
    /// File the engine's moderation events on this Ozone too (tools.ozone.moderation.emitEvent);
    /// its admin password comes from SKYWARDEN_OZONE_ADMIN_PASSWORD.
    #[arg(long, value_name = "URL", env = "SKYWARDEN_FORWARD_OZONE")]
    pub forward_ozone: Option<String>,
    /// Reports one account may file per minute [default: 30].
    #[arg(long, value_name = "N", env = "SKYWARDEN_REPORTS_PER_MINUTE")]
    pub reports_per_minute: Option<u32>,
}

/// The config file's `[moderation]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationFile {
    enabled: Option<bool>,
    /// Prefer SKYWARDEN_ADMIN_PASSWORD: a file is easier to leak than the environment.
    admin_password: Option<String>,
    enforce_pds: Option<String>,
    forward_ozone: Option<String>,
    reports_per_minute: Option<u32>,
    appview_url: Option<String>,
}

/// Merged moderation settings.
#[derive(Debug)]
pub struct ModerationSettings {
    enabled: bool,
    admin_password: Option<String>,
    enforce_pds: Option<(url::Url, String)>,
    forward_ozone: Option<(url::Url, String)>,
    reports_per_minute: u32,
    appview_url: Option<String>,
}

fn url_with_password(
    what: &str,
    url: Option<String>,
    password_var: &str,
) -> Result<Option<(url::Url, String)>, String> {
    let Some(url) = url else { return Ok(None) };
    let parsed = url::Url::parse(&url).map_err(|e| format!("{what} `{url}`: {e}"))?;
    let password = std::env::var(password_var)
        .map_err(|_| format!("{what} is set, but {password_var} (its admin password) is not"))?;
    Ok(Some((parsed, password)))
}

impl ModerationArgs {
    /// Merges flags and environment over the file.
    pub fn settings(self, file: ModerationFile) -> Result<ModerationSettings, String> {
        let admin_password = std::env::var("SKYWARDEN_ADMIN_PASSWORD")
            .ok()
            .or(file.admin_password)
            .filter(|p| !p.is_empty());
        if admin_password.as_ref().is_some_and(|p| p.len() < 12) {
            return Err("the admin password must be at least 12 characters".into());
        }
        Ok(ModerationSettings {
            enabled: self.moderation.or(file.enabled).unwrap_or(true),
            admin_password,
            enforce_pds: url_with_password(
                "--enforce-pds",
                self.enforce_pds.or(file.enforce_pds),
                "SKYWARDEN_PDS_ADMIN_PASSWORD",
            )?,
            forward_ozone: url_with_password(
                "--forward-ozone",
                self.forward_ozone.or(file.forward_ozone),
                "SKYWARDEN_OZONE_ADMIN_PASSWORD",
            )?,
            reports_per_minute: self
                .reports_per_minute
                .or(file.reports_per_minute)
                .unwrap_or(30),
            appview_url: file.appview_url,
        })
    }
}

impl ModerationSettings {
    /// Whether the backend runs.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

/// The running backend.
pub struct RunningModeration {
    /// What the HTTP layer serves.
    pub service: Arc<Moderation>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningModeration {
    /// Waits for the sinks to stop (after `shutdown` fired).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Everything the backend needs from the rest of `serve`.
pub struct Wiring<'a> {
    /// The data directory.
    pub data_dir: &'a Path,
    /// The effect store.
    pub effects: &'a Store,
    /// The labeler settings (the service DID, the Postgres URL).
    pub labeler_settings: &'a LabelerSettings,
    /// The running labeler, if any.
    pub labeler: Option<&'a RunningLabeler>,
    /// Resolves callers' keys and handles.
    pub identity: IdentityResolver,
    /// Sets live in this rules directory (`None`: the built-in ruleset).
    pub rules_dir: Option<std::path::PathBuf>,
    /// Called when a set changes (requests a ruleset reload).
    pub on_set_change: Arc<dyn Fn() + Send + Sync>,
    /// Signalled when the engine logs effects.
    pub effects_wake: Arc<Notify>,
    /// Stops the sinks.
    pub shutdown: watch::Receiver<bool>,
}

/// Opens the store, builds the service and starts its sinks.
pub async fn start(
    settings: &ModerationSettings,
    w: Wiring<'_>,
) -> Result<RunningModeration, String> {
    let store: Arc<dyn ModStore> = match &w.labeler_settings.postgres_url {
        Some(url) => Arc::new(
            PgModStore::connect(url, None)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => Arc::new(
            SqliteModStore::open(w.data_dir, 4)
                .await
                .map_err(|e| e.to_string())?,
        ),
    };
    let metrics = Arc::new(ModerationMetrics::default());
    let events_wake = Arc::new(Notify::new());
    let resolver = Arc::new(ResolverAdapter(w.identity));
    let service = Arc::new(Moderation::new(
        store.clone(),
        resolver.clone(),
        resolver,
        w.labeler.map(|l| l.api.hub.store().clone()),
        ListSets::new(w.rules_dir, w.on_set_change),
        ModerationConfig {
            service_did: w.labeler_settings.did.clone(),
            admin_password: settings.admin_password.clone(),
            reports_per_minute: settings.reports_per_minute,
            pds_url: settings.enforce_pds.as_ref().map(|(u, _)| u.to_string()),
            appview_url: settings.appview_url.clone(),
        },
        metrics.clone(),
        events_wake.clone(),
    ));
    let mut tasks = vec![tokio::spawn(run_engine_sink(
        w.effects.clone(),
        service.clone(),
        w.effects_wake,
        w.shutdown.clone(),
    ))];
    let mut sinks: Vec<Arc<dyn EventSink>> = Vec::new();
    if let Some(l) = w.labeler {
        sinks.push(Arc::new(LabelEvents {
            hub: l.api.hub.clone(),
            key: l.key.clone(),
            labeler_did: w.labeler_settings.did.clone(),
            metrics: metrics.clone(),
        }));
    }
    if let Some((url, password)) = &settings.enforce_pds {
        sinks.push(Arc::new(PdsEnforcement::new(
            url.clone(),
            password.clone(),
            metrics.clone(),
        )));
    }
    if let Some((url, password)) = &settings.forward_ozone {
        sinks.push(Arc::new(OzoneForwarder::new(
            url.clone(),
            password.clone(),
            w.labeler_settings.did.clone(),
            metrics.clone(),
        )));
    }
    for sink in sinks {
        tracing::info!(sink = sink.name(), "moderation event sink started");
        tasks.push(tokio::spawn(run_event_sink(
            store.clone(),
            sink,
            metrics.clone(),
            events_wake.clone(),
            w.shutdown.clone(),
        )));
    }
    if settings.admin_password.is_none() {
        tracing::info!(
            "no admin password set (SKYWARDEN_ADMIN_PASSWORD): operator Basic auth is off; team members use service auth"
        );
    }
    tracing::info!(service_did = %w.labeler_settings.did, "moderation API ready");
    Ok(RunningModeration { service, tasks })
}
