//! The pipeline: source → route → enrich → evaluate → effects → checkpoint.
//!
//! ```text
//!             ┌─ partition 0 (worker) ─┐
//! source ──▶ route by DID ─ partition 1 ─┼─▶ effect writer ─▶ effect log (store) ─▶ sinks
//!   ▲         └─ partition N ─────────┘          │
//!   └──────────── barrier: wait until durable ◀──┘──▶ checkpoint + snapshots
//! ```
//!
//! - The source task reads one event at a time and sends it to the partition of its DID over
//!   a bounded queue: when workers or the store are slow, the send waits, and the source stops
//!   reading (backpressure down to the socket).
//! - A worker evaluates its events in order, with the account state and identity known at that
//!   moment, and sends the batch's pending effects to the writer (bounded too).
//! - The writer commits each batch of effects in one transaction, then advances the
//!   partitions' durable watermarks.
//! - Every `checkpoint_interval` (or `checkpoint_events`), at shutdown, at the end of an archive
//!   and for a ruleset reload, the source task stops dispatching and waits until every
//!   dispatched event is durable (all watermarks caught up). It then writes, in one
//!   transaction, the counters, the account state and the source cursor. After a crash the
//!   engine restores that state and resumes the source after that cursor: events after it
//!   are evaluated again from the same state, and their effects, already logged or not, end up
//!   logged exactly once (idempotency keys).

use crate::effects::{self, EffectWriter, PendingEffect, Quotas, SettledStates};
use crate::identity::{IdentityResolver, Lookup};
use crate::metrics::Metrics;
use crate::rules::{Active, RulesSlot};
use crate::state::Accounts;
use futures_util::{FutureExt as _, StreamExt as _};
use skywarden_atproto::event::{Event, EventBody};
use skywarden_atproto::syntax::Datetime;
use skywarden_ingest::{Source, SourceError, now_micros};
use skywarden_rules::{Evaluator, Firing, Input, Mode};
use skywarden_store::{Store, StoreError};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Worker partitions (accounts are spread over them by DID).
    pub partitions: usize,
    /// Events each partition's queue holds before the source waits.
    pub queue_capacity: usize,
    /// Events a worker takes from its queue at once.
    pub batch_size: usize,
    /// Checkpoint at least this often.
    pub checkpoint_interval: Duration,
    /// Checkpoint at least every this many events.
    pub checkpoint_events: u64,
    /// Daily quotas per verb.
    pub quotas: Quotas,
    /// How long evaluation may wait for an identity not yet resolved.
    pub identity_budget: Duration,
    /// The checkpoint's name (one per source).
    pub source_name: String,
    /// Group commit: the effect writer commits at most once per window, so a busy stream's
    /// effects share transactions (each commit rewrites the random-key index pages it
    /// touches) at up to this much extra latency. Zero commits as soon as effects arrive.
    pub commit_window: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue_capacity: 4096,
            batch_size: 256,
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_events: 500_000,
            quotas: Quotas::new(),
            identity_budget: Duration::ZERO,
            source_name: "default".into(),
            commit_window: Duration::from_millis(50),
        }
    }
}

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The source failed for good.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Saved state could not be restored.
    #[error("restoring saved state: {0}")]
    Restore(String),
}

/// Where events come from: the ingest [`Source`], or anything else in tests.
pub trait EventSource: Send {
    /// The next event; `None` at the end of a finite source.
    fn next_event(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Event>, SourceError>> + Send;
}

impl EventSource for Source {
    async fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        Source::next_event(self).await
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Events dispatched.
    pub events: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// The last checkpointed cursor.
    pub cursor: Option<i64>,
    /// Whether the source ended (archive) rather than the run being stopped.
    pub source_ended: bool,
}

/// One event in this many is timed for `skywarden_evaluation_seconds`.
const EVALUATION_SAMPLE: usize = 16;

/// Events dispatched between two reads of the clock in the source loop.
const CLOCK_EVERY: u32 = 64;

/// The source loop's clock, read once per run of ready events instead of per event: again
/// after `CLOCK_EVERY` dispatches, and after every wait (`expire`). Dispatch stamps are then at
/// most that many events early, which saturated is tens of microseconds against latencies in
/// milliseconds.
struct CoarseClock {
    now: Instant,
    uses: u32,
}

impl CoarseClock {
    fn new() -> Self {
        CoarseClock {
            now: Instant::now(),
            uses: 0,
        }
    }

