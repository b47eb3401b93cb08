//! A data model value as one flat tree: nodes in one buffer, text in another.
//!
//! A record decoded into [`Ipld`] costs an allocation per map, per key and per string, and as
//! many frees when the event is dropped, often on another thread. A [`Tree`] holds the same
//! value in at most three allocations: the nodes in pre-order (a list or map node is followed by
//! its children and records where its subtree ends), the text of every key and string, and the
//! payloads of byte strings and links. [`Value`] is a borrowed view of one node.
//!
//! Decoding reads the shapes records are made of (integers, strings, bytes, lists, maps, links,
//! booleans and null, with minimal-length heads) directly; anything else (floats, integers
//! beyond `i64`, non-minimal heads, other tags and simple values, deep nesting, duplicate keys,
//! malformed input) goes through `serde_ipld_dagcbor` with a visitor that appends nodes. So a
//! tree accepts exactly the inputs [`crate::data::decode_cbor`] accepts, and [`Tree::to_ipld`]
//! gives back the value that decoding into [`Ipld`] would have given.

use crate::data::{DataError, Ipld, check_blob_json, decode_base64, model_err};
use cid::Cid;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// One node. Spans are `(start, len)` into the tree's text or binary buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`: 16 little-endian bytes in the binary buffer.
    BigInt(u32),
    Float(f64),
    Str(u32, u32),
    Bytes(u32, u32),
    /// A CID's binary form (already checked to parse).
    Link(u32, u32),
    /// `len` items follow; `end` is the index after the last node of the subtree.
    List {
        len: u32,
        end: u32,
    },
    /// `len` entries follow, each a `Str` key node then the value's nodes.
    Map {
        len: u32,
        end: u32,
    },
}

/// A data model value in flat form. Build it with [`Tree::from_cbor`] or [`Tree::from_ipld`].
#[derive(Clone, Default)]
pub struct Tree {
    nodes: Vec<Node>,
    text: String,
    bin: Vec<u8>,
}

