//! Records, read leniently.
//!
//! A record is kept as a flat [`Tree`] of its data model value. Typed views ([`Post`],
//! [`Profile`], ...) read the fields rules need and answer `None` (or empty) for anything missing
//! or of the wrong shape: an unknown collection, an unknown field, or a field with an unexpected
//! type never fails ingestion, it is just not there for the view.

use crate::data::{DataError, Ipld};
use crate::tree::{Tree, Value};
use std::sync::OnceLock;

/// A record of any collection.
///
/// A record read from a firehose block ([`Record::from_block`]) keeps the block and builds its
/// tree on the first read: most records on the network are likes and reposts that no rule
/// reads, so decoding them up front would be work thrown away. Reading it on the worker thread
/// also takes that work off the source thread, which every event goes through.
#[derive(Clone)]
pub struct Record {
    /// The DAG-CBOR block, when the tree is to be built from it on the first read.
    block: Option<Box<[u8]>>,
    tree: OnceLock<Tree>,
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.tree() == other.tree()
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("value", self.tree())
            .finish()
    }
}

fn str_of<'a>(map: Value<'a>, key: &str) -> Option<&'a str> {
    map.get_str(key)
}

/// The map under `key`, if it is a map.
fn map_of<'a>(map: Value<'a>, key: &str) -> Option<Value<'a>> {
    map.get(key).filter(|v| v.is_map())
}

/// The items of the list under `key` (nothing if it is missing or not a list).
fn list_of<'a>(map: Value<'a>, key: &str) -> impl Iterator<Item = Value<'a>> + use<'a> {
    map.get(key).into_iter().flat_map(Value::items)
}

fn int_of(map: Value<'_>, key: &str) -> Option<i64> {
    map.get(key)?.as_i64()
}

impl Record {
    /// Decodes a record block. Fails only when the bytes are not DAG-CBOR at all; a record of
    /// unexpected shape still decodes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, DataError> {
        Tree::from_cbor(bytes).map(Self::from_tree)
    }

    /// Keeps a record block (already checked against its CID) to decode on the first read. A
    /// block that turns out not to be DAG-CBOR reads as `null`: every view of it answers `None`,
    /// as for a record of the wrong shape.
    pub fn from_block(bytes: &[u8]) -> Self {
        Record {
            block: Some(bytes.into()),
            tree: OnceLock::new(),
        }
    }

    /// Reads a record from atproto JSON (Jetstream), with the checks of
    /// [`crate::data::json_to_ipld`].
    pub fn from_json(value: &serde_json::Value) -> Result<Self, DataError> {
        Tree::from_json(value).map(Self::from_tree)
    }

    /// Wraps an already decoded value.
    pub fn from_value(value: Ipld) -> Self {
        Self::from_tree(Tree::from_ipld(&value))
    }

    fn from_tree(tree: Tree) -> Self {
        Record {
            block: None,
            tree: OnceLock::from(tree),
        }
    }

    /// The tree, built from the block on the first call.
    fn tree(&self) -> &Tree {
        self.tree.get_or_init(|| {
            self.block
                .as_deref()
                .and_then(|b| Tree::from_cbor(b).ok())
                .unwrap_or_else(|| Tree::from_ipld(&Ipld::Null))
        })
    }

    /// The value as a view.
    pub fn value(&self) -> Value<'_> {
        self.tree().root()
    }

    /// The value as [`Ipld`].
    pub fn to_ipld(&self) -> Ipld {
        self.tree().to_ipld()
    }

    /// The record as atproto JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.value()).expect("a tree always serializes")
    }

    fn fields(&self) -> Value<'_> {
        self.tree().root()
    }

    /// The record's `$type`, if it has a string one.
    pub fn record_type(&self) -> Option<&str> {
        str_of(self.fields(), "$type")
    }

    /// A top-level string field.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        str_of(self.fields(), key)
    }

    /// Any field by a dotted path (`embed.external.uri`); list items by index (`langs.0`).
    pub fn get_path(&self, path: &str) -> Option<Value<'_>> {
        let mut current = self.tree().root();
        for part in path.split('.') {
            current = if current.is_map() {
                current.get(part)?
            } else {
                current.index(part.parse::<usize>().ok()?)?
            };
        }
        Some(current)
    }

    /// The `createdAt` string, if present.
    pub fn created_at(&self) -> Option<&str> {
        self.get_str("createdAt")
    }

    /// A view as `app.bsky.feed.post`.
    pub fn as_post(&self) -> Post<'_> {
        Post(self.fields())
    }

    /// A view as `app.bsky.actor.profile`.
    pub fn as_profile(&self) -> Profile<'_> {
        Profile(self.fields())
    }

    /// The subject of a like or repost (`subject.uri`), or of a follow or block (`subject` DID),
    /// or a list item (`subject` DID).
    pub fn subject(&self) -> Option<&str> {
        let subject = self.fields().get("subject")?;
        subject.as_str().or_else(|| subject.get_str("uri"))
    }

    /// The `subject.cid` of a like or repost.
    pub fn subject_cid(&self) -> Option<&str> {
        map_of(self.fields(), "subject").and_then(|m| str_of(m, "cid"))
    }

    /// The `name` of a list, starter pack or similar record.
    pub fn name(&self) -> Option<&str> {
        self.get_str("name")
    }

    /// The `displayName` of a profile or feed generator.
    pub fn display_name(&self) -> Option<&str> {
        self.get_str("displayName")
    }

    /// The `description` of a profile, list or feed generator.
    pub fn description(&self) -> Option<&str> {
        self.get_str("description")
    }

    /// The `list` AT-URI of a list item.
    pub fn list(&self) -> Option<&str> {
        self.get_str("list")
    }

    /// Self-labels (`labels.values[].val`) the author put on the record.
    pub fn self_labels(&self) -> impl Iterator<Item = &str> {
        map_of(self.fields(), "labels")
            .into_iter()
            .flat_map(|l| list_of(l, "values"))
            .filter_map(|v| str_of(v, "val"))
    }
}

