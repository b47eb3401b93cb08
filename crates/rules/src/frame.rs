//! The state of one evaluation: the input, the arena values live in, and lazily computed
//! features (record views, text features, match results), each computed at most once per
//! event and only if some rule reads it.

use crate::input::Input;
use crate::lists::Lists;
use crate::text;
use crate::value::Val;
use bumpalo::Bump;
use bumpalo::collections::Vec as BumpVec;
use skywarden_atproto::event::EventBody;
use skywarden_atproto::record::{Embed, FacetFeature, Post, Record, ReplyRef};
use skywarden_atproto::syntax::Datetime;
use std::cell::{Cell, OnceCell, RefCell};

/// The most comprehension variables alive at once (nesting depth of `exists`/`all`/...).
pub const MAX_LOCALS: usize = 8;

/// Per-evaluation state. Created for each unit, dropped before the arena is reset.
pub struct Frame<'a> {
    /// What is evaluated.
    pub input: Input<'a>,
    /// Where computed strings and lists live until the next event.
    pub bump: &'a Bump,
    /// The named lists and their matchers.
    pub lists: &'a Lists,
    /// Values of comprehension variables, by slot.
    pub locals: [Cell<Val<'a>>; MAX_LOCALS],
    time: OnceCell<Option<i64>>,
    text: OnceCell<&'a str>,
    normalized: OnceCell<&'a str>,
    tokens: OnceCell<&'a [&'a str]>,
    hashtags: OnceCell<&'a [&'a str]>,
    mentions: OnceCell<&'a [&'a str]>,
    links: OnceCell<&'a [&'a str]>,
    domains: OnceCell<&'a [&'a str]>,
    facet_mentions: OnceCell<&'a [&'a str]>,
    facet_links: OnceCell<&'a [&'a str]>,
    misleading: OnceCell<bool>,
    text_length: OnceCell<i64>,
    simhash: OnceCell<u64>,
    simhash_bands: OnceCell<&'a [&'a str]>,
    fingerprint: OnceCell<u64>,
    reply: OnceCell<Option<ReplyRef<'a>>>,
    /// Keyword matches per matched string: (whole-word hits, substring hits).
    keyword_cache: StrMemo<'a, (u128, u128)>,
    /// Regex matches per matched string: the matching pattern bitset.
    regex_cache: StrMemo<'a, &'a [u64]>,
    /// Counter key hashes per key string: a key several counters share (`account.did`) is
    /// hashed once.
    key_hashes: StrMemo<'a, u128>,
    /// Distinct-value hashes per value string.
    value_hashes: StrMemo<'a, u64>,
    buf: &'a RefCell<String>,
    /// Counter keys computed for this unit, by counter index.
    pub counter_keys: &'a [OnceCell<Option<u128>>],
}

/// Appends the low `digits` hex digits of `value` (lower case, zero-padded): `{:0digits$x}`
/// without the formatting machinery, which costs more than the rest of a band or key.
pub fn push_hex(out: &mut bumpalo::collections::String<'_>, value: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for nibble in (0..digits).rev() {
        out.push(char::from(HEX[((value >> (4 * nibble)) & 0xf) as usize]));
    }
}

/// The text a facet's byte range covers, if the range is valid for `text`.
fn facet_slice(text: &str, start: i64, end: i64) -> Option<&str> {
    text.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
}

/// Results computed from strings, remembered for one unit by the string's address and length.
/// Every string a unit's evaluation sees lives (unchanged) until the unit is done — in the event,
/// the ruleset or the arena — so the same address and length mean the same bytes.
struct StrMemo<'a, T>(RefCell<BumpVec<'a, (usize, usize, T)>>);

impl<'a, T: Copy> StrMemo<'a, T> {
    fn new(bump: &'a Bump) -> Self {
        StrMemo(RefCell::new(BumpVec::new_in(bump)))
    }

    /// The remembered result for `s`, or `compute(s)` remembered. Units see a handful of
    /// distinct strings, so a linear scan beats hashing them.
    fn get_or_compute(&self, s: &str, compute: impl FnOnce(&str) -> T) -> T {
        let id = (s.as_ptr() as usize, s.len());
        if let Some(&(.., hit)) = self.0.borrow().iter().find(|(p, l, _)| (*p, *l) == id) {
            return hit;
        }
        let value = compute(s);
        self.0.borrow_mut().push((id.0, id.1, value));
        value
    }
}