/// What a node is, with its scalar payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind<'a> {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (DAG-CBOR integers span −2⁶⁴ … 2⁶⁴−1).
    Int(i128),
    /// A float.
    Float(f64),
    /// A text string.
    Str(&'a str),
    /// A byte string.
    Bytes(&'a [u8]),
    /// A link, as the CID's binary form ([`Value::as_link`] parses it).
    Link(&'a [u8]),
    /// A list of this many items.
    List(usize),
    /// A map of this many entries.
    Map(usize),
}

/// A borrowed view of one value in a [`Tree`].
#[derive(Clone, Copy)]
pub struct Value<'a> {
    tree: &'a Tree,
    at: usize,
}

fn span(start: usize, len: usize) -> Result<(u32, u32), String> {
    match (u32::try_from(start), u32::try_from(len)) {
        (Ok(s), Ok(l)) => Ok((s, l)),
        _ => Err("value too large".into()),
    }
}

impl Tree {
    /// Decodes one DAG-CBOR value. Fails exactly when [`crate::data::decode_cbor`] fails.
    pub fn from_cbor(bytes: &[u8]) -> Result<Tree, DataError> {
        Tree::from_cbor_direct(bytes).map_or_else(|| Tree::from_cbor_general(bytes), Ok)
    }

    fn empty_for(bytes: &[u8]) -> Tree {
        Tree {
            nodes: Vec::with_capacity(bytes.len() / 8 + 1),
            text: String::with_capacity(bytes.len()),
            bin: Vec::new(),
        }
    }

    /// The common shapes, read directly (see the module documentation); `None` for the rest.
    fn from_cbor_direct(bytes: &[u8]) -> Option<Tree> {
        let mut tree = Tree::empty_for(bytes);
        let mut direct = Direct { bytes, at: 0 };
        direct.value(&mut tree, 0)?;
        (direct.at == bytes.len()).then_some(tree)
    }

    /// Everything, through `serde_ipld_dagcbor`.
    fn from_cbor_general(bytes: &[u8]) -> Result<Tree, DataError> {
        let mut tree = Tree::empty_for(bytes);
        let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(bytes);
        NodeSeed(&mut tree)
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| DataError::Cbor(e.to_string()))?;
        Ok(tree)
    }

    /// Converts atproto JSON (with `$link`, `$bytes` and blob objects), checking the data model
    /// rules: the top level is an object, no non-integer floats, `$type` a non-empty string,
    /// well-formed links, bytes and blobs. [`crate::data::json_to_ipld`] is this, as `Ipld`.
    pub fn from_json(value: &serde_json::Value) -> Result<Tree, DataError> {
        if !value.is_object() {
            return Err(model_err("", "top level must be an object"));
        }
        let mut tree = Tree::default();
        tree.push_json(value, &mut String::new())?;
        Ok(tree)
    }

    fn push_json(&mut self, value: &serde_json::Value, path: &mut String) -> Result<(), DataError> {
        use serde_json::Value as J;
        match value {
            J::Null => self.nodes.push(Node::Null),
            J::Bool(b) => self.nodes.push(Node::Bool(*b)),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    self.push_int(i.into());
                } else if let Some(u) = n.as_u64() {
                    self.push_int(u.into());
                } else {
                    // JSON writers print some integers as `123.0`; that is still an integer.
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                        self.push_int(f as i128);
                    } else {
                        return Err(model_err(path, format!("float {n} is not allowed")));
                    }
                }
            }
            J::String(s) => {
                let (s, l) = self.push_text(s).map_err(too_large(path))?;
                self.nodes.push(Node::Str(s, l));
            }
            J::Array(items) => {
                let at = self.open(Node::List { len: 0, end: 0 });
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    self.push_json(item, path)?;
                    path.truncate(len);
                }
                self.close(at, items.len()).map_err(too_large(path))?;
            }
            J::Object(map) => {
                if let Some(link) = map.get("$link") {
                    if map.len() != 1 {
                        return Err(model_err(path, "$link object must have no other fields"));
                    }
                    let s = link
                        .as_str()
                        .ok_or_else(|| model_err(path, "$link must be a string"))?;
                    let cid = Cid::try_from(s)
                        .map_err(|e| model_err(path, format!("$link is not a CID: {e}")))?;
                    let (s, l) = self.push_bin(&cid.to_bytes()).map_err(too_large(path))?;
                    self.nodes.push(Node::Link(s, l));
                    return Ok(());
                }
                if let Some(bytes) = map.get("$bytes") {
                    if map.len() != 1 {
                        return Err(model_err(path, "$bytes object must have no other fields"));
                    }
                    let s = bytes
                        .as_str()
                        .ok_or_else(|| model_err(path, "$bytes must be a base64 string"))?;
                    let raw = decode_base64(s)
                        .ok_or_else(|| model_err(path, "$bytes is not valid base64"))?;
                    let (s, l) = self.push_bin(&raw).map_err(too_large(path))?;
                    self.nodes.push(Node::Bytes(s, l));
                    return Ok(());
                }
                if let Some(t) = map.get("$type") {
                    match t.as_str() {
                        Some("") => return Err(model_err(path, "$type must not be empty")),
                        Some("blob") => check_blob_json(map, path)?,
                        Some(_) => {}
                        None => return Err(model_err(path, "$type must be a string")),
                    }
                }
                let at = self.open(Node::Map { len: 0, end: 0 });
                for (k, v) in map {
                    let (s, l) = self.push_text(k).map_err(too_large(path))?;
                    self.nodes.push(Node::Str(s, l));
                    let len = path.len();
                    path.push('/');
                    path.push_str(k);
                    self.push_json(v, path)?;
                    path.truncate(len);
                }
                self.close(at, map.len()).map_err(too_large(path))?;
            }
        }
        Ok(())
    }

    /// The tree of a decoded value.
    pub fn from_ipld(value: &Ipld) -> Tree {
        let mut tree = Tree::default();
        tree.push_ipld(value);
        tree
    }

    /// The root value.
    pub fn root(&self) -> Value<'_> {
        Value { tree: self, at: 0 }
    }

    /// The value as [`Ipld`].
    pub fn to_ipld(&self) -> Ipld {
        self.root().to_ipld()
    }

    fn push_text(&mut self, s: &str) -> Result<(u32, u32), String> {
        let start = self.text.len();
        self.text.push_str(s);
        span(start, s.len())
    }

    fn push_bin(&mut self, b: &[u8]) -> Result<(u32, u32), String> {
        let start = self.bin.len();
        self.bin.extend_from_slice(b);
        span(start, b.len())
    }

    fn push_int(&mut self, i: i128) {
        match i64::try_from(i) {
            Ok(small) => self.nodes.push(Node::Int(small)),
            Err(_) => {
                let start = self.bin.len() as u32;
                self.bin.extend_from_slice(&i.to_le_bytes());
                self.nodes.push(Node::BigInt(start));
            }
        }
    }

    /// Appends a container node; [`Tree::close`] fills it in once its children are pushed.
    fn open(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn close(&mut self, at: usize, len: usize) -> Result<(), String> {
        let (len, end) = span(len, self.nodes.len())?;
        self.nodes[at] = match self.nodes[at] {
            Node::List { .. } => Node::List { len, end },
            _ => Node::Map { len, end },
        };
        Ok(())
    }

    fn push_ipld(&mut self, value: &Ipld) {
        // Values built in memory are far below the u32 spans; a failure here is a bug.
        let fits = "value fits u32 spans";
        match value {
            Ipld::Null => self.nodes.push(Node::Null),
            Ipld::Bool(b) => self.nodes.push(Node::Bool(*b)),
            Ipld::Integer(i) => self.push_int(*i),
            Ipld::Float(f) => self.nodes.push(Node::Float(*f)),
            Ipld::String(s) => {
                let (s, l) = self.push_text(s).expect(fits);
                self.nodes.push(Node::Str(s, l));
            }
            Ipld::Bytes(b) => {
                let (s, l) = self.push_bin(b).expect(fits);
                self.nodes.push(Node::Bytes(s, l));
            }
            Ipld::Link(cid) => {
                let (s, l) = self.push_bin(&cid.to_bytes()).expect(fits);
                self.nodes.push(Node::Link(s, l));
            }
            Ipld::List(items) => {
                let at = self.open(Node::List { len: 0, end: 0 });
                for item in items {
                    self.push_ipld(item);
                }
                self.close(at, items.len()).expect(fits);
            }
            Ipld::Map(map) => {
                let at = self.open(Node::Map { len: 0, end: 0 });
                for (k, v) in map {
                    let (s, l) = self.push_text(k).expect(fits);
                    self.nodes.push(Node::Str(s, l));
                    self.push_ipld(v);
                }
                self.close(at, map.len()).expect(fits);
            }
        }
    }

    /// The index after the subtree at `at`.
    fn end_of(&self, at: usize) -> usize {
        match self.nodes[at] {
            Node::List { end, .. } | Node::Map { end, .. } => end as usize,
            _ => at + 1,
        }
    }

    fn text_at(&self, start: u32, len: u32) -> &str {
        &self.text[start as usize..(start + len) as usize]
    }

    fn bin_at(&self, start: u32, len: u32) -> &[u8] {
        &self.bin[start as usize..(start + len) as usize]
    }
}