    /// The time, read again if the last reading is used up.
    fn now(&mut self) -> Instant {
        if self.uses >= CLOCK_EVERY {
            self.now = Instant::now();
            self.uses = 0;
        }
        self.now
    }

    /// The stamp for a dispatched event, and whether the clock was just read.
    fn stamp(&mut self) -> (Instant, bool) {
        let now = self.now();
        self.uses += 1;
        (now, self.uses == 1)
    }

    /// The next reading comes from the clock: the loop waited.
    fn expire(&mut self) {
        self.uses = CLOCK_EVERY;
    }
}

struct Envelope {
    event: Event,
    dispatched: Instant,
}

/// Emptied batches, handed back by the workers for the dispatcher to fill again: a batch's
/// memory stays warm instead of being freed on a worker's thread and allocated afresh on the
/// dispatcher's for every batch.
#[derive(Clone)]
struct BatchPool {
    spare: Arc<std::sync::Mutex<Vec<Vec<Envelope>>>>,
    batch_size: usize,
    /// Spare batches kept at most: as many as can be in flight.
    limit: usize,
}

impl BatchPool {
    fn new(batch_size: usize, limit: usize) -> Self {
        BatchPool {
            spare: Arc::default(),
            batch_size,
            limit,
        }
    }

    /// An empty batch with room for `batch_size` events.
    fn take(&self) -> Vec<Envelope> {
        let spare = self.spare.lock().ok().and_then(|mut spare| spare.pop());
        spare.unwrap_or_else(|| Vec::with_capacity(self.batch_size))
    }

    /// Returns an emptied batch to the pool.
    fn give(&self, mut batch: Vec<Envelope>) {
        batch.clear();
        if let Ok(mut spare) = self.spare.lock()
            && spare.len() < self.limit
        {
            spare.push(batch);
        }
    }
}

struct Done {
    partition: usize,
    events: u64,
    last_event_time: i64,
    dispatched: Vec<Instant>,
    effects: Vec<PendingEffect>,
}

/// The engine: configuration, store, rules, state and metrics.
pub struct Engine {
    config: EngineConfig,
    store: Store,
    rules: Arc<RulesSlot>,
    accounts: Arc<Accounts>,
    metrics: Arc<Metrics>,
    identity: Option<IdentityResolver>,
    sinks_wake: Arc<Notify>,
    cursor: Option<i64>,
}

impl Engine {
    /// An engine over `store`, restoring the counters, account state and cursor of the last
    /// checkpoint of `config.source_name`, if any.
    pub async fn start(
        config: EngineConfig,
        store: Store,
        rules: Arc<RulesSlot>,
        identity: Option<IdentityResolver>,
    ) -> Result<Engine, EngineError> {
        let partitions = config.partitions.max(1);
        let config = EngineConfig {
            partitions,
            ..config
        };
        let metrics = Arc::new(Metrics::new(partitions));
        metrics.ruleset_ok.set(1);
        let accounts = Arc::new(Accounts::new(64));
        let cursor = store.checkpoint(&config.source_name).await?;
        if cursor.is_some() {
            if let Some(bytes) = store.snapshot(&snapshot_name(&config, "counters")).await? {
                let reset = rules
                    .with_active_mut(|active| active.counters.restore(&bytes))
                    .ok_or_else(|| EngineError::Restore("the ruleset is in use".into()))?
                    .map_err(EngineError::Restore)?;
                if !reset.is_empty() {
                    tracing::info!(counters = ?reset, "counters not in the snapshot start empty");
                }
            }
            if let Some(bytes) = store.snapshot(&snapshot_name(&config, "accounts")).await? {
                accounts.restore(&bytes).map_err(EngineError::Restore)?;
            }
            metrics
                .live
                .checkpoint_cursor
                .store(cursor.unwrap_or(0), Relaxed);
            tracing::info!(cursor = ?cursor, accounts = accounts.len(), "state restored from the last checkpoint");
        }
        if let Some(identity) = &identity
            && let Ok(mut slot) = metrics.live.identity.lock()
        {
            *slot = Some(identity.clone());
        }
        Ok(Engine {
            config,
            store,
            rules,
            accounts,
            metrics,
            identity,
            sinks_wake: Arc::new(Notify::new()),
            cursor,
        })
    }

