//! The running ruleset and its reloads.
//!
//! The active ruleset and its counters form one [`Active`] value behind a lock; workers take
//! an `Arc` of it per batch. A reload (SIGHUP, a file change under the rules directory, or an
//! explicit request) is only *requested* here: the pipeline carries it out at a barrier, when
//! every dispatched event's effects are durable, so the swap falls between events and counters
//! are carried over consistently.

use crate::state::SharedCounters;
use skywarden_rules::{Diagnostic, Ruleset};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// Shards of the shared counters: fixed, so snapshots survive a change of partition count.
pub const COUNTER_SHARDS: usize = 64;

/// A ruleset with its counters.
pub struct Active {
    /// The compiled ruleset.
    pub ruleset: Ruleset,
    /// Its counters' state.
    pub counters: SharedCounters,
}

/// Where rulesets come from.
#[derive(Debug, Clone)]
pub enum RulesOrigin {
    /// A directory, reloadable.
    Dir(PathBuf),
    /// A ruleset fixed at start (the built-in default): reloads are refused.
    Fixed,
}

/// The outcome of the latest load or reload, for logs, `/xrpc/_health` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RulesStatus {
    /// Version of the running ruleset.
    pub version: String,
    /// Rules in it.
    pub rules: usize,
    /// Where it came from (`builtin` or the directory).
    pub origin: String,
    /// Errors of the last refused reload, if the last reload was refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_reload_errors: Vec<String>,
}

/// The active ruleset, the reload request flag and the status.
pub struct RulesSlot {
    active: RwLock<Arc<Active>>,
    origin: RulesOrigin,
    requested: AtomicBool,
    status: Mutex<RulesStatus>,
}

impl RulesSlot {
    /// A slot running `ruleset`.
    pub fn new(ruleset: Ruleset, origin: RulesOrigin) -> Self {
        let status = RulesStatus {
            version: ruleset.version.clone(),
            rules: ruleset.rules.len(),
            origin: match &origin {
                RulesOrigin::Dir(d) => d.display().to_string(),
                RulesOrigin::Fixed => "builtin".into(),
            },
            last_reload_errors: Vec::new(),
        };
        let counters = SharedCounters::new(&ruleset, COUNTER_SHARDS);
        RulesSlot {
            active: RwLock::new(Arc::new(Active { ruleset, counters })),
            origin,
            requested: AtomicBool::new(false),
            status: Mutex::new(status),
        }
    }

    /// The running ruleset and counters.
    pub fn active(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks for a reload at the next barrier.
    pub fn request_reload(&self) {
        self.requested.store(true, Ordering::Relaxed);
    }

    /// Whether a reload was requested (clears the request).
    pub fn take_request(&self) -> bool {
        self.requested.swap(false, Ordering::Relaxed)
    }

    /// Whether a reload is waiting.
    pub fn reload_pending(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// The status of the latest load.
    pub fn status(&self) -> RulesStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the active counters' state (restore from a snapshot before the run starts).
    pub fn with_active_mut<T>(&self, f: impl FnOnce(&mut Active) -> T) -> Option<T> {
        let mut guard = self.active.write().unwrap_or_else(|p| p.into_inner());
        Arc::get_mut(&mut guard).map(f)
    }

    /// Loads the ruleset again from its directory and swaps it in. Must only be called when no
    /// worker is evaluating (at a barrier). On error the running ruleset stays and the errors
    /// are returned (and kept in the status).
    pub fn reload(&self) -> Result<String, Vec<String>> {
        let RulesOrigin::Dir(dir) = &self.origin else {
            let e = vec!["the built-in ruleset cannot be reloaded; start with --rules DIR".into()];
            self.set_errors(e.clone());
            return Err(e);
        };
        match Ruleset::load_dir(dir) {
            Ok(ruleset) => {
                let current = self.active();
                if ruleset.version == current.ruleset.version {
                    self.set_errors(Vec::new());
                    return Ok(ruleset.version);
                }
                let (counters, reset) = current.counters.carry_over(&ruleset);
                if !reset.is_empty() {
                    tracing::info!(counters = ?reset, "counters new or changed by the reload start empty");
                }
                let version = ruleset.version.clone();
                {
                    let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                    status.version = version.clone();
                    status.rules = ruleset.rules.len();
                    status.last_reload_errors.clear();
                }
                *self.active.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(Active { ruleset, counters });
                Ok(version)
            }
            Err(diagnostics) => {
                let errors: Vec<String> = diagnostics.iter().map(Diagnostic::to_string).collect();
                self.set_errors(errors.clone());
                Err(errors)
            }
        }
    }

    fn set_errors(&self, errors: Vec<String>) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_reload_errors = errors;
    }

    /// The directory to watch, if reloadable.
    pub fn dir(&self) -> Option<&Path> {
        match &self.origin {
            RulesOrigin::Dir(d) => Some(d),
            RulesOrigin::Fixed => None,
        }
    }
}

/// Size and modification time of every file under `dir`, sorted: changes when any rule or list
/// file is written, added or removed.
pub fn dir_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// Polls `slot`'s directory every `every` and requests a reload when a file changes.
pub async fn watch_dir(slot: Arc<RulesSlot>, every: Duration) {
    let Some(dir) = slot.dir().map(Path::to_path_buf) else {
        return;
    };
    let mut last = dir_fingerprint(&dir);
    loop {
        tokio::time::sleep(every).await;
        let now = dir_fingerprint(&dir);
        if now != last {
            tracing::info!(dir = %dir.display(), "rule files changed: reload requested");
            slot.request_reload();
            last = now;
        }
    }
}