impl PartialEq for Tree {
    fn eq(&self, other: &Tree) -> bool {
        self.to_ipld() == other.to_ipld()
    }
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ipld().fmt(f)
    }
}

impl<'a> Value<'a> {
    /// What this value is.
    pub fn kind(self) -> Kind<'a> {
        let t = self.tree;
        match t.nodes[self.at] {
            Node::Null => Kind::Null,
            Node::Bool(b) => Kind::Bool(b),
            Node::Int(i) => Kind::Int(i.into()),
            Node::BigInt(start) => {
                let raw: [u8; 16] = t.bin[start as usize..start as usize + 16]
                    .try_into()
                    .expect("16 bytes were written");
                Kind::Int(i128::from_le_bytes(raw))
            }
            Node::Float(x) => Kind::Float(x),
            Node::Str(s, l) => Kind::Str(t.text_at(s, l)),
            Node::Bytes(s, l) => Kind::Bytes(t.bin_at(s, l)),
            Node::Link(s, l) => Kind::Link(t.bin_at(s, l)),
            Node::List { len, .. } => Kind::List(len as usize),
            Node::Map { len, .. } => Kind::Map(len as usize),
        }
    }

    /// The string, if this is a text string.
    pub fn as_str(self) -> Option<&'a str> {
        match self.tree.nodes[self.at] {
            Node::Str(s, l) => Some(self.tree.text_at(s, l)),
            _ => None,
        }
    }

    /// The integer, if this is one that fits `i64`.
    pub fn as_i64(self) -> Option<i64> {
        match self.tree.nodes[self.at] {
            Node::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The CID, if this is a link.
    pub fn as_link(self) -> Option<Cid> {
        match self.tree.nodes[self.at] {
            Node::Link(s, l) => Cid::try_from(self.tree.bin_at(s, l)).ok(),
            _ => None,
        }
    }

    /// Whether this is a map.
    pub fn is_map(self) -> bool {
        matches!(self.tree.nodes[self.at], Node::Map { .. })
    }

    /// The entries, if this is a map (nothing otherwise), in the order they were written.
    pub fn entries(self) -> impl Iterator<Item = (&'a str, Value<'a>)> + use<'a> {
        let len = match self.tree.nodes[self.at] {
            Node::Map { len, .. } => len as usize,
            _ => 0,
        };
        let tree = self.tree;
        let mut at = self.at + 1;
        (0..len).map(move |_| {
            let key = Value { tree, at }.as_str().unwrap_or("");
            let value = Value { tree, at: at + 1 };
            at = tree.end_of(at + 1);
            (key, value)
        })
    }

    /// The items, if this is a list (nothing otherwise).
    pub fn items(self) -> impl Iterator<Item = Value<'a>> + use<'a> {
        let len = match self.tree.nodes[self.at] {
            Node::List { len, .. } => len as usize,
            _ => 0,
        };
        let tree = self.tree;
        let mut at = self.at + 1;
        (0..len).map(move |_| {
            let item = Value { tree, at };
            at = tree.end_of(at);
            item
        })
    }

    /// The value under `key`, if this is a map that has it.
    pub fn get(self, key: &str) -> Option<Value<'a>> {
        self.entries().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The string under `key`, if this is a map and it is a string.
    pub fn get_str(self, key: &str) -> Option<&'a str> {
        self.get(key)?.as_str()
    }

    /// The item at `index`, if this is a list that long.
    pub fn index(self, index: usize) -> Option<Value<'a>> {
        self.items().nth(index)
    }

    /// The value as [`Ipld`].
    pub fn to_ipld(self) -> Ipld {
        match self.kind() {
            Kind::Null => Ipld::Null,
            Kind::Bool(b) => Ipld::Bool(b),
            Kind::Int(i) => Ipld::Integer(i),
            Kind::Float(x) => Ipld::Float(x),
            Kind::Str(s) => Ipld::String(s.to_string()),
            Kind::Bytes(b) => Ipld::Bytes(b.to_vec()),
            Kind::Link(_) => Ipld::Link(self.as_link().expect("links are checked when built")),
            Kind::List(_) => Ipld::List(self.items().map(Value::to_ipld).collect()),
            Kind::Map(_) => Ipld::Map(
                self.entries()
                    .map(|(k, v)| (k.to_string(), v.to_ipld()))
                    .collect::<BTreeMap<_, _>>(),
            ),
        }
    }
}