    /// The cursor to resume the source after (the last checkpoint), if any.
    pub fn resume_cursor(&self) -> Option<i64> {
        self.cursor
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The rules slot (status, reload requests).
    pub fn rules(&self) -> Arc<RulesSlot> {
        self.rules.clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Woken whenever effects are logged: sinks wait on it.
    pub fn sinks_wake(&self) -> Arc<Notify> {
        self.sinks_wake.clone()
    }

    /// Runs until the source ends or `shutdown` becomes true; then drains, checkpoints and
    /// returns. A store failure stops the run without checkpointing past it.
    pub async fn run<S: EventSource + 'static>(
        &self,
        source: S,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<RunSummary, EngineError> {
        let partitions = self.config.partitions;
        // The source as a stream: the stream keeps a read in progress across polls, so waiting
        // for the next event can be interrupted (shutdown, timers) without cancelling a read
        // half-way, and a ready event is taken without a hand-off between tasks. The stream
        // moves its state in and out of each read: boxed, that is a pointer, not the source.
        let events = futures_util::stream::unfold(Some(Box::new(source)), |state| async move {
            let mut source = state?;
            match source.next_event().await {
                Ok(Some(event)) => Some((Ok(event), Some(source))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        let mut events = std::pin::pin!(events);
        let effect_writer = EffectWriter::new(self.store.clone(), self.config.quotas.clone());
        let settled = effect_writer.settled();
        let (done_tx, done_rx) = mpsc::channel::<Done>(partitions * 4);
        let (durable_tx, mut durable_rx) = watch::channel(0u64);
        let (failed_tx, mut failed_rx) = watch::channel::<Option<String>>(None);
        // Events travel to workers in batches: one wake-up per batch, not per event.
        let batch_size = self.config.batch_size.max(1);
        let queue_batches = self.config.queue_capacity.div_ceil(batch_size).max(1);
        let pool = BatchPool::new(batch_size, partitions * (queue_batches + 2));
        let mut batches: Vec<Vec<Envelope>> = (0..partitions).map(|_| pool.take()).collect();
        let mut queues = Vec::with_capacity(partitions);
        let mut workers = Vec::with_capacity(partitions);
        for p in 0..partitions {
            let (tx, rx) = mpsc::channel::<Vec<Envelope>>(queue_batches);
            queues.push(tx);
            workers.push(tokio::spawn(worker(
                p,
                rx,
                pool.clone(),
                done_tx.clone(),
                self.rules.clone(),
                self.accounts.clone(),
                self.metrics.clone(),
                self.identity.clone(),
                self.config.identity_budget,
                settled.clone(),
            )));
        }
        drop(done_tx);
        let writer = tokio::spawn(writer(
            done_rx,
            effect_writer,
            self.accounts.clone(),
            self.metrics.clone(),
            Signals {
                durable: durable_tx,
                failed: failed_tx,
                sinks_wake: self.sinks_wake.clone(),
            },
            self.config.commit_window,
        ));

        let live = &self.metrics.live;
        let mut summary = RunSummary {
            cursor: self.cursor,
            ..RunSummary::default()
        };
        let mut dispatched_total = 0u64;
        let mut since_checkpoint = 0u64;
        let mut last_checkpoint = Instant::now();
        // The checkpoint is the cursor of the last dispatched event: everything up to it is
        // durable at a barrier.
        let mut last_cursor = self.cursor;
        // Checkpoint timing and shutdown are checked when the clock is read.
        let mut clock = CoarseClock::new();
        let result: Result<(), EngineError> = async {
            loop {
                let due = since_checkpoint >= self.config.checkpoint_events
                    || (since_checkpoint > 0
                        && clock.now().duration_since(last_checkpoint)
                            >= self.config.checkpoint_interval)
                    || self.rules.reload_pending();
                if due {
                    let paused = Instant::now();
                    flush(&queues, &mut batches, &pool).await?;
                    self.barrier(dispatched_total, &mut durable_rx, &mut failed_rx)
                        .await?;
                    if self.rules.take_request() {
                        self.reload();
                    }
                    if since_checkpoint > 0 {
                        self.checkpoint(last_cursor, &mut summary).await?;
                        self.metrics
                            .checkpoint_pause_seconds
                            .observe(paused.elapsed().as_secs_f64());
                    }
                    since_checkpoint = 0;
                    last_checkpoint = Instant::now();
                    clock.expire();
                }
                // Fast path: an event is ready. Otherwise send what is batched, then wait.
                let next = match events.next().now_or_never() {
                    Some(next) => Some(next.transpose()?),
                    None => {
                        clock.expire();
                        flush(&queues, &mut batches, &pool).await?;
                        tokio::select! {
                            biased;
                            _ = shutdown.wait_for(|stop| *stop) => None,
                            _ = failed_rx.changed() => {
                                let e = failed_rx.borrow().clone().unwrap_or_default();
                                return Err(EngineError::Restore(format!("effect writer stopped: {e}")));
                            }
                            // Wake up for time-based checkpoints and reloads when idle.
                            _ = tokio::time::sleep(self.config.checkpoint_interval.min(Duration::from_secs(1))) => continue,
                            next = events.next() => Some(next.transpose()?),
                        }
                    }
                };
                let ended = next.is_some();
                let Some(event) = next.flatten() else {
                    summary.source_ended = ended;
                    break;
                };
                last_cursor = Some(event.cursor);
                let (dispatched, clock_read) = clock.stamp();
                let p = partition_of(&event.did, partitions);
                live.dispatched[p].fetch_add(1, Relaxed);
                dispatched_total += 1;
                since_checkpoint += 1;
                summary.events += 1;
                batches[p].push(Envelope {
                    event,
                    dispatched,
                });
                if batches[p].len() >= batch_size {
                    let full = std::mem::replace(&mut batches[p], pool.take());
                    match queues[p].try_send(full) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(full)) => {
                            // Waiting for the worker: the next event's stamp needs a new clock.
                            clock.expire();
                            if queues[p].send(full).await.is_err() {
                                return Err(EngineError::Restore("a worker stopped".into()));
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            return Err(EngineError::Restore("a worker stopped".into()));
                        }
                    }
                }
                if clock_read && *shutdown.borrow() {
                    break;
                }
            }
            flush(&queues, &mut batches, &pool).await?;
            self.barrier(dispatched_total, &mut durable_rx, &mut failed_rx)
                .await?;
            self.checkpoint(last_cursor, &mut summary).await?;
            Ok(())
        }
        .await;
        drop(queues);
        for w in workers {
            let _ = w.await;
        }
        let _ = writer.await;
        result.map(|()| summary)
    }

    /// Waits until every dispatched event's effects are durable.
    async fn barrier(
        &self,
        dispatched: u64,
        durable: &mut watch::Receiver<u64>,
        failed: &mut watch::Receiver<Option<String>>,
    ) -> Result<(), EngineError> {
        tokio::select! {
            r = durable.wait_for(|d| *d >= dispatched) => {
                r.map_err(|_| EngineError::Restore("the effect writer stopped".into()))?;
                Ok(())
            }
            r = failed.wait_for(Option::is_some) => {
                let e = r.map(|v| v.clone().unwrap_or_default()).unwrap_or_default();
                Err(EngineError::Restore(format!("effect writer stopped: {e}")))
            }
        }
    }

    fn reload(&self) {
        match self.rules.reload() {
            Ok(version) => {
                self.metrics.reloads.inc();
                self.metrics.ruleset_ok.set(1);
                tracing::info!(%version, "ruleset reloaded");
            }
            Err(errors) => {
                self.metrics.reload_failures.inc();
                self.metrics.ruleset_ok.set(0);
                for e in &errors {
                    tracing::error!(error = %e, "ruleset reload refused; the running ruleset stays");
                }
            }
        }
    }

    async fn checkpoint(
        &self,
        cursor: Option<i64>,
        summary: &mut RunSummary,
    ) -> Result<(), EngineError> {
        let Some(cursor) = cursor else {
            return Ok(());
        };
        let active = self.rules.active();
        let counters = active.counters.encode();
        let accounts = self.accounts.encode();
        let now = now_micros();
        let mut tx = self.store.begin().await?;
        let (counter_bytes, account_bytes) = (counters.len(), accounts.len());
        tx.put_snapshot(&snapshot_name(&self.config, "counters"), counters, now)
            .await?;
        tx.put_snapshot(&snapshot_name(&self.config, "accounts"), accounts, now)
            .await?;
        tx.set_checkpoint(&self.config.source_name, cursor, now)
            .await?;
        tx.commit().await?;
        let live = &self.metrics.live;
        live.checkpoint_cursor.store(cursor, Relaxed);
        live.counter_keys
            .store(active.counters.len() as u64, Relaxed);
        live.accounts.store(self.accounts.len() as u64, Relaxed);
        self.metrics.checkpoints.inc();
        summary.checkpoints += 1;
        summary.cursor = Some(cursor);
        tracing::debug!(cursor, counter_bytes, account_bytes, "checkpoint");
        Ok(())
    }
}

/// Sends every non-empty batch to its partition.
async fn flush(
    queues: &[mpsc::Sender<Vec<Envelope>>],
    batches: &mut [Vec<Envelope>],
    pool: &BatchPool,
) -> Result<(), EngineError> {
    for (queue, batch) in queues.iter().zip(batches.iter_mut()) {
        if !batch.is_empty() {
            let full = std::mem::replace(batch, pool.take());
            if queue.send(full).await.is_err() {
                return Err(EngineError::Restore("a worker stopped".into()));
            }
        }
    }
    Ok(())
}

fn kind_index(body: &EventBody) -> usize {
    match body {
        EventBody::Commit(_) => 0,
        EventBody::Identity { .. } => 1,
        EventBody::Account { .. } => 2,
        EventBody::Sync { .. } => 3,
    }
}

fn snapshot_name(config: &EngineConfig, what: &str) -> String {
    format!("{}/{what}", config.source_name)
}

/// The partition of a DID among `partitions` (also the account-state shard among that many
/// shards): stable across runs (xxh3, unseeded).
pub fn partition_of(did: &str, partitions: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(did.as_bytes()) % partitions as u64) as usize
}

/// The evaluation time of an event: its own time, so a replay counts into the same windows
/// and sees the same ages; the wall clock if the time does not parse.
pub fn event_time(event: &Event) -> i64 {
    Datetime::parse_micros(&event.time).unwrap_or_else(|_| now_micros())
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    partition: usize,
    mut rx: mpsc::Receiver<Vec<Envelope>>,
    pool: BatchPool,
    done: mpsc::Sender<Done>,
    rules: Arc<RulesSlot>,
    accounts: Arc<Accounts>,
    metrics: Arc<Metrics>,
    identity: Option<IdentityResolver>,
    identity_budget: Duration,
    settled: Arc<SettledStates>,
) {
    let mut evaluator = Evaluator::new();
    let mut firings: Vec<Firing> = Vec::new();
    let mut failed_before = 0u64;
    let mut rule_counters: Option<(Arc<Active>, crate::metrics::RuleCounters)> = None;
    loop {
        let Some(mut batch) = rx.recv().await else {
            return;
        };
        let active: Arc<Active> = rules.active();
        let mut kinds = [0u64; 4];
        let mut out = Done {
            partition,
            events: batch.len() as u64,
            last_event_time: 0,
            dispatched: Vec::with_capacity(batch.len()),
            effects: Vec::new(),
        };
        for (nth, envelope) in batch.drain(..).enumerate() {
            let event = envelope.event;
            // Copied for the pending effects it fires, if any (they render it if logged).
            let mut firing_event = effects::FiringEvent::new(&event);
            let now = event_time(&event);
            let mut account = accounts.observe(&event, now);
            if let Some(identity) = &identity {
                if let EventBody::Identity {
                    handle: Some(handle),
                } = &event.body
                {
                    identity.observe_handle(&event.did, Some(handle));
                }
                let lookup = if identity_budget.is_zero() {
                    identity.lookup(&event.did)
                } else {
                    identity.resolve_within(&event.did, identity_budget).await
                };
                if let Lookup::Known(id) = lookup {
                    if account.handle.is_none() {
                        account.handle = id.handle.as_deref().map(Into::into);
                    }
                    account.pds_host.clone_from(&id.pds_host);
                    account.created_at = id.created_at;
                }
            }
            // The evaluation histogram samples one event in `EVALUATION_SAMPLE`: reading the
            // clock around every event would cost more than evaluating a like.
            let started = (nth % EVALUATION_SAMPLE == 0).then(Instant::now);
            for (unit, input) in Input::units(&event, &account, now).enumerate() {
                firings.clear();
                evaluator.evaluate(
                    &active.ruleset,
                    input,
                    &mut active.counters.view(),
                    &mut firings,
                );
                effects::pending(
                    &mut firing_event,
                    unit,
                    now,
                    &mut firings,
                    &settled,
                    &metrics,
                    &mut out.effects,
                );
            }
            if let Some(started) = started {
                metrics
                    .evaluation_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            kinds[kind_index(&event.body)] += 1;
            out.last_event_time = out.last_event_time.max(now);
            out.dispatched.push(envelope.dispatched);
        }
        pool.give(batch);
        for (kind, n) in ["commit", "identity", "account", "sync"]
            .into_iter()
            .zip(kinds)
        {
            if n > 0 {
                metrics.events(kind, n);
            }
        }
        // The active ruleset's counters, looked up again only after a reload.
        let counters = match &rule_counters {
            Some((of, counters)) if Arc::ptr_eq(of, &active) => counters,
            _ => {
                let counters = metrics.rule_counters(active.ruleset.rules.iter().map(|rule| {
                    let mode = if rule.mode == Mode::Shadow {
                        "shadow"
                    } else {
                        "live"
                    };
                    (rule.name.as_str(), mode)
                }));
                &rule_counters.insert((active.clone(), counters)).1
            }
        };
        evaluator.drain_tally(|i, evaluated, fired| {
            counters.evaluations[i].inc_by(evaluated);
            if fired > 0 {
                counters.hits[i].inc_by(fired);
            }
        });
        if evaluator.failed_units > failed_before {
            metrics
                .failed_units
                .inc_by(evaluator.failed_units - failed_before);
            failed_before = evaluator.failed_units;
        }
        if done.send(out).await.is_err() {
            return;
        }
    }
}

/// What the effect writer tells the rest of the engine.
struct Signals {
    /// Events whose effects are durable, counted in dispatch order.
    durable: watch::Sender<u64>,
    /// Why the writer stopped for good.
    failed: watch::Sender<Option<String>>,
    /// Woken after a commit that applied effects (the sinks read the log).
    sinks_wake: Arc<Notify>,
}

async fn writer(
    mut rx: mpsc::Receiver<Done>,
    effects: EffectWriter,
    accounts: Arc<Accounts>,
    metrics: Arc<Metrics>,
    signals: Signals,
    commit_window: Duration,
) {
    let Signals {
        durable,
        failed,
        sinks_wake,
    } = signals;
    // Worker batches one commit takes at most.
    const MESSAGES: usize = 256;
    let mut messages = Vec::new();
    let mut pending = Vec::new();
    let mut total = 0u64;
    let mut last_commit: Option<Instant> = None;
    while rx.recv_many(&mut messages, MESSAGES).await > 0 {
        // Within the window of the last commit, gather what arrives until it closes.
        if let Some(due) = last_commit.map(|t| t + commit_window) {
            while messages.len() < MESSAGES {
                let room = MESSAGES - messages.len();
                let more = rx.recv_many(&mut messages, room);
                match tokio::time::timeout_at(due.into(), more).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        if !commit_window.is_zero() {
            last_commit = Some(Instant::now());
        }
        pending.clear();
        for m in &mut messages {
            pending.append(&mut m.effects);
        }
        let mut attempt = 0u32;
        let outcomes = loop {
            match effects
                .commit(&pending, &accounts, &metrics, now_micros())
                .await
            {
                Ok(outcomes) => break outcomes,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::error!(error = %e, attempt, "writing effects failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "writing effects failed; stopping without checkpointing past them");
                    let _ = failed.send(Some(e.to_string()));
                    return;
                }
            }
        };
        let now = Instant::now();
        let live = &metrics.live;
        let mut latencies = metrics.event_latency_seconds.batch();
        for m in messages.drain(..) {
            live.durable[m.partition].fetch_add(m.events, Relaxed);
            live.durable_event_time
                .fetch_max(m.last_event_time, Relaxed);
            // Dispatch times come from a coarse clock: runs of events share one.
            for run in m.dispatched.chunk_by(|a, b| a == b) {
                latencies.observe_n(now.duration_since(run[0]).as_secs_f64(), run.len() as u64);
            }
            total += m.events;
        }
        drop(latencies);
        durable.send_replace(total);
        if outcomes.contains(&effects::Outcome::Applied) {
            sinks_wake.notify_waiters();
        }
    }
}
