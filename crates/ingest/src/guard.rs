//! The checks a consumer applies to a stream before trusting it, in the spirit of a relay's:
//!
//! - `seq` (or Jetstream `time_us`) must increase: a replayed or reordered event is dropped;
//! - a repo's `rev` must increase: a commit at or below the last seen rev is stale (a `#sync`
//!   may repeat the current rev);
//! - commits of an account last reported inactive (deactivated, taken down, deleted) are
//!   dropped until an `#account` event reports it active again.
//!
//! Relay-side checks that need the whole repo (MST inversion against `prevData`, `since`
//! chaining) are not applied here; see ARCHITECTURE.md.

use skywarden_atproto::event::{Event, EventBody};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// Why an event was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its cursor is not above the last delivered one.
    SeqNotIncreasing,
    /// Its rev is not above the repo's last rev.
    RevNotIncreasing,
    /// The account is inactive.
    AccountInactive,
}

impl DropReason {
    /// Metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::SeqNotIncreasing => "seq_not_increasing",
            DropReason::RevNotIncreasing => "rev_not_increasing",
            DropReason::AccountInactive => "account_inactive",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct RepoState {
    rev: u128,
    inactive: bool,
}

/// Per-stream consumer checks. Memory: one 32-byte entry per account seen (keyed by a hash of
/// the DID), so a couple of GB for the whole network's tens of millions of accounts.
#[derive(Debug, Default)]
pub struct StreamGuard {
    last_cursor: Option<i64>,
    repos: HashMap<u64, RepoState, BuildHasherDefault<Prehashed>>,
    /// Seeded per process, so DIDs chosen to collide cannot be computed in advance.
    hasher: foldhash::quality::RandomState,
}

/// The map's hasher: its keys are already keyed hashes of DIDs, so they are used as they
/// are instead of being hashed a second time.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by the map; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Orders revs: TIDs sort as strings (their base32 alphabet is in ASCII order), so a rev of up to
/// 16 bytes packs big-endian into a `u128` that compares the same way. `None` for longer revs.
pub fn rev_value(rev: &str) -> Option<u128> {
    if rev.is_empty() || rev.len() > 16 {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[..rev.len()].copy_from_slice(rev.as_bytes());
    Some(u128::from_be_bytes(bytes))
}

impl StreamGuard {
    /// A guard that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A guard that resumes after `cursor`: events at or below it are replays.
    pub fn resuming_after(cursor: Option<i64>) -> Self {
        StreamGuard {
            last_cursor: cursor,
            ..Self::default()
        }
    }

    fn key(&self, did: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(did.as_bytes());
        h.finish()
    }

    /// Checks an event; on `Ok` the guard's state has advanced past it.
    pub fn check(&mut self, event: &Event) -> Result<(), DropReason> {
        if self.last_cursor.is_some_and(|last| event.cursor <= last) {
            return Err(DropReason::SeqNotIncreasing);
        }
        let key = self.key(&event.did);
        let state = self.repos.entry(key).or_default();
        match &event.body {
            EventBody::Commit(c) => {
                if state.inactive {
                    return Err(DropReason::AccountInactive);
                }
                check_rev(state, &c.rev, false)?;
            }
            // A #sync re-announces the repo's current state, so the same rev is not stale.
            EventBody::Sync { rev } => check_rev(state, rev, true)?,
            EventBody::Account { active, .. } => state.inactive = !active,
            EventBody::Identity { .. } => {}
        }
        self.last_cursor = Some(event.cursor);
        Ok(())
    }
}

fn check_rev(state: &mut RepoState, rev: &str, allow_equal: bool) -> Result<(), DropReason> {
    if let Some(value) = rev_value(rev) {
        if value < state.rev || (value == state.rev && !allow_equal) {
            return Err(DropReason::RevNotIncreasing);
        }
        state.rev = value;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tid_order_matches_string_order() {
        let a = rev_value("3lmxjza3nva27").unwrap();
        let b = rev_value("3lmxjzbfkb522").unwrap();
        assert!(a < b);
        assert!(rev_value("3lmxjza3nva00").unwrap() < a);
        assert_eq!(rev_value(""), None);
    }
}