/// Serializes as atproto JSON, the same value [`crate::data::ipld_to_json`] gives for
/// [`Value::to_ipld`] (links as `{"$link"}`, bytes as `{"$bytes"}`, integers outside `i64` as
/// strings, non-finite floats as `null`), written straight from the tree without building it;
/// map entries come in the tree's order.
impl serde::Serialize for Value<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.kind() {
            Kind::Null => serializer.serialize_unit(),
            Kind::Bool(b) => serializer.serialize_bool(b),
            Kind::Int(i) => match i64::try_from(i) {
                Ok(i) => serializer.serialize_i64(i),
                Err(_) => serializer.collect_str(&i),
            },
            Kind::Float(x) if x.is_finite() => serializer.serialize_f64(x),
            Kind::Float(_) => serializer.serialize_unit(),
            Kind::Str(s) => serializer.serialize_str(s),
            Kind::Bytes(b) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("$bytes", &crate::data::encode_base64(b))?;
                map.end()
            }
            Kind::Link(_) => {
                let cid = self.as_link().expect("links are checked when built");
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("$link", &cid.to_string())?;
                map.end()
            }
            Kind::List(len) => {
                let mut seq = serializer.serialize_seq(Some(len))?;
                for item in self.items() {
                    seq.serialize_element(&item)?;
                }
                seq.end()
            }
            Kind::Map(len) => {
                let mut map = serializer.serialize_map(Some(len))?;
                for (k, v) in self.entries() {
                    map.serialize_entry(k, &v)?;
                }
                map.end()
            }
        }
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ipld().fmt(f)
    }
}

