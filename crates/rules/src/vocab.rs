//! The vocabulary rules see: every field, its type, whether it can be missing, and how it is
//! read. The checker resolves a field path to its entry once, at load; evaluation calls the
//! entry's reader directly. The reference page is generated from this table.

use crate::frame::Frame;
use crate::value::{Ty, Val};
use skywarden_atproto::event::EventBody;
use skywarden_atproto::record::{Embed, Record};

/// Reads a field's value for the unit being evaluated.
pub type Reader = for<'a> fn(&Frame<'a>) -> Val<'a>;

/// One field of the vocabulary.
pub struct Field {
    /// Dotted path, e.g. `record.post.text`.
    pub path: &'static str,
    /// Its type. `Object` entries are groups: `has(path)` tells whether the group is present.
    pub ty: Ty,
    /// Whether the value can be missing (otherwise it always has a value of its type).
    pub optional: bool,
    /// One line for the reference page.
    pub doc: &'static str,
    /// How to read it.
    pub read: Reader,
}

/// The roots of the vocabulary besides fields: documented on the reference page.
pub const ROOTS: &[(&str, &str)] = &[
    ("event", "the event or op being evaluated"),
    (
        "record",
        "the record written by the op (typed views per collection)",
    ),
    (
        "account",
        "the author account, as far as enrichment knows it",
    ),
    ("text", "features of the event's primary text"),
    (
        "counters",
        "`counters.NAME.WINDOW`: a declared counter's value for this event's key",
    ),
    (
        "lists",
        "`lists.NAME`: a declared list, for `in` and the list-matching methods",
    ),
];

fn b<'a>(x: bool) -> Val<'a> {
    Val::Bool(x)
}

fn s<'a>(x: &'a str) -> Val<'a> {
    Val::Str(x)
}

fn opt<'a>(x: Option<&'a str>) -> Val<'a> {
    Val::opt_str(x)
}

fn present<'a, T>(x: Option<T>) -> Val<'a> {
    if x.is_some() {
        Val::Bool(true)
    } else {
        Val::Missing
    }
}

/// The DID an AT-URI's authority names, or the string itself if it is a DID.
pub fn did_of(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix("at://").unwrap_or(uri);
    let authority = rest.split('/').next().unwrap_or("");
    authority.starts_with("did:").then_some(authority)
}

/// A TID's shape: 13 base32-sortable characters, the first below `k`. Checked without
/// building an error for the common non-TID keys (`self`).
fn is_tid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 13
        && b.iter().all(|c| matches!(c, b'2'..=b'7' | b'a'..=b'z'))
        && matches!(b[0], b'2'..=b'7' | b'a'..=b'j')
}

fn in_collection<'a>(f: &Frame<'a>, nsid: &str) -> Option<&'a Record> {
    f.record_in(nsid)
}

fn subject_uri<'a>(f: &Frame<'a>, nsid: &str) -> Val<'a> {
    opt(in_collection(f, nsid).and_then(Record::subject))
}

fn subject_did<'a>(f: &Frame<'a>, nsid: &str) -> Val<'a> {
    opt(in_collection(f, nsid)
        .and_then(Record::subject)
        .and_then(did_of))
}

fn embed<'a>(f: &Frame<'a>) -> Option<Embed<'a>> {
    f.post().and_then(|p| p.embed())
}

fn age<'a>(f: &Frame<'a>, since: Option<i64>) -> Val<'a> {
    since.map_or(Val::Missing, |t| Val::Dur(f.input.now - t))
}

fn interacts_with<'a>(f: &Frame<'a>) -> &'a [&'a str] {
    let Some(post) = f.post() else { return &[] };
    let reply = f.reply();
    let parents = reply
        .iter()
        .flat_map(|r| [r.parent, r.root])
        .flatten()
        .filter_map(did_of);
    let quote = post.embed().and_then(|e| e.quoted_uri()).and_then(did_of);
    let mut v = bumpalo::collections::Vec::new_in(f.bump);
    for did in parents
        .chain(quote)
        .chain(f.facet_mentions().iter().copied())
    {
        if did != f.input.event.did && !v.contains(&did) {
            v.push(did);
        }
    }
    v.into_bump_slice()
}