/// A view of an `app.bsky.feed.post` record.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a>(Value<'a>);

/// A link from a reply to its parent and thread root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyRef<'a> {
    /// AT-URI of the thread root.
    pub root: Option<&'a str>,
    /// AT-URI of the post replied to.
    pub parent: Option<&'a str>,
}

/// A rich-text facet: a byte range of the text and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facet<'a> {
    /// UTF-8 byte offset where the range starts.
    pub byte_start: i64,
    /// UTF-8 byte offset where the range ends (exclusive).
    pub byte_end: i64,
    /// What the range is.
    pub features: Vec<FacetFeature<'a>>,
}

impl Facet<'_> {
    /// The text the facet covers, if its byte range is valid for `text`.
    pub fn slice<'t>(&self, text: &'t str) -> Option<&'t str> {
        let start = usize::try_from(self.byte_start).ok()?;
        let end = usize::try_from(self.byte_end).ok()?;
        text.get(start..end)
    }
}

/// One meaning of a facet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FacetFeature<'a> {
    /// `#mention`: the DID mentioned.
    Mention(&'a str),
    /// `#link`: the target URI.
    Link(&'a str),
    /// `#tag`: the hashtag without `#`.
    Tag(&'a str),
    /// Another feature type.
    Other(&'a str),
}

/// A post's embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Embed<'a> {
    /// `app.bsky.embed.images`: the alt texts, one per image.
    Images(Vec<&'a str>),
    /// `app.bsky.embed.external`: a link card.
    External {
        /// The card's URI.
        uri: Option<&'a str>,
        /// Its title.
        title: Option<&'a str>,
        /// Its description.
        description: Option<&'a str>,
    },
    /// `app.bsky.embed.record`: a quote of another record.
    Record(Option<&'a str>),
    /// `app.bsky.embed.recordWithMedia`: a quote plus media.
    RecordWithMedia {
        /// The quoted record's AT-URI.
        uri: Option<&'a str>,
        /// The media.
        media: Box<Embed<'a>>,
    },
    /// `app.bsky.embed.video`.
    Video {
        /// Alt text.
        alt: Option<&'a str>,
    },
    /// Another embed type (its `$type`, possibly empty).
    Other(&'a str),
}

impl<'a> Embed<'a> {
    /// The embed's `$type` as written in records.
    pub fn type_name(&self) -> &'a str {
        match self {
            Embed::Images(_) => "app.bsky.embed.images",
            Embed::External { .. } => "app.bsky.embed.external",
            Embed::Record(_) => "app.bsky.embed.record",
            Embed::RecordWithMedia { .. } => "app.bsky.embed.recordWithMedia",
            Embed::Video { .. } => "app.bsky.embed.video",
            Embed::Other(t) => t,
        }
    }

    /// The quoted record's AT-URI, for quotes.
    pub fn quoted_uri(&self) -> Option<&'a str> {
        match self {
            Embed::Record(uri) | Embed::RecordWithMedia { uri, .. } => *uri,
            _ => None,
        }
    }

    fn parse(map: Value<'a>) -> Embed<'a> {
        let kind = str_of(map, "$type").unwrap_or("");
        match kind {
            "app.bsky.embed.images" => Embed::Images(
                list_of(map, "images")
                    .map(|img| str_of(img, "alt").unwrap_or(""))
                    .collect(),
            ),
            "app.bsky.embed.external" => {
                let ext = map_of(map, "external");
                Embed::External {
                    uri: ext.and_then(|e| str_of(e, "uri")),
                    title: ext.and_then(|e| str_of(e, "title")),
                    description: ext.and_then(|e| str_of(e, "description")),
                }
            }
            "app.bsky.embed.record" => {
                Embed::Record(map_of(map, "record").and_then(|r| str_of(r, "uri")))
            }
            "app.bsky.embed.recordWithMedia" => {
                // The quote is `record.record.uri`: a record-embed wrapped in the outer one.
                let uri = map_of(map, "record")
                    .and_then(|r| map_of(r, "record"))
                    .and_then(|r| str_of(r, "uri"));
                let media = map_of(map, "media").map_or(Embed::Other(""), Embed::parse);
                Embed::RecordWithMedia {
                    uri,
                    media: Box::new(media),
                }
            }
            "app.bsky.embed.video" => Embed::Video {
                alt: str_of(map, "alt"),
            },
            other => Embed::Other(other),
        }
    }
}

impl<'a> Post<'a> {
    /// The post text ("" when missing).
    pub fn text(&self) -> &'a str {
        str_of(self.0, "text").unwrap_or("")
    }

    /// Declared languages.
    pub fn langs(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        list_of(self.0, "langs").filter_map(Value::as_str)
    }

    /// Extra hashtags in the `tags` field (outside the text).
    pub fn tags(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        list_of(self.0, "tags").filter_map(Value::as_str)
    }

    /// The reply reference, if this post is a reply.
    pub fn reply(&self) -> Option<ReplyRef<'a>> {
        let reply = map_of(self.0, "reply")?;
        Some(ReplyRef {
            root: map_of(reply, "root").and_then(|r| str_of(r, "uri")),
            parent: map_of(reply, "parent").and_then(|r| str_of(r, "uri")),
        })
    }

    /// The embed, if any.
    pub fn embed(&self) -> Option<Embed<'a>> {
        map_of(self.0, "embed").map(Embed::parse)
    }

    /// The facets, skipping malformed ones.
    pub fn facets(&self) -> Vec<Facet<'a>> {
        list_of(self.0, "facets")
            .filter_map(|f| {
                let (byte_start, byte_end, features) = facet_parts(f)?;
                Some(Facet {
                    byte_start,
                    byte_end,
                    features: features.collect(),
                })
            })
            .collect()
    }

    /// Every feature of every well-formed facet with its byte range, without allocating:
    /// `(byte_start, byte_end, feature)`.
    pub fn facet_features(&self) -> impl Iterator<Item = (i64, i64, FacetFeature<'a>)> + use<'a> {
        list_of(self.0, "facets").flat_map(|f| {
            facet_parts(f)
                .into_iter()
                .flat_map(|(start, end, features)| features.map(move |feat| (start, end, feat)))
        })
    }
}

/// A facet's byte range and its features, if the facet is well-formed.
fn facet_parts(
    f: Value<'_>,
) -> Option<(i64, i64, impl Iterator<Item = FacetFeature<'_>> + use<'_>)> {
    let index = map_of(f, "index")?;
    let features = list_of(f, "features").filter_map(|feat| {
        let kind = str_of(feat, "$type").unwrap_or("");
        Some(match kind {
            "app.bsky.richtext.facet#mention" => FacetFeature::Mention(str_of(feat, "did")?),
            "app.bsky.richtext.facet#link" => FacetFeature::Link(str_of(feat, "uri")?),
            "app.bsky.richtext.facet#tag" => FacetFeature::Tag(str_of(feat, "tag")?),
            other => FacetFeature::Other(other),
        })
    });
    Some((
        int_of(index, "byteStart")?,
        int_of(index, "byteEnd")?,
        features,
    ))
}

/// A view of an `app.bsky.actor.profile` record.
#[derive(Debug, Clone, Copy)]
pub struct Profile<'a>(Value<'a>);