/// Maps a span overflow to a data model error at `path`.
fn too_large(path: &str) -> impl FnOnce(String) -> DataError + '_ {
    move |e| model_err(path, e)
}

/// Deserializes one value by appending its nodes to the tree.
/// The direct decoder behind [`Tree::from_cbor`]: `None` leaves the input to
/// `serde_ipld_dagcbor`, which decodes what this does not handle and words the errors.
struct Direct<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Direct<'b> {
    /// Nesting this decoder handles; deeper values (far beyond any record) take the general path.
    const MAX_DEPTH: usize = 64;
    /// Keys of one map this decoder handles.
    const MAX_KEYS: usize = 32;

    fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len())?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Some(taken)
    }

    /// A head: major type, and the argument, which must be minimally encoded.
    fn head(&mut self) -> Option<(u8, u64)> {
        let first = *self.take(1)?.first()?;
        let (major, info) = (first >> 5, first & 0x1f);
        let (arg, smallest) = match info {
            0..=23 => (u64::from(info), 0),
            24 => (u64::from(self.take(1)?[0]), 24),
            25 => (
                u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
                0x100,
            ),
            26 => (
                u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
                0x1_0000,
            ),
            27 => (
                u64::from_be_bytes(self.take(8)?.try_into().ok()?),
                0x1_0000_0000,
            ),
            _ => return None,
        };
        (arg >= smallest).then_some((major, arg))
    }

    /// The payload of a byte or text string whose head announced `len` bytes.
    fn payload(&mut self, len: u64) -> Option<&'b [u8]> {
        self.take(usize::try_from(len).ok()?)
    }

    fn value(&mut self, tree: &mut Tree, depth: usize) -> Option<()> {
        if depth > Self::MAX_DEPTH {
            return None;
        }
        let simple = *self.bytes.get(self.at)?;
        if simple >> 5 == 7 {
            self.at += 1;
            tree.nodes.push(match simple & 0x1f {
                20 => Node::Bool(false),
                21 => Node::Bool(true),
                22 => Node::Null,
                _ => return None,
            });
            return Some(());
        }
        let (major, arg) = self.head()?;
        // Every item takes at least a byte: a count beyond what is left is malformed.
        let count = |d: &Self| {
            usize::try_from(arg)
                .ok()
                .filter(|&n| n <= d.bytes.len() - d.at)
        };
        match major {
            0 => tree.nodes.push(Node::Int(i64::try_from(arg).ok()?)),
            1 => tree.nodes.push(Node::Int(-1 - i64::try_from(arg).ok()?)),
            2 => {
                let (s, l) = tree.push_bin(self.payload(arg)?).ok()?;
                tree.nodes.push(Node::Bytes(s, l));
            }
            3 => {
                let text = crate::cbor::utf8(self.payload(arg)?)?;
                let (s, l) = tree.push_text(text).ok()?;
                tree.nodes.push(Node::Str(s, l));
            }
            4 => {
                let len = count(self)?;
                let at = tree.open(Node::List { len: 0, end: 0 });
                for _ in 0..len {
                    self.value(tree, depth + 1)?;
                }
                tree.close(at, len).ok()?;
            }
            5 => {
                // Keys seen, to find duplicates (refused by the general path, with its error);
                // wider maps, rare in records, take that path too.
                let mut keys = [""; Self::MAX_KEYS];
                let len = count(self).filter(|&n| n <= Self::MAX_KEYS)?;
                let at = tree.open(Node::Map { len: 0, end: 0 });
                for i in 0..len {
                    let (3, key_len) = self.head()? else {
                        return None;
                    };
                    let key = crate::cbor::utf8(self.payload(key_len)?)?;
                    if keys[..i].contains(&key) {
                        return None;
                    }
                    keys[i] = key;
                    let (s, l) = tree.push_text(key).ok()?;
                    tree.nodes.push(Node::Str(s, l));
                    self.value(tree, depth + 1)?;
                }
                tree.close(at, len).ok()?;
            }
            6 if arg == 42 => {
                let (2, len) = self.head()? else {
                    return None;
                };
                // A CID in DAG-CBOR: a zero byte (the identity multibase), then the binary CID.
                let bytes = self.payload(len)?;
                let (0, cid) = bytes.split_first()? else {
                    return None;
                };
                Cid::try_from(cid).ok()?;
                let (s, l) = tree.push_bin(cid).ok()?;
                tree.nodes.push(Node::Link(s, l));
            }
            _ => return None,
        }
        Some(())
    }
}

