//! What a rule evaluation is about: one event (one op of a commit), the account behind it as
//! far as the caller knows it, and the evaluation time.

use skywarden_atproto::event::{Action, Event, EventBody, Op};

/// What the caller knows about the account that produced the event.
///
/// Everything is optional: the engine fills what enrichment found, tests fill what they need.
/// A rule reading an unknown field sees `missing` (see the reference page), never a default
/// that could make it fire by accident.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    /// Current handle, if known.
    pub handle: Option<skywarden_atproto::CompactString>,
    /// Host name of the account's PDS, if known.
    pub pds_host: Option<String>,
    /// When the account was created (microseconds since the epoch), if known.
    pub created_at: Option<i64>,
    /// When this deployment first saw the account (microseconds since the epoch), if tracked.
    pub first_seen: Option<i64>,
    /// Whether this event is the first one this deployment has seen from the account.
    pub first_event: bool,
    /// Whether the profile has an avatar, if known.
    pub has_avatar: Option<bool>,
    /// Number of posts, if known.
    pub posts: Option<i64>,
    /// Number of followers, if known.
    pub followers: Option<i64>,
    /// Number of accounts followed, if known.
    pub follows: Option<i64>,
    /// Labels currently on the account.
    pub labels: Vec<String>,
    /// Moderation tags currently on the account.
    pub tags: Vec<String>,
    /// DIDs known to follow this account: used by `account.followed_by(did)`. `None` means the
    /// follower graph is not known, which makes `followed_by` missing.
    pub followed_by: Option<std::collections::HashSet<String>>,
}

/// The unit rules evaluate: an event, and for commits one of its ops.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The event.
    pub event: &'a Event,
    /// For a commit, the op being evaluated (a commit with three ops is evaluated three times).
    pub op: Option<&'a Op>,
    /// The author account as far as known.
    pub account: &'a Account,
    /// The evaluation time in microseconds since the epoch: the event's own time for
    /// deterministic replays, the receive time in the engine. Counter windows and ages use it.
    pub now: i64,
}

/// The kind of unit an [`Input`] is, used to route it to the rules that apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A record created, updated or deleted.
    Record {
        /// What happened.
        action: Action,
        /// The record's collection NSID.
        collection: &'a str,
    },
    /// A handle or DID document change.
    Identity,
    /// An account status change.
    Account,
    /// A repo reset.
    Sync,
}

impl<'a> Input<'a> {
    /// The units of one event, in order: each op of a commit, or the event itself.
    pub fn units(
        event: &'a Event,
        account: &'a Account,
        now: i64,
    ) -> impl Iterator<Item = Input<'a>> {
        let ops: &'a [Op] = match &event.body {
            EventBody::Commit(c) => &c.ops,
            _ => &[],
        };
        let single = (!matches!(event.body, EventBody::Commit(_))).then_some(Input {
            event,
            op: None,
            account,
            now,
        });
        ops.iter()
            .map(move |op| Input {
                event,
                op: Some(op),
                account,
                now,
            })
            .chain(single)
    }

    /// What this unit is about.
    pub fn subject(&self) -> Subject<'a> {
        match (&self.event.body, self.op) {
            (EventBody::Commit(_), Some(op)) => Subject::Record {
                action: op.action,
                collection: &op.collection,
            },
            (EventBody::Identity { .. }, _) => Subject::Identity,
            (EventBody::Account { .. }, _) => Subject::Account,
            _ => Subject::Sync,
        }
    }
}