/// Reusable buffers for [`Frame`]s, so a steady stream of events allocates nothing.
#[derive(Default)]
pub struct Scratch {
    /// The arena.
    pub bump: Bump,
    /// A text buffer for normalisation.
    pub buf: RefCell<String>,
}

impl Scratch {
    /// Frees everything the previous evaluation put in the arena, keeping its memory.
    pub fn reset(&mut self) {
        self.bump.reset();
    }
}

impl<'a> Frame<'a> {
    /// A fresh frame for `input`.
    pub fn new(input: Input<'a>, scratch: &'a Scratch, lists: &'a Lists, counters: usize) -> Self {
        let bump = &scratch.bump;
        Frame {
            input,
            bump,
            lists,
            locals: std::array::from_fn(|_| Cell::new(Val::Missing)),
            time: OnceCell::new(),
            text: OnceCell::new(),
            normalized: OnceCell::new(),
            tokens: OnceCell::new(),
            hashtags: OnceCell::new(),
            mentions: OnceCell::new(),
            links: OnceCell::new(),
            domains: OnceCell::new(),
            facet_mentions: OnceCell::new(),
            facet_links: OnceCell::new(),
            misleading: OnceCell::new(),
            text_length: OnceCell::new(),
            simhash: OnceCell::new(),
            simhash_bands: OnceCell::new(),
            fingerprint: OnceCell::new(),
            reply: OnceCell::new(),
            keyword_cache: StrMemo::new(bump),
            regex_cache: StrMemo::new(bump),
            key_hashes: StrMemo::new(bump),
            value_hashes: StrMemo::new(bump),
            buf: &scratch.buf,
            counter_keys: bump.alloc_slice_fill_with(counters, |_| OnceCell::new()),
        }
    }

