//! CAR v1 reading: the container firehose commits carry their blocks in.
//!
//! A CAR is `varint(len) header` then repeated `varint(len) CID block`. Blocks are borrowed
//! from the input, so reading a CAR copies nothing.

use crate::data::{DataError, verify_block};
use cid::Cid;
use serde::Deserialize;

/// Why a CAR could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    /// The input ended inside a length prefix, CID or block.
    #[error("CAR truncated at byte {0}")]
    Truncated(usize),
    /// The header is not `{version: 1, roots: [...]}`.
    #[error("bad CAR header: {0}")]
    Header(String),
    /// A section's CID could not be parsed.
    #[error("bad CID in CAR section at byte {offset}: {message}")]
    Cid {
        /// Where the section starts.
        offset: usize,
        /// The parser's complaint.
        message: String,
    },
    /// A block does not hash to its CID.
    #[error(transparent)]
    Block(#[from] DataError),
}

/// A parsed CAR v1: its roots and its blocks, borrowed from the input bytes.
#[derive(Debug, Clone)]
pub struct Car<'a> {
    /// The root CIDs (a commit CAR has one: the signed commit): see [`Car::roots`].
    roots: Roots,
    /// The blocks in file order. Commits carry a handful, so lookups scan linearly.
    pub blocks: Vec<Block<'a>>,
}

/// A CAR's roots: the usual single root without an allocation.
#[derive(Debug, Clone)]
enum Roots {
    One(Cid),
    Any(Vec<Cid>),
}

/// One block of a CAR, borrowed from the input: its CID as encoded (checked to be a CID when
/// the CAR was parsed) and its bytes. The CID is compared in its encoded form, so only the
/// blocks a reader asks for cost a parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    /// The block's CID, encoded.
    pub cid_bytes: &'a [u8],
    /// The block's bytes.
    pub data: &'a [u8],
}

impl Block<'_> {
    /// The block's CID.
    pub fn cid(&self) -> Cid {
        match read_sha256_cid_v1(self.cid_bytes) {
            Some((cid, _)) => cid,
            None => Cid::read_bytes(self.cid_bytes).expect("checked when the CAR was parsed"),
        }
    }

    /// Whether the block is stored under `cid`.
    pub fn is(&self, cid: &Cid) -> bool {
        match self.cid_bytes {
            [0x01, codec, 0x12, 0x20, digest @ ..] if *codec < 0x80 => {
                cid.version() == cid::Version::V1
                    && cid.codec() == u64::from(*codec)
                    && cid.hash().code() == 0x12
                    && cid.hash().digest() == digest
            }
            _ => self.cid() == *cid,
        }
    }
}

#[derive(Deserialize)]
struct CarHeader {
    version: u64,
    roots: Vec<Cid>,
}

/// The payload of the varint-length-prefixed item at `pos`: its start and end, or `None` when
/// the input ends first.
fn length_prefixed(input: &[u8], pos: usize) -> Option<(usize, usize)> {
    let (len, used) = read_varint(&input[pos..])?;
    let start = pos + used;
    let end = start
        .checked_add(usize::try_from(len).ok()?)
        .filter(|&e| e <= input.len())?;
    Some((start, end))
}