struct NodeSeed<'t>(&'t mut Tree);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid IPLD kind")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.nodes.push(Node::Bool(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push_int(v.into());
        Ok(())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        self.0.push_int(v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push_int(v.into());
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.nodes.push(Node::Float(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let (s, l) = self.0.push_text(v).map_err(E::custom)?;
        self.0.nodes.push(Node::Str(s, l));
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        let (s, l) = self.0.push_bin(v).map_err(E::custom)?;
        self.0.nodes.push(Node::Bytes(s, l));
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.nodes.push(Node::Null);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_none()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let tree = self.0;
        let at = tree.open(Node::List { len: 0, end: 0 });
        let mut len = 0;
        while seq.next_element_seed(NodeSeed(tree))?.is_some() {
            len += 1;
        }
        tree.close(at, len).map_err(de::Error::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let tree = self.0;
        let at = tree.open(Node::Map { len: 0, end: 0 });
        // Key spans, to refuse duplicates as decoding into `Ipld` does.
        let mut keys: Vec<(u32, u32)> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed(tree))? {
            let text = tree.text_at(key.0, key.1);
            if keys.iter().any(|&(s, l)| tree.text_at(s, l) == text) {
                return Err(de::Error::custom("Duplicate map key"));
            }
            keys.push(key);
            map.next_value_seed(NodeSeed(tree))?;
        }
        tree.close(at, keys.len()).map_err(de::Error::custom)
    }

    /// Newtype structs are how `serde_ipld_dagcbor` hands over CIDs (tag 42).
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_bytes(LinkSeed(self.0))
    }
}

/// A map key: must be a text string.
struct KeySeed<'t>(&'t mut Tree);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = (u32, u32);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(u32, u32), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = (u32, u32);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string map key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(u32, u32), E> {
        let key = self.0.push_text(v).map_err(E::custom)?;
        self.0.nodes.push(Node::Str(key.0, key.1));
        Ok(key)
    }
}

/// A CID's bytes, checked to parse.
struct LinkSeed<'t>(&'t mut Tree);