    /// The op's record, if the unit is a record write whose record decoded.
    pub fn record(&self) -> Option<&'a Record> {
        self.input.op.and_then(|op| op.record.as_ref())
    }

    /// The record if it is in `collection`.
    pub fn record_in(&self, collection: &str) -> Option<&'a Record> {
        self.input
            .op
            .filter(|op| op.collection == collection)
            .and_then(|op| op.record.as_ref())
    }

    /// The post view, if the record is a post.
    pub fn post(&self) -> Option<Post<'a>> {
        self.record_in("app.bsky.feed.post").map(Record::as_post)
    }

    /// The post's reply reference, if the record is a post that replies.
    pub fn reply(&self) -> Option<ReplyRef<'a>> {
        *self
            .reply
            .get_or_init(|| self.post().and_then(|p| p.reply()))
    }

    /// The event's own time, parsed.
    pub fn event_time(&self) -> Option<i64> {
        *self.time.get_or_init(|| {
            Datetime::new(&self.input.event.time)
                .ok()
                .map(|d| d.timestamp_micros())
        })
    }

    /// Copies a list of strings into the arena.
    pub fn list<I: IntoIterator<Item = &'a str>>(&self, items: I) -> &'a [&'a str] {
        let mut v = BumpVec::new_in(self.bump);
        v.extend(items);
        v.into_bump_slice()
    }

    /// The event's primary text: a post's text; a profile's display name and description; the
    /// name and description of a list, feed generator or starter pack; empty otherwise.
    pub fn text(&self) -> &'a str {
        self.text.get_or_init(|| {
            let Some(record) = self.record() else {
                return "";
            };
            let collection = self.input.op.map_or("", |op| op.collection.as_str());
            if collection == "app.bsky.feed.post" {
                return record.as_post().text();
            }
            let title = record.display_name().or_else(|| record.name());
            match (title, record.description()) {
                (Some(t), Some(d)) => {
                    let mut s = bumpalo::collections::String::with_capacity_in(
                        t.len() + d.len() + 1,
                        self.bump,
                    );
                    s.push_str(t);
                    s.push('\n');
                    s.push_str(d);
                    s.into_bump_str()
                }
                (Some(t), None) => t,
                (None, Some(d)) => d,
                (None, None) => "",
            }
        })
    }

    /// Whether `s` is `text.raw` itself (whose normalised form is cached), without computing
    /// the text when no rule asked for it.
    pub fn is_text(&self, s: &str) -> bool {
        self.text.get().is_some_and(|t| std::ptr::eq(s, *t))
    }

    /// `text.length`: characters of the primary text.
    pub fn text_length(&self) -> i64 {
        *self
            .text_length
            .get_or_init(|| self.text().chars().count() as i64)
    }

    /// The normalised form of `s`, in the arena.
    pub fn normalize(&self, s: &str) -> &'a str {
        let mut buf = self.buf.borrow_mut();
        text::normalize_into(s, &mut buf);
        self.bump.alloc_str(&buf)
    }

    /// `text.normalized`.
    pub fn normalized(&self) -> &'a str {
        self.normalized.get_or_init(|| self.normalize(self.text()))
    }

    /// `text.simhash`: the [`simhash`](crate::text::simhash) of the normalised text, computed
    /// once per unit however many rules, counters and explanations read it.
    pub fn simhash(&self) -> u64 {
        *self
            .simhash
            .get_or_init(|| text::simhash(self.normalized()))
    }

    /// `text.simhash_bands`: the SimHash cut into four 16-bit bands (`0:1a2b`, ...); empty when
    /// the text has no tokens.
    pub fn simhash_bands(&self) -> &'a [&'a str] {
        self.simhash_bands.get_or_init(|| {
            let h = self.simhash();
            if h == 0 {
                return &[];
            }
            self.list((0..4u32).map(|band| {
                let mut s = bumpalo::collections::String::with_capacity_in(6, self.bump);
                s.push(char::from(b'0' + band as u8));
                s.push(':');
                push_hex(&mut s, (h >> (band * 16)) & 0xffff, 4);
                s.into_bump_str() as &str
            }))
        })
    }

    /// `text.fingerprint`: the [`fingerprint`](crate::text::fingerprint) of the normalised
    /// text, computed once per unit.
    pub fn fingerprint(&self) -> u64 {
        *self
            .fingerprint
            .get_or_init(|| text::fingerprint(self.normalized()))
    }

    /// `text.tokens`.
    pub fn tokens(&self) -> &'a [&'a str] {
        self.tokens
            .get_or_init(|| self.list(text::tokens(self.normalized())))
    }

    /// `text.hashtags`: hashtags in the text, in tag facets and in a post's `tags`, lower-cased
    /// and de-duplicated.
    pub fn hashtags(&self) -> &'a [&'a str] {
        self.hashtags.get_or_init(|| {
            let mut v = BumpVec::new_in(self.bump);
            let post = self.post();
            let from_facets = post.into_iter().flat_map(|p| {
                p.facet_features().filter_map(|(_, _, feat)| match feat {
                    FacetFeature::Tag(t) => Some(t),
                    _ => None,
                })
            });
            let from_tags = post.into_iter().flat_map(|p| p.tags());
            for tag in text::hashtags(self.text())
                .chain(from_facets)
                .chain(from_tags)
            {
                let tag: &'a str = if tag.chars().any(char::is_uppercase) {
                    let mut lower =
                        bumpalo::collections::String::with_capacity_in(tag.len(), self.bump);
                    lower.extend(tag.chars().flat_map(char::to_lowercase));
                    lower.into_bump_str()
                } else {
                    tag
                };
                if !v.contains(&tag) {
                    v.push(tag);
                }
            }
            v.into_bump_slice()
        })
    }

    /// `text.mentions`: handles mentioned in the text.
    pub fn mentions(&self) -> &'a [&'a str] {
        self.mentions
            .get_or_init(|| self.list(text::mentions(self.text())))
    }

    /// `record.post.mentions`: DIDs of mention facets, de-duplicated.
    pub fn facet_mentions(&self) -> &'a [&'a str] {
        self.facet_mentions.get_or_init(|| {
            let mut v = BumpVec::new_in(self.bump);
            for (_, _, feat) in self.post().into_iter().flat_map(|p| p.facet_features()) {
                if let FacetFeature::Mention(did) = feat
                    && !v.contains(&did)
                {
                    v.push(did);
                }
            }
            v.into_bump_slice()
        })
    }

    /// `record.post.links`: link facet targets and the external embed's URI.
    pub fn facet_links(&self) -> &'a [&'a str] {
        self.facet_links.get_or_init(|| {
            let mut v = BumpVec::new_in(self.bump);
            if let Some(post) = self.post() {
                for (_, _, feat) in post.facet_features() {
                    if let FacetFeature::Link(uri) = feat {
                        v.push(uri);
                    }
                }
                if let Some(Embed::External { uri: Some(uri), .. }) = post.embed() {
                    v.push(uri);
                }
            }
            v.into_bump_slice()
        })
    }

    /// `text.links`: links written in the text plus link facets and link cards, de-duplicated.
    pub fn links(&self) -> &'a [&'a str] {
        self.links.get_or_init(|| {
            let mut v = BumpVec::new_in(self.bump);
            for link in self
                .facet_links()
                .iter()
                .copied()
                .chain(text::links(self.text()))
            {
                if !v.contains(&link) {
                    v.push(link);
                }
            }
            v.into_bump_slice()
        })
    }

    /// `text.domains`: registrable domains of `text.links`, lower-cased, de-duplicated.
    pub fn domains(&self) -> &'a [&'a str] {
        self.domains.get_or_init(|| {
            let mut v = BumpVec::new_in(self.bump);
            for link in self.links() {
                if let Some(d) = self.domain_of(link)
                    && !v.contains(&d)
                {
                    v.push(d);
                }
            }
            v.into_bump_slice()
        })
    }

    /// The registrable domain of a URL, host or domain, lower-cased.
    pub fn domain_of(&self, link: &'a str) -> Option<&'a str> {
        let host = text::host_of(link)?;
        let lower: &'a str = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = self.bump.alloc_str(host);
            lower.make_ascii_lowercase();
            lower
        } else {
            host
        };
        text::registrable_domain(lower)
    }

    /// `text.misleading_link`: a link facet whose visible text names another domain.
    pub fn misleading_link(&self) -> bool {
        *self.misleading.get_or_init(|| {
            let Some(post) = self.post() else {
                return false;
            };
            let text = post.text();
            post.facet_features().any(|(start, end, feat)| match feat {
                FacetFeature::Link(uri) => facet_slice(text, start, end)
                    .is_some_and(|anchor| text::misleading_link(anchor, uri)),
                _ => false,
            })
        })
    }

    /// `text.bad_facets`: facets whose byte range does not fit the text (a sign of a crafted
    /// record: clients never produce them).
    pub fn bad_facets(&self) -> bool {
        self.post().is_some_and(|p| {
            let text = p.text();
            p.facet_features()
                .any(|(start, end, _)| facet_slice(text, start, end).is_none())
        })
    }

    /// Keyword hits of `s` against every keyword list, as two bitsets over list indexes:
    /// whole-word hits in the normalised text, and hits anywhere in its letters-only form.
    pub fn keyword_hits(&self, s: &str) -> (u128, u128) {
        self.keyword_cache.get_or_compute(s, |s| {
            let normalized = if self.is_text(s) {
                self.normalized()
            } else {
                self.normalize(s)
            };
            self.lists.keyword_hits(normalized, self.bump)
        })
    }

    /// Which patterns of the ruleset's regex set match `s` (bitset over pattern indexes).
    pub fn regex_hits(&self, s: &str, set: &regex::RegexSet) -> &'a [u64] {
        self.regex_cache.get_or_compute(s, |s| {
            let words = set.len().div_ceil(64);
            let bits = self.bump.alloc_slice_fill_copy(words, 0u64);
            for i in set.matches(s).iter() {
                bits[i / 64] |= 1 << (i % 64);
            }
            &*bits
        })
    }

    /// The counter key hash of `s` ([`key_hash`](crate::eval::key_hash)), computed once per unit.
    pub fn key_hash(&self, s: &str) -> u128 {
        self.key_hashes.get_or_compute(s, crate::eval::key_hash)
    }

    /// The distinct-value hash of `s` ([`value_hash`](crate::eval::value_hash)), computed once
    /// per unit.
    pub fn value_hash(&self, s: &str) -> u64 {
        self.value_hashes.get_or_compute(s, crate::eval::value_hash)
    }

    /// The handle of an identity event, if it carries one.
    pub fn identity_handle(&self) -> Option<&'a str> {
        match &self.input.event.body {
            EventBody::Identity { handle } => handle.as_deref(),
            _ => None,
        }
    }
}
