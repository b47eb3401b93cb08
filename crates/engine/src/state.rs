//! State shared by the partitions: counters and accounts, each sharded behind mutexes so that
//! partitions (one per core) rarely contend, and both encodable into snapshots.
//!
//! Counters are shared, not per partition, because their keys are not always accounts: "same
//! text from N distinct accounts" counts a fingerprint across every partition. A counter
//! keyed by the author's DID is only ever touched by that DID's partition, so its updates keep
//! the account's event order; a counter keyed across accounts sees partitions interleave, so
//! *which* event crosses its threshold can differ between two runs (the count cannot).

use skywarden_atproto::event::{Action as OpAction, Event, EventBody};
use skywarden_rules::counter::{CounterSpec, CounterStore, MemoryCounters, Window};
use skywarden_rules::{Account, Ruleset};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, recovering the data if a holder panicked: state stays usable, and evaluation
/// contains panics per unit anyway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The counters of one ruleset, sharded by key.
pub struct SharedCounters {
    names: Vec<String>,
    specs: Vec<CounterSpec>,
    shards: Vec<Mutex<MemoryCounters>>,
}

impl SharedCounters {
    /// Empty counters for `ruleset`'s counter declarations, in `shards` shards.
    pub fn new(ruleset: &Ruleset, shards: usize) -> Self {
        let specs: Vec<CounterSpec> = ruleset.counters.iter().map(|c| c.spec.clone()).collect();
        SharedCounters {
            names: ruleset.counters.iter().map(|c| c.name.clone()).collect(),
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(MemoryCounters::new(specs.clone())))
                .collect(),
            specs,
        }
    }

    fn shard(&self, key: u128) -> &Mutex<MemoryCounters> {
        // Keys are already hashes: fold and reduce.
        let folded = (key as u64) ^ ((key >> 64) as u64);
        &self.shards[(folded % self.shards.len() as u64) as usize]
    }

    /// Counters for a new ruleset, keeping the state of every counter whose name and spec
    /// (windows, distinct, retention) did not change. Returns the new counters and the names
    /// of the counters that start empty.
    pub fn carry_over(&self, ruleset: &Ruleset) -> (SharedCounters, Vec<String>) {
        let next = SharedCounters::new(ruleset, self.shards.len());
        let mut reset = Vec::new();
        for (i, name) in next.names.iter().enumerate() {
            let Some(old) = self.names.iter().position(|n| n == name) else {
                reset.push(name.clone());
                continue;
            };
            if self.specs[old] != next.specs[i] {
                reset.push(name.clone());
                continue;
            }
            for (from, to) in self.shards.iter().zip(&next.shards) {
                lock(to).take_counter_from(i, &mut lock(from), old);
            }
        }
        (next, reset)
    }

    /// Encodes every counter of every shard: `[u32 shards][u32 counters]` then per counter its
    /// name and, per shard, a length-prefixed encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.shards.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.names.len() as u32).to_le_bytes());
        let shards: Vec<_> = self.shards.iter().map(lock).collect();
        let mut buf = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            put_bytes(&mut out, name.as_bytes());
            for shard in &shards {
                buf.clear();
                shard.encode_counter(i, &mut buf);
                put_bytes(&mut out, &buf);
            }
        }
        out
    }

    /// Restores counters from [`SharedCounters::encode`] output. Counters are matched by name;
    /// a counter whose snapshot does not decode (its spec changed, say) starts empty and is
    /// named in the returned list. Fails only if the snapshot itself is malformed or was taken
    /// with a different number of shards.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut r = Reader(bytes);
        let shards = r.u32()? as usize;
        if shards != self.shards.len() {
            return Err(format!(
                "the counter snapshot has {shards} shards, this engine {}",
                self.shards.len()
            ));
        }
        let count = r.u32()? as usize;
        let mut reset: Vec<String> = Vec::new();
        let mut restored = vec![false; self.names.len()];
        for _ in 0..count {
            let name = String::from_utf8(r.bytes()?.to_vec()).map_err(|e| e.to_string())?;
            let index = self.names.iter().position(|n| *n == name);
            let mut ok = index.is_some();
            for shard in &self.shards {
                let data = r.bytes()?;
                if let (Some(i), true) = (index, ok)
                    && let Err(e) = lock(shard).decode_counter(i, data)
                {
                    tracing::warn!(counter = %name, error = %e, "counter state dropped");
                    ok = false;
                }
            }
            if let Some(i) = index {
                if ok {
                    restored[i] = true;
                } else {
                    // Some shards may have decoded before one failed: start the counter clean.
                    let mut fresh = MemoryCounters::new(self.specs.clone());
                    for shard in &self.shards {
                        lock(shard).take_counter_from(i, &mut fresh, i);
                        fresh = MemoryCounters::new(self.specs.clone());
                    }
                }
            }
        }
        if !r.0.is_empty() {
            return Err("trailing bytes after the counter snapshot".into());
        }
        for (i, done) in restored.iter().enumerate() {
            if !done {
                reset.push(self.names[i].clone());
            }
        }
        Ok(reset)
    }

    /// Stored keys across shards.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes across shards.
    pub fn approx_bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).approx_bytes()).sum()
    }

    /// A [`CounterStore`] over these counters for one evaluator.
    pub fn view(&self) -> CounterView<'_> {
        CounterView(self)
    }
}

/// [`CounterStore`] over [`SharedCounters`]: each call locks the key's shard.
pub struct CounterView<'a>(&'a SharedCounters);