impl<'de> Visitor<'de> for LinkSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a valid CID in bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        Cid::try_from(v).map_err(|_| E::custom(format!("Failed to deserialize CID: {v:?}")))?;
        let (s, l) = self.0.push_bin(v).map_err(E::custom)?;
        self.0.nodes.push(Node::Link(s, l));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{decode_cbor, encode_cbor};

    fn sample() -> Ipld {
        let json = serde_json::json!({
            "$type": "app.bsky.feed.post",
            "text": "héllo",
            "langs": ["en", "fr"],
            "n": -3,
            "big": 0,
            "flag": true,
            "none": null,
            "embed": {"images": [{"alt": "a", "image": {"$type": "blob",
                "ref": {"$link": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},
                "mimeType": "image/png", "size": 10}}]},
            "raw": {"$bytes": "AQID"}
        });
        let mut v = crate::data::json_to_ipld(&json).unwrap();
        if let Ipld::Map(m) = &mut v {
            m.insert("big".into(), Ipld::Integer(-(1i128 << 64)));
            m.insert("float".into(), Ipld::Float(1.5));
        }
        v
    }

    /// A deterministic value generator: nested maps and lists of every kind, with the integer
    /// edges where heads change width.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn value(&mut self, depth: usize) -> Ipld {
            const INTS: [i128; 14] = [
                0,
                23,
                24,
                255,
                256,
                65_535,
                65_536,
                -1,
                -24,
                -25,
                4_294_967_296,
                i64::MAX as i128,
                i64::MIN as i128,
                -(1i128 << 64),
            ];
            const TEXTS: [&str; 5] = ["", "text", "héllo wörld", "🚀", "$type"];
            match self.next() % if depth > 3 { 7 } else { 9 } {
                0 => Ipld::Null,
                1 => Ipld::Bool(self.next().is_multiple_of(2)),
                2 => Ipld::Integer(INTS[(self.next() % 14) as usize]),
                3 => Ipld::String(
                    TEXTS[(self.next() % 5) as usize].repeat((self.next() % 30) as usize),
                ),
                4 => Ipld::Bytes(vec![7u8; (self.next() % 300) as usize]),
                5 => Ipld::Link(crate::data::cid_for(0x71, &self.next().to_le_bytes())),
                6 => Ipld::Float([1.5, -0.0, 1e300][(self.next() % 3) as usize]),
                7 => Ipld::List(
                    (0..self.next() % 5)
                        .map(|_| self.value(depth + 1))
                        .collect(),
                ),
                _ => Ipld::Map(
                    (0..self.next() % 40)
                        .map(|i| (format!("k{}", i * 7 % 13), self.value(depth + 1)))
                        .collect(),
                ),
            }
        }
    }

    /// No floats, no integers beyond `i64`, no map wider than the direct decoder takes.
    fn plain_shape(v: &Ipld) -> bool {
        match v {
            Ipld::Float(_) => false,
            Ipld::Integer(i) => i64::try_from(*i).is_ok(),
            Ipld::List(l) => l.iter().all(plain_shape),
            Ipld::Map(m) => m.len() <= Direct::MAX_KEYS && m.values().all(plain_shape),
            _ => true,
        }
    }

    /// The direct decoder against the general one: on values of every kind and on corrupted
    /// encodings of them, whatever the direct decoder accepts, the general one accepts as the
    /// same tree, and it accepts the plain shapes records are made of.
    #[test]
    fn direct_decoding_agrees_with_the_general_decoder() {
        let mut g = Gen(0x5eed_1234_abcd_0001);
        let (mut direct, mut plain) = (0, 0);
        for round in 0..4_000 {
            let value = g.value(0);
            let mut bytes = encode_cbor(&value).unwrap();
            if round % 2 == 1 && !bytes.is_empty() {
                // Corrupt: flip a byte, cut the tail, or append a byte.
                let i = (g.next() % bytes.len() as u64) as usize;
                match g.next() % 3 {
                    0 => bytes[i] ^= 1 << (g.next() % 8),
                    1 => bytes.truncate(i),
                    _ => bytes.push(0),
                }
            }
            let general = Tree::from_cbor_general(&bytes);
            if let Some(tree) = Tree::from_cbor_direct(&bytes) {
                direct += 1;
                let general = general.unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"));
                assert_eq!(tree.nodes, general.nodes, "{bytes:02x?}");
                assert_eq!(tree.text, general.text);
                assert_eq!(tree.bin, general.bin);
            }
            if round % 2 == 0 && plain_shape(&value) {
                plain += 1;
                assert!(Tree::from_cbor_direct(&bytes).is_some(), "{value:?}");
            }
        }
        assert!(
            direct > 1_000 && plain > 500,
            "{direct} direct, {plain} plain"
        );
    }

    #[test]
    fn cbor_and_ipld_trees_give_back_the_value() {
        let value = sample();
        let bytes = encode_cbor(&value).unwrap();
        assert_eq!(Tree::from_cbor(&bytes).unwrap().to_ipld(), value);
        assert_eq!(Tree::from_ipld(&value).to_ipld(), value);
    }

    #[test]
    fn serializes_as_the_atproto_json_of_its_value() {
        let value = sample();
        let bytes = encode_cbor(&value).unwrap();
        let tree = Tree::from_cbor(&bytes).unwrap();
        let expected = crate::data::ipld_to_json(&value);
        assert_eq!(serde_json::to_value(tree.root()).unwrap(), expected);
        let text = serde_json::to_string(&tree.root()).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            expected
        );
        assert!(text.contains(r#""raw":{"$bytes":"AQID"}"#), "{text}");
        assert!(text.contains(r#""big":"-18446744073709551616""#), "{text}");
    }

    #[test]
    fn views_read_nested_values() {
        let tree = Tree::from_ipld(&sample());
        let root = tree.root();
        assert_eq!(root.get_str("text"), Some("héllo"));
        assert_eq!(root.get("n").and_then(Value::as_i64), Some(-3));
        assert_eq!(
            root.get("big").map(Value::kind),
            Some(Kind::Int(-(1i128 << 64)))
        );
        let langs: Vec<_> = root
            .get("langs")
            .unwrap()
            .items()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(langs, ["en", "fr"]);
        let image = root
            .get("embed")
            .and_then(|e| e.get("images"))
            .and_then(|l| l.index(0));
        assert_eq!(image.and_then(|i| i.get_str("alt")), Some("a"));
        let link = image
            .and_then(|i| i.get("image"))
            .and_then(|b| b.get("ref"));
        assert_eq!(
            link.and_then(Value::as_link)
                .map(|c| c.to_string())
                .as_deref(),
            Some("bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy")
        );
        // Past the nested subtrees, siblings are still found.
        assert_eq!(
            root.get("raw").map(Value::kind),
            Some(Kind::Bytes(&[1, 2, 3]))
        );
        assert!(root.get("missing").is_none());
        assert!(root.get_str("n").is_none());
        assert_eq!(root.get("text").unwrap().items().count(), 0);
    }

    /// Hand-made inputs on the edges of DAG-CBOR: a tree must accept and refuse exactly what
    /// decoding into `Ipld` does, and give the same value.
    #[test]
    fn accepts_exactly_what_decoding_into_ipld_accepts() {
        let cases: &[&[u8]] = &[
            &[0xa1, 0x61, b'a', 0x01],                               // {"a": 1}
            &[0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x02],             // unsorted keys
            &[0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02],             // duplicate keys
            &[0xa1, 0x01, 0x01],                                     // integer key
            &[0x9f, 0x01, 0xff],                                     // indefinite list
            &[0x18, 0x01],                                           // non-minimal integer
            &[0xfa, 0x3f, 0xc0, 0x00, 0x00],                         // f32
            &[0xf7],                                                 // undefined
            &[0xc1, 0x01],                                           // tag 1
            &[0xd8, 0x2a, 0x42, 0x00, 0x01],                         // tag 42, bad CID
            &[0x62, 0xff, 0xfe],                                     // invalid UTF-8
            &[0x01, 0x02],                                           // trailing data
            &[0x82, 0x01],                                           // truncated list
            &[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // -2^64
            &[0xf6],
            &[0x80],
            &[0xa0],
        ];
        for case in cases {
            let ours = Tree::from_cbor(case).map(|t| t.to_ipld());
            let theirs = decode_cbor(case);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{case:02x?}: {ours:?} vs {theirs:?}"
            );
            if let (Ok(a), Ok(b)) = (ours, theirs) {
                assert_eq!(a, b, "{case:02x?}");
            }
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x81, 200).chain([0x01]).collect();
        assert!(Tree::from_cbor(&deep).is_err());
        assert!(decode_cbor(&deep).is_err());
    }
}