macro_rules! fields {
    ($( $path:literal : $ty:ident $(? $opt:tt)? = $doc:literal => $read:expr ;)*) => {
        /// Every field, in reference-page order.
        pub static FIELDS: &[Field] = &[
            $( Field {
                path: $path,
                ty: Ty::$ty,
                optional: fields!(@opt $($opt)?),
                doc: $doc,
                read: $read,
            }, )*
        ];
    };
    (@opt) => { false };
    (@opt $x:tt) => { true };
}

fields! {
    "event.kind": String = "`commit`, `identity`, `account` or `sync`"
        => |f| s(f.input.event.body.kind());
    "event.action": String = "`create`, `update` or `delete` for record ops; empty otherwise"
        => |f| s(f.input.op.map_or("", |op| op.action.as_str()));
    "event.collection": String = "the record's collection NSID; empty for non-record events"
        => |f| s(f.input.op.map_or("", |op| op.collection.as_str()));
    "event.rkey": String = "the record key; empty for non-record events"
        => |f| s(f.input.op.map_or("", |op| op.rkey.as_str()));
    "event.uri": String ?o = "the record's AT-URI"
        => |f| match f.input.op {
            Some(op) => s(f.bump.alloc_str(&op.uri(&f.input.event.did))),
            None => Val::Missing,
        };
    "event.rkey_is_tid": Bool = "whether the record key is a timestamp key (TID), i.e. generated rather than chosen"
        => |f| b(f.input.op.is_some_and(|op| is_tid(&op.rkey)));
    "event.cid": String ?o = "the record's CID (missing for deletes)"
        => |f| match f.input.op.and_then(|op| op.cid.as_ref()) {
            Some(cid) => s(f.bump.alloc_str(&cid.to_string())),
            None => Val::Missing,
        };
    "event.did": String = "the account's DID"
        => |f| s(&f.input.event.did);
    "event.time": Timestamp ?o = "when the source says the event happened"
        => |f| f.event_time().map_or(Val::Missing, Val::Time);
    "event.now": Timestamp = "the evaluation time (the event time in backtests and tests)"
        => |f| Val::Time(f.input.now);
    "event.handle": String ?o = "the handle sent in an identity event"
        => |f| opt(f.identity_handle());
    "event.active": Bool ?o = "whether the account is active, for account events"
        => |f| match &f.input.event.body {
            EventBody::Account { active, .. } => b(*active),
            _ => Val::Missing,
        };
    "event.status": String ?o = "why an account is inactive (`takendown`, `deactivated`, ...)"
        => |f| match &f.input.event.body {
            EventBody::Account { status, .. } => opt(status.as_deref()),
            _ => Val::Missing,
        };

    "record.type": String ?o = "the record's `$type`"
        => |f| opt(f.record().and_then(Record::record_type));
    "record.created_at": Timestamp ?o = "the record's `createdAt`, if it parses"
        => |f| match f.record().and_then(Record::created_at)
            .and_then(|t| skywarden_atproto::syntax::Datetime::parse_micros(t).ok()) {
            Some(t) => Val::Time(t),
            None => Val::Missing,
        };
    "record.self_labels": List = "self-labels the author put on the record"
        => |f| Val::List(f.list(f.record().into_iter().flat_map(Record::self_labels)));

    "record.post": Object ?o = "present when the record is an `app.bsky.feed.post`"
        => |f| present(f.post());
    "record.post.text": String ?o = "the post text"
        => |f| f.post().map_or(Val::Missing, |p| s(p.text()));
    "record.post.langs": List = "declared languages"
        => |f| Val::List(f.list(f.post().into_iter().flat_map(|p| p.langs())));
    "record.post.tags": List = "extra hashtags in the `tags` field"
        => |f| Val::List(f.list(f.post().into_iter().flat_map(|p| p.tags())));
    "record.post.is_reply": Bool ?o = "whether the post is a reply"
        => |f| f.post().map_or(Val::Missing, |_| b(f.reply().is_some()));
    "record.post.reply": Object ?o = "present when the post is a reply"
        => |f| present(f.reply());
    "record.post.reply.parent.uri": String ?o = "AT-URI of the post replied to"
        => |f| opt(f.reply().and_then(|r| r.parent));
    "record.post.reply.parent.did": String ?o = "DID of the author replied to"
        => |f| opt(f.reply().and_then(|r| r.parent).and_then(did_of));
    "record.post.reply.root.uri": String ?o = "AT-URI of the thread root"
        => |f| opt(f.reply().and_then(|r| r.root));
    "record.post.reply.root.did": String ?o = "DID of the thread root's author"
        => |f| opt(f.reply().and_then(|r| r.root).and_then(did_of));
    "record.post.embed": Object ?o = "present when the post has an embed"
        => |f| present(embed(f));
    "record.post.embed.type": String ?o = "the embed's `$type`"
        => |f| opt(embed(f).map(|e| e.type_name()));
    "record.post.embed.uri": String ?o = "a link card's URI"
        => |f| opt(match embed(f) {
            Some(Embed::External { uri, .. }) => uri,
            _ => None,
        });
    "record.post.quote.uri": String ?o = "AT-URI of the quoted record"
        => |f| opt(embed(f).and_then(|e| e.quoted_uri()));
    "record.post.quote.did": String ?o = "DID of the quoted record's author"
        => |f| opt(embed(f).and_then(|e| e.quoted_uri()).and_then(did_of));
    "record.post.images": Int ?o = "number of images embedded"
        => |f| f.post().map_or(Val::Missing, |p| Val::Int(match p.embed() {
            Some(Embed::Images(alts)) => alts.len() as i64,
            Some(Embed::RecordWithMedia { media, .. }) => match *media {
                Embed::Images(alts) => alts.len() as i64,
                _ => 0,
            },
            _ => 0,
        }));
    "record.post.mentions": List = "DIDs mentioned through facets, de-duplicated"
        => |f| Val::List(f.facet_mentions());
    "record.post.interacts_with": List = "DIDs the post replies to (parent and root authors), quotes or mentions, de-duplicated, without the author"
        => |f| Val::List(interacts_with(f));
    "record.post.links": List = "link facet targets and the link card URI"
        => |f| Val::List(f.facet_links());

    "record.profile": Object ?o = "present when the record is an `app.bsky.actor.profile`"
        => |f| present(in_collection(f, "app.bsky.actor.profile"));
    "record.profile.display_name": String ?o = "display name"
        => |f| opt(in_collection(f, "app.bsky.actor.profile").and_then(Record::display_name));
    "record.profile.description": String ?o = "bio"
        => |f| opt(in_collection(f, "app.bsky.actor.profile").and_then(Record::description));
    "record.profile.has_avatar": Bool ?o = "whether an avatar is set"
        => |f| in_collection(f, "app.bsky.actor.profile").map_or(Val::Missing, |r| b(r.as_profile().has_avatar()));
    "record.profile.has_banner": Bool ?o = "whether a banner is set"
        => |f| in_collection(f, "app.bsky.actor.profile").map_or(Val::Missing, |r| b(r.as_profile().has_banner()));

    "record.like": Object ?o = "present for an `app.bsky.feed.like`"
        => |f| present(in_collection(f, "app.bsky.feed.like"));
    "record.like.subject.uri": String ?o = "AT-URI of the liked record"
        => |f| subject_uri(f, "app.bsky.feed.like");
    "record.like.subject.did": String ?o = "DID of the liked record's author"
        => |f| subject_did(f, "app.bsky.feed.like");
    "record.repost": Object ?o = "present for an `app.bsky.feed.repost`"
        => |f| present(in_collection(f, "app.bsky.feed.repost"));
    "record.repost.subject.uri": String ?o = "AT-URI of the reposted record"
        => |f| subject_uri(f, "app.bsky.feed.repost");
    "record.repost.subject.did": String ?o = "DID of the reposted record's author"
        => |f| subject_did(f, "app.bsky.feed.repost");
    "record.follow": Object ?o = "present for an `app.bsky.graph.follow`"
        => |f| present(in_collection(f, "app.bsky.graph.follow"));
    "record.follow.subject": String ?o = "DID followed"
        => |f| subject_uri(f, "app.bsky.graph.follow");
    "record.block": Object ?o = "present for an `app.bsky.graph.block`"
        => |f| present(in_collection(f, "app.bsky.graph.block"));
    "record.block.subject": String ?o = "DID blocked"
        => |f| subject_uri(f, "app.bsky.graph.block");
    "record.list": Object ?o = "present for an `app.bsky.graph.list`"
        => |f| present(in_collection(f, "app.bsky.graph.list"));
    "record.list.name": String ?o = "list name"
        => |f| opt(in_collection(f, "app.bsky.graph.list").and_then(Record::name));
    "record.list.purpose": String ?o = "list purpose (`app.bsky.graph.defs#modlist`, ...)"
        => |f| opt(in_collection(f, "app.bsky.graph.list").and_then(|r| r.get_str("purpose")));
    "record.list.description": String ?o = "list description"
        => |f| opt(in_collection(f, "app.bsky.graph.list").and_then(Record::description));
    "record.listitem": Object ?o = "present for an `app.bsky.graph.listitem`"
        => |f| present(in_collection(f, "app.bsky.graph.listitem"));
    "record.listitem.subject": String ?o = "DID added to the list"
        => |f| subject_uri(f, "app.bsky.graph.listitem");
    "record.listitem.list": String ?o = "AT-URI of the list"
        => |f| opt(in_collection(f, "app.bsky.graph.listitem").and_then(Record::list));
    "record.feed_generator": Object ?o = "present for an `app.bsky.feed.generator`"
        => |f| present(in_collection(f, "app.bsky.feed.generator"));
    "record.feed_generator.display_name": String ?o = "feed name"
        => |f| opt(in_collection(f, "app.bsky.feed.generator").and_then(Record::display_name));
    "record.feed_generator.description": String ?o = "feed description"
        => |f| opt(in_collection(f, "app.bsky.feed.generator").and_then(Record::description));
    "record.feed_generator.did": String ?o = "the feed service's DID"
        => |f| opt(in_collection(f, "app.bsky.feed.generator").and_then(|r| r.get_str("did")));
    "record.starterpack": Object ?o = "present for an `app.bsky.graph.starterpack`"
        => |f| present(in_collection(f, "app.bsky.graph.starterpack"));
    "record.starterpack.name": String ?o = "starter pack name"
        => |f| opt(in_collection(f, "app.bsky.graph.starterpack").and_then(Record::name));
    "record.starterpack.description": String ?o = "starter pack description"
        => |f| opt(in_collection(f, "app.bsky.graph.starterpack").and_then(Record::description));

    "account.did": String = "the account's DID"
        => |f| s(&f.input.event.did);
    "account.handle": String ?o = "current handle (from enrichment, or the identity event)"
        => |f| opt(f.input.account.handle.as_deref().or_else(|| f.identity_handle()));
    "account.pds_host": String ?o = "host name of the account's PDS"
        => |f| opt(f.input.account.pds_host.as_deref());
    "account.created_at": Timestamp ?o = "when the account was created"
        => |f| f.input.account.created_at.map_or(Val::Missing, Val::Time);
    "account.age": Duration ?o = "time since the account was created"
        => |f| age(f, f.input.account.created_at);
    "account.first_seen": Timestamp ?o = "when this deployment first saw the account"
        => |f| f.input.account.first_seen.map_or(Val::Missing, Val::Time);
    "account.seen_age": Duration ?o = "time since this deployment first saw the account"
        => |f| age(f, f.input.account.first_seen);
    "account.first_event": Bool = "whether this is the first event seen from the account"
        => |f| b(f.input.account.first_event);
    "account.has_avatar": Bool ?o = "whether the account's profile has an avatar"
        => |f| f.input.account.has_avatar.map_or(Val::Missing, Val::Bool);
    "account.posts": Int ?o = "number of posts"
        => |f| Val::opt_int(f.input.account.posts);
    "account.followers": Int ?o = "number of followers"
        => |f| Val::opt_int(f.input.account.followers);
    "account.follows": Int ?o = "number of accounts followed"
        => |f| Val::opt_int(f.input.account.follows);
    "account.labels": List = "labels on the account"
        => |f| Val::List(f.list(f.input.account.labels.iter().map(String::as_str)));
    "account.tags": List = "moderation tags on the account"
        => |f| Val::List(f.list(f.input.account.tags.iter().map(String::as_str)));

    "text.raw": String = "the primary text: post text; profile, list, feed or starter pack name and description"
        => |f| s(f.text());
    "text.normalized": String = "NFKC, lower-cased, confusables and leet folded, zero-width and bidi controls removed, spaces collapsed"
        => |f| s(f.normalized());
    "text.tokens": List = "words of the normalised text"
        => |f| Val::List(f.tokens());
    "text.hashtags": List = "hashtags in the text, tag facets and `tags`, lower-cased, de-duplicated"
        => |f| Val::List(f.hashtags());
    "text.mentions": List = "handles mentioned in the text (`@name.example.com` → `name.example.com`)"
        => |f| Val::List(f.mentions());
    "text.links": List = "links in the text, link facets and link cards, de-duplicated"
        => |f| Val::List(f.links());
    "text.domains": List = "registrable domains (public suffix list) of `text.links`"
        => |f| Val::List(f.domains());
    "text.misleading_link": Bool = "a link facet's visible text names a different domain than its target"
        => |f| b(f.misleading_link());
    "text.bad_facets": Bool = "a facet's byte range does not fit the text"
        => |f| b(f.bad_facets());
    "text.bidi_override": Bool = "the raw text contains right-to-left override or isolate controls"
        => |f| b(crate::text::has_bidi_override(f.text()));
    "text.length": Int = "number of characters of the raw text"
        => |f| Val::Int(f.text_length());
    "text.lang": String ?o = "the first declared language of a post"
        => |f| opt(f.post().and_then(|p| p.langs().next()));
    "text.fingerprint": String ?o = "exact-after-normalisation fingerprint (hex) for counting duplicates; missing for empty text"
        => |f| match f.fingerprint() {
            0 => Val::Missing,
            fp => {
                let mut hex = bumpalo::collections::String::with_capacity_in(16, f.bump);
                crate::frame::push_hex(&mut hex, fp, 16);
                s(hex.into_bump_str())
            }
        };
    "text.simhash_bands": List = "the SimHash cut into four 16-bit bands (`0:1a2b`, `1:...`): texts whose SimHashes differ in 3 bits or fewer always share a band, and most light edits do, so a counter keyed by the bands counts near-duplicates. A band value also holds about one in 65,536 of all texts by chance: at a few hundred thousand posts an hour, raise thresholds with the volume (`rules/spam.toml` does)"
        => |f| Val::List(f.simhash_bands());
    "text.simhash": Int ?o = "64-bit SimHash of the normalised text (a link counts as one word), for near-duplicate comparison with `hamming()`"
        => |f| match f.simhash() {
            0 => Val::Missing,
            h => Val::Int(h as i64),
        };
}

/// Finds a field by path.
pub fn field(path: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.path == path)
}

/// Fields directly under `prefix` (for hints: "did you mean ...").
pub fn children(prefix: &str) -> impl Iterator<Item = &'static Field> + '_ {
    FIELDS.iter().filter(move |f| {
        f.path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| !rest.contains('.'))
    })
}