impl CounterStore for CounterView<'_> {
    fn add(&mut self, counter: usize, key: u128, distinct: Option<u64>, now: i64) {
        lock(self.0.shard(key)).add(counter, key, distinct, now);
    }

    fn get(&self, counter: usize, key: u128, window: Window, now: i64) -> u64 {
        lock(self.0.shard(key)).get(counter, key, window, now)
    }
}

/// One shard of account state, by DID.
type AccountMap = HashMap<String, AccountState, foldhash::fast::RandomState>;

/// What the engine keeps about one account, from the stream itself.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccountState {
    /// When this deployment first saw the account (µs).
    #[serde(rename = "f")]
    pub first_seen: i64,
    /// Whether any event *by* the account was seen (it may be known only as a follow target).
    #[serde(rename = "a", default)]
    pub authored: bool,
    /// Posts created minus posts deleted, as seen.
    #[serde(rename = "p", default)]
    pub posts: i64,
    /// Follows created minus deleted, as seen.
    #[serde(rename = "o", default)]
    pub follows: i64,
    /// Follows of this account created minus deleted, as seen.
    #[serde(rename = "r", default)]
    pub followers: i64,
    /// Handle from the latest `#identity` event, if any.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<skywarden_atproto::CompactString>,
    /// Whether the latest profile record has an avatar.
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub has_avatar: Option<bool>,
    /// Labels applied to the account (live).
    #[serde(rename = "l", default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Tags applied to the account (live).
    #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Every account seen, sharded by DID.
pub struct Accounts {
    shards: Vec<Mutex<AccountMap>>,
}

impl Accounts {
    /// Empty, with `shards` shards.
    pub fn new(shards: usize) -> Self {
        Accounts {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(AccountMap::default()))
                .collect(),
        }
    }

    fn shard(&self, did: &str) -> &Mutex<AccountMap> {
        &self.shards[crate::pipeline::partition_of(did, self.shards.len())]
    }

    /// Records `event` in its author's state and returns the account as rules see it: as it
    /// was *before* the event (`first_event` is set on the account's first event, counts do not
    /// include this event). One lookup of the author per event.
    pub fn observe(&self, event: &Event, now: i64) -> Account {
        let mut follow_changes: Vec<(&str, i64)> = Vec::new();
        let before;
        {
            let mut shard = lock(self.shard(&event.did));
            let state = match shard.get_mut(event.did.as_str()) {
                Some(state) => state,
                None => shard.entry(event.did.to_string()).or_insert(AccountState {
                    first_seen: now,
                    ..AccountState::default()
                }),
            };
            before = Account {
                handle: state.handle.clone(),
                first_seen: Some(state.first_seen),
                first_event: !state.authored,
                has_avatar: state.has_avatar,
                posts: Some(state.posts),
                followers: Some(state.followers),
                follows: Some(state.follows),
                labels: state.labels.clone(),
                tags: state.tags.clone(),
                ..Account::default()
            };
            state.authored = true;
            match &event.body {
                EventBody::Identity {
                    handle: Some(handle),
                } => state.handle = Some(handle.clone()),
                EventBody::Commit(commit) => {
                    for op in &commit.ops {
                        let delta = match op.action {
                            OpAction::Create => 1,
                            OpAction::Delete => -1,
                            OpAction::Update => 0,
                        };
                        match op.collection.as_str() {
                            "app.bsky.feed.post" => state.posts = (state.posts + delta).max(0),
                            "app.bsky.graph.follow" => {
                                state.follows = (state.follows + delta).max(0);
                                if op.action == OpAction::Create
                                    && let Some(target) =
                                        op.record.as_ref().and_then(|r| r.subject())
                                {
                                    follow_changes.push((target, 1));
                                }
                            }
                            "app.bsky.actor.profile" if op.action != OpAction::Delete => {
                                state.has_avatar =
                                    op.record.as_ref().map(|r| r.as_profile().has_avatar());
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        for (target, delta) in follow_changes {
            let mut shard = lock(self.shard(target));
            let state = match shard.get_mut(target) {
                Some(state) => state,
                None => shard
                    .entry(target.to_string())
                    .or_insert_with(|| AccountState {
                        first_seen: now,
                        ..AccountState::default()
                    }),
            };
            state.followers = (state.followers + delta).max(0);
        }
        before
    }

    /// Applies a label or tag change made by an effect to the account's state.
    pub fn set_value(&self, did: &str, kind: &str, value: &str, present: bool) {
        let mut shard = lock(self.shard(did));
        let Some(state) = shard.get_mut(did) else {
            return;
        };
        let list = match kind {
            "label" => &mut state.labels,
            "tag" => &mut state.tags,
            _ => return,
        };
        list.retain(|v| v != value);
        if present {
            list.push(value.to_string());
            list.sort();
        }
    }

    /// Accounts stored.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no account is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes every account as JSON lines `[did, state]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for shard in &self.shards {
            for (did, state) in lock(shard).iter() {
                // Serialising a String and a derived struct cannot fail.
                serde_json::to_writer(&mut out, &(did, state)).expect("account state encodes");
                out.push(b'\n');
            }
        }
        out
    }

    /// Replaces the accounts with those of an [`Accounts::encode`] snapshot.
    pub fn restore(&self, bytes: &[u8]) -> Result<usize, String> {
        for shard in &self.shards {
            lock(shard).clear();
        }
        let mut n = 0;
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let (did, state): (String, AccountState) = serde_json::from_slice(line)
                .map_err(|e| format!("account snapshot line {}: {e}", i + 1))?;
            lock(self.shard(&did)).insert(did, state);
            n += 1;
        }
        Ok(n)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the counter snapshot is truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        let n = usize::try_from(n).map_err(|_| "length out of range".to_string())?;
        self.take(n)
    }
}