impl<'a> Profile<'a> {
    /// Display name.
    pub fn display_name(&self) -> Option<&'a str> {
        str_of(self.0, "displayName")
    }

    /// Bio.
    pub fn description(&self) -> Option<&'a str> {
        str_of(self.0, "description")
    }

    /// Whether an avatar blob is set.
    pub fn has_avatar(&self) -> bool {
        self.0.get("avatar").is_some()
    }

    /// Whether a banner blob is set.
    pub fn has_banner(&self) -> bool {
        self.0.get("banner").is_some()
    }

    /// The pinned post's AT-URI.
    pub fn pinned_post(&self) -> Option<&'a str> {
        map_of(self.0, "pinnedPost").and_then(|p| str_of(p, "uri"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{encode_cbor, json_to_ipld};

    #[test]
    fn a_block_read_late_is_the_record_decoded_up_front() {
        let value = json_to_ipld(&serde_json::json!({
            "$type": "app.bsky.feed.post",
            "text": "hello @alice.test",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "reply": {
                "root": {"uri": "at://did:plc:a/app.bsky.feed.post/1", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
                "parent": {"uri": "at://did:plc:b/app.bsky.feed.post/2", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
            }
        }))
        .unwrap();
        let bytes = encode_cbor(&value).unwrap();
        let eager = Record::from_cbor(&bytes).unwrap();
        let lazy = Record::from_block(&bytes);
        assert_eq!(lazy.as_post().text(), "hello @alice.test");
        assert_eq!(
            lazy.as_post().reply().and_then(|r| r.parent),
            Some("at://did:plc:b/app.bsky.feed.post/2")
        );
        assert_eq!(lazy.to_ipld(), value);
        assert_eq!(lazy, eager);
        assert_eq!(lazy.to_json(), eager.to_json());
    }

    #[test]
    fn a_block_that_is_not_dag_cbor_reads_as_null() {
        // A text string's head promising 5 bytes, followed by 2: not a complete CBOR item.
        let record = Record::from_block(b"\x65ab");
        assert!(Record::from_cbor(b"\x65ab").is_err());
        assert_eq!(record.to_ipld(), Ipld::Null);
        assert_eq!(record.record_type(), None);
        assert_eq!(record.subject(), None);
        assert_eq!(record.as_post().text(), "");
        assert_eq!(record.to_json(), serde_json::Value::Null);
    }
}