/// Reads an unsigned LEB128 varint; returns the value and the bytes it used.
pub fn read_varint(input: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The common case read directly: a CIDv1 with a one-byte codec and a sha2-256 digest (what
/// every atproto block has), and the bytes after it. `None` for anything else, which is left to
/// the general reader.
pub(crate) fn read_sha256_cid_v1(section: &[u8]) -> Option<(Cid, &[u8])> {
    match section {
        [0x01, codec, 0x12, 0x20, rest @ ..] if *codec < 0x80 && rest.len() >= 32 => {
            let (digest, block) = rest.split_at(32);
            let hash = multihash::Multihash::<64>::wrap(0x12, digest).ok()?;
            Some((Cid::new_v1(u64::from(*codec), hash), block))
        }
        _ => None,
    }
}

/// The root of the header every commit CAR has, `{roots: [cid], version: 1}` in canonical
/// DAG-CBOR with a CIDv1/sha2-256 root, matched byte for byte; `None` for any other header,
/// which is left to the general decoder.
fn one_root_header(header: &[u8]) -> Option<Cid> {
    let rest = header.strip_prefix(b"\xa2\x65roots\x81\xd8\x2a\x58\x25\x00")?;
    let (root, rest) = read_sha256_cid_v1(rest)?;
    (rest == b"\x67version\x01").then_some(root)
}

impl<'a> Car<'a> {
    /// Parses a CAR v1 without checking block hashes (see [`Car::verify_all`]).
    pub fn parse(input: &'a [u8]) -> Result<Self, CarError> {
        // `let else`, not `ok_or`: an error built eagerly would be dropped for every section.
        let Some((used, header_end)) = length_prefixed(input, 0) else {
            return Err(CarError::Truncated(0));
        };
        let roots = match one_root_header(&input[used..header_end]) {
            Some(root) => Roots::One(root),
            None => {
                let header: CarHeader = serde_ipld_dagcbor::from_slice(&input[used..header_end])
                    .map_err(|e| CarError::Header(e.to_string()))?;
                if header.version != 1 {
                    return Err(CarError::Header(format!(
                        "version {} (only 1 is supported)",
                        header.version
                    )));
                }
                Roots::Any(header.roots)
            }
        };
        // A commit carries its signed block, the records and a few MST nodes: one allocation
        // for the usual count instead of growing from empty.
        let mut blocks = Vec::with_capacity(8);
        let mut pos = header_end;
        while pos < input.len() {
            let Some((start, end)) = length_prefixed(input, pos) else {
                return Err(CarError::Truncated(pos));
            };
            let section = &input[start..end];
            let cid_len = if read_sha256_cid_v1(section).is_some() {
                4 + 32
            } else {
                let mut rest = section;
                Cid::read_bytes(&mut rest).map_err(|e| CarError::Cid {
                    offset: pos,
                    message: e.to_string(),
                })?;
                section.len() - rest.len()
            };
            let (cid_bytes, data) = section.split_at(cid_len);
            blocks.push(Block { cid_bytes, data });
            pos = end;
        }
        Ok(Car { roots, blocks })
    }

    /// The root CIDs, in header order.
    pub fn roots(&self) -> &[Cid] {
        match &self.roots {
            Roots::One(root) => std::slice::from_ref(root),
            Roots::Any(roots) => roots,
        }
    }

    /// The block stored under `cid`, if the CAR carries it.
    pub fn get(&self, cid: &Cid) -> Option<&'a [u8]> {
        self.blocks.iter().find(|b| b.is(cid)).map(|b| b.data)
    }

    /// Checks every block against its CID.
    pub fn verify_all(&self) -> Result<(), CarError> {
        for block in &self.blocks {
            verify_block(&block.cid(), block.data)?;
        }
        Ok(())
    }
}

/// Writes a CAR v1 with the given roots and blocks (used by tests and the archive tooling).
pub fn write_car(roots: &[Cid], blocks: &[(Cid, Vec<u8>)]) -> Result<Vec<u8>, DataError> {
    #[derive(serde::Serialize)]
    struct Header<'r> {
        roots: &'r [Cid],
        version: u64,
    }
    let header = crate::data::encode_cbor(&Header { roots, version: 1 })?;
    let mut out = Vec::new();
    write_varint(&mut out, header.len() as u64);
    out.extend_from_slice(&header);
    for (cid, bytes) in blocks {
        let cid_bytes = cid.to_bytes();
        write_varint(&mut out, (cid_bytes.len() + bytes.len()) as u64);
        out.extend_from_slice(&cid_bytes);
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Appends an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cid_for_cbor;

    #[test]
    fn the_direct_cid_reader_agrees_with_the_general_one() {
        let cid = cid_for_cbor(b"\xa0");
        let raw = crate::data::cid_for(0x55, b"x");
        for c in [cid, raw] {
            let mut section = c.to_bytes();
            section.extend_from_slice(b"block");
            let (direct, rest) = read_sha256_cid_v1(&section).unwrap();
            let mut general = section.as_slice();
            assert_eq!(direct, Cid::read_bytes(&mut general).unwrap());
            assert_eq!((rest, general), (&b"block"[..], &b"block"[..]));
        }
        // A CIDv0 and a truncated digest are left to the general reader.
        let v0 = Cid::new_v0(*cid.hash()).unwrap().to_bytes();
        assert!(read_sha256_cid_v1(&v0).is_none());
        assert!(read_sha256_cid_v1(&cid.to_bytes()[..20]).is_none());
    }

    #[test]
    fn blocks_are_found_by_their_encoded_cid_as_by_the_parsed_one() {
        let a = cid_for_cbor(b"\xa0");
        let cids = [
            a,
            crate::data::cid_for(0x55, b"x"),
            Cid::new_v0(*a.hash()).unwrap(),
            // The same digest under another codec, and another hash function.
            Cid::new_v1(0x55, *a.hash()),
            Cid::new_v1(
                0x71,
                multihash::Multihash::<64>::wrap(0x13, &[7; 64]).unwrap(),
            ),
        ];
        let blocks: Vec<(Cid, Vec<u8>)> = (0u8..).zip(&cids).map(|(i, c)| (*c, vec![i])).collect();
        let bytes = write_car(&[a], &blocks).unwrap();
        let car = Car::parse(&bytes).unwrap();
        assert_eq!(car.blocks.len(), cids.len());
        for (block, want) in car.blocks.iter().zip(&cids) {
            assert_eq!(block.cid(), *want);
            for c in &cids {
                assert_eq!(
                    block.is(c),
                    block.cid() == *c,
                    "{} against {c}",
                    block.cid()
                );
            }
        }
        for (i, c) in (0u8..).zip(&cids) {
            assert_eq!(car.get(c), Some(&[i][..]));
        }
    }

    #[test]
    fn round_trip_and_truncation() {
        let block = crate::data::encode_cbor(&"hello").unwrap();
        let cid = cid_for_cbor(&block);
        let car = write_car(&[cid], &[(cid, block.clone())]).unwrap();
        let parsed = Car::parse(&car).unwrap();
        assert_eq!(parsed.roots(), [cid]);
        assert_eq!(parsed.get(&cid), Some(block.as_slice()));
        parsed.verify_all().unwrap();
        for cut in 1..car.len() {
            // A cut at the end of the header is a valid empty CAR; no cut may yield the block.
            let whole = matches!(Car::parse(&car[..cut]), Ok(c) if !c.blocks.is_empty());
            assert!(!whole, "cut at {cut} still yields the block");
        }
    }

    #[test]
    fn the_one_root_header_is_read_as_serde_reads_it() {
        let root = cid_for_cbor(b"\xa0");
        let general = |h: &[u8]| {
            serde_ipld_dagcbor::from_slice::<CarHeader>(h)
                .ok()
                .filter(|h| h.version == 1)
                .map(|h| h.roots)
        };
        let car = write_car(&[root], &[]).unwrap();
        let (len, used) = read_varint(&car).unwrap();
        let header = &car[used..used + len as usize];
        assert_eq!(one_root_header(header), Some(root));
        assert_eq!(general(header), Some(vec![root]));
        // Every single-byte change: the direct read takes a header only as serde reads it.
        let mut damaged = header.to_vec();
        for at in 0..header.len() {
            for flip in [0x01u8, 0x02, 0x20, 0x80] {
                damaged[at] ^= flip;
                if let Some(r) = one_root_header(&damaged) {
                    assert_eq!(general(&damaged), Some(vec![r]), "at {at} ^ {flip:#x}");
                }
                damaged[at] ^= flip;
            }
        }
        // Two roots or another version: left to serde.
        for (roots, version) in [(vec![root, root], 1u64), (vec![root], 2)] {
            #[derive(serde::Serialize)]
            struct Header {
                roots: Vec<Cid>,
                version: u64,
            }
            let h = crate::data::encode_cbor(&Header { roots, version }).unwrap();
            assert_eq!(one_root_header(&h), None);
        }
        // Any one-byte codec with a sha2-256 digest is read directly.
        let raw = crate::data::cid_for(0x55, b"x");
        let car = write_car(&[raw], &[]).unwrap();
        assert_eq!(Car::parse(&car).unwrap().roots(), [raw]);
        let (len, used) = read_varint(&car).unwrap();
        assert_eq!(one_root_header(&car[used..used + len as usize]), Some(raw));
    }

    #[test]
    fn varint_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(read_varint(&out), Some((v, out.len())));
        }
    }
}
