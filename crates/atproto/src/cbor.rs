//! A DAG-CBOR scanner: item boundaries and heads, without building values.
//!
//! The hot path of a firehose source touches each commit block once to learn a handful of
//! fields and the bytes its signature covers. Decoding the block into [`ipld_core::ipld::Ipld`]
//! and encoding it again without `sig` allocates every key and value twice; scanning finds the
//! same fields in place and splices the `sig` entry out. Splicing gives the canonical encoding
//! only when the input already is canonical, so the scanner also reports whether it is
//! ([`Scan::canonical`]); callers fall back to decoding and re-encoding when it is not.

/// One CBOR item head: major type and argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// Major type, 0–7.
    pub major: u8,
    /// The argument: a value, a length, a tag number or a simple value.
    pub arg: u64,
    /// Whether the argument used the shortest encoding, as DAG-CBOR requires.
    pub minimal: bool,
}

/// Why bytes are not a CBOR item the scanner accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// The input ended inside an item.
    Truncated,
    /// Indefinite lengths, reserved additional information or `break`.
    NotDagCbor,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// Items nested this deep are refused, as serde_ipld_dagcbor refuses them: the scan recurses.
pub(crate) const MAX_DEPTH: usize = 128;

/// Reads the head at `pos`; returns it and the position after it.
#[inline]
pub(crate) fn head(bytes: &[u8], pos: usize) -> Result<(Head, usize), ScanError> {
    let first = *bytes.get(pos).ok_or(ScanError::Truncated)?;
    let major = first >> 5;
    let info = first & 0x1f;
    let (arg, width) = match info {
        0..=23 => (u64::from(info), 0),
        24..=27 => {
            let width = 1usize << (info - 24);
            let end = pos + 1 + width;
            let raw = bytes.get(pos + 1..end).ok_or(ScanError::Truncated)?;
            let mut value = 0u64;
            for b in raw {
                value = (value << 8) | u64::from(*b);
            }
            (value, width)
        }
        _ => return Err(ScanError::NotDagCbor),
    };
    let minimal = match width {
        0 => true,
        // Floats (major 7, 25–27) have their own widths; DAG-CBOR allows only 64-bit.
        _ if major == 7 => width == 8,
        1 => arg >= 24,
        2 => arg > 0xff,
        4 => arg > 0xffff,
        _ => arg > 0xffff_ffff,
    };
    Ok((
        Head {
            major,
            arg,
            minimal,
        },
        pos + 1 + width,
    ))
}

/// The end of an item, and whether it is canonical DAG-CBOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The position after the item.
    pub end: usize,
    /// Minimal heads, map keys that are text in canonical order without duplicates, only tag
    /// 42, valid UTF-8 text, and only `false`, `true`, `null` and 64-bit floats as simple
    /// values.
    pub canonical: bool,
}

/// `bytes` as text when they are valid UTF-8. Almost every string in a frame (DIDs, paths,
/// revisions, times, most post text) is ASCII: checked a word at a time, that needs none of
/// the general validator's per-byte work.
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// The byte range of the payload of a string at `pos` (major 2 or 3), and the head.
pub(crate) fn string(bytes: &[u8], pos: usize) -> Result<(Head, usize, usize), ScanError> {
    let (h, start) = head(bytes, pos)?;
    let end = usize::try_from(h.arg)
        .ok()
        .and_then(|n| start.checked_add(n))
        .filter(|&e| e <= bytes.len())
        .ok_or(ScanError::Truncated)?;
    Ok((h, start, end))
}

/// Scans the item at `pos`.
pub(crate) fn scan(bytes: &[u8], pos: usize) -> Result<Scan, ScanError> {
    scan_at(bytes, pos, 0)
}

fn scan_at(bytes: &[u8], pos: usize, depth: usize) -> Result<Scan, ScanError> {
    if depth >= MAX_DEPTH {
        return Err(ScanError::TooDeep);
    }
    let (h, next) = head(bytes, pos)?;
    let mut canonical = h.minimal;
    let end = match h.major {
        0 | 1 => next,
        2 | 3 => {
            let (_, start, end) = string(bytes, pos)?;
            if h.major == 3 && utf8(&bytes[start..end]).is_none() {
                canonical = false;
            }
            end
        }
        4 => {
            let mut at = next;
            for _ in 0..h.arg {
                let item = scan_at(bytes, at, depth + 1)?;
                canonical &= item.canonical;
                at = item.end;
            }
            at
        }
        5 => {
            let mut at = next;
            let mut previous: Option<&[u8]> = None;
            for _ in 0..h.arg {
                let key = map_key(bytes, at, previous, depth + 1)?;
                previous = Some(key.encoded);
                let value = scan_at(bytes, key.end, depth + 1)?;
                canonical &= key.canonical && value.canonical;
                at = value.end;
            }
            at
        }
        6 => {
            canonical &= h.arg == 42;
            let inner = scan_at(bytes, next, depth + 1)?;
            canonical &= inner.canonical;
            inner.end
        }
        _ => {
            // Simple values and floats: false, true, null, or a 64-bit float.
            canonical &= (matches!(h.arg, 20..=22) && next == pos + 1) || next == pos + 9;
            next
        }
    };
    Ok(Scan { end, canonical })
}

/// A map key, as [`map_key`] read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'b> {
    /// The key's text (its bytes; UTF-8 when `canonical`).
    pub text: &'b [u8],
    /// The key as encoded, head included: what canonical order compares.
    pub encoded: &'b [u8],
    /// The position after the key.
    pub end: usize,
    /// Text with a minimal head, valid UTF-8, and after `previous` in canonical order.
    pub canonical: bool,
}

/// Reads the map key at `at`; `previous` is the encoded key before it in the same map.
#[inline]
pub(crate) fn map_key<'b>(
    bytes: &'b [u8],
    at: usize,
    previous: Option<&[u8]>,
    depth: usize,
) -> Result<Key<'b>, ScanError> {
    let (h, start) = head(bytes, at)?;
    if h.major != 3 {
        // Not text: never canonical, but its end is still needed to go on.
        let item = scan_at(bytes, at, depth)?;
        return Ok(Key {
            text: &[],
            encoded: &bytes[at..item.end],
            end: item.end,
            canonical: false,
        });
    }
    if depth >= MAX_DEPTH {
        return Err(ScanError::TooDeep);
    }
    let end = usize::try_from(h.arg)
        .ok()
        .and_then(|n| start.checked_add(n))
        .filter(|&e| e <= bytes.len())
        .ok_or(ScanError::Truncated)?;
    let text = &bytes[start..end];
    let encoded = &bytes[at..end];
    // Canonical order is by encoded length, then bytewise.
    let in_order = previous.is_none_or(|p| match p.len().cmp(&encoded.len()) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Equal => precedes(p, encoded),
        std::cmp::Ordering::Greater => false,
    });
    let utf8 = utf8(text).is_some();
    Ok(Key {
        text,
        encoded,
        end,
        canonical: h.minimal && utf8 && in_order,
    })
}

/// `a < b` for slices of one length: map keys are short, and a loop beats a `memcmp` call.
fn precedes(a: &[u8], b: &[u8]) -> bool {
    a.iter()
        .zip(b)
        .find(|(x, y)| x != y)
        .is_some_and(|(x, y)| x < y)
}

/// Appends a head with the shortest encoding of `arg`.
pub(crate) fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= 0xff {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::encode_cbor;
    use ipld_core::ipld::Ipld;
    use std::collections::BTreeMap;

    #[test]
    fn utf8_agrees_with_the_standard_validator() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"did:plc:ewvi7nxzyoun6zhxrhs64oiz".to_vec(),
            "caf\u{e9} \u{1F600} \u{202E}".as_bytes().to_vec(),
            vec![0x80],
            vec![b'a'; 40].into_iter().chain([0xff]).collect(),
            vec![0xed, 0xa0, 0x80], // a surrogate
            vec![0xf0, 0x9f, 0x98], // cut short
            vec![0xc0, 0xaf],       // overlong
            vec![0x7f; 17],
        ];
        // Every one- and two-byte input.
        for a in 0..=255u8 {
            cases.push(vec![a]);
            for b in (0..=255u8).step_by(7) {
                cases.push(vec![a, b]);
            }
        }
        for bytes in &cases {
            assert_eq!(utf8(bytes), std::str::from_utf8(bytes).ok(), "{bytes:02x?}");
        }
    }

    fn canonical(bytes: &[u8]) -> bool {
        let s = scan(bytes, 0).unwrap();
        assert_eq!(s.end, bytes.len());
        s.canonical
    }

    #[test]
    fn encoder_output_is_canonical() {
        let mut map = BTreeMap::new();
        map.insert("text".to_string(), Ipld::String("héllo".into()));
        map.insert("n".to_string(), Ipld::Integer(-300));
        map.insert("big".to_string(), Ipld::Integer(1 << 40));
        map.insert(
            "list".to_string(),
            Ipld::List(vec![Ipld::Null, Ipld::Bool(true)]),
        );
        map.insert("bytes".to_string(), Ipld::Bytes(vec![1, 2, 3]));
        map.insert(
            "link".to_string(),
            Ipld::Link(crate::data::cid_for_cbor(b"\x01")),
        );
        assert!(canonical(&encode_cbor(&Ipld::Map(map)).unwrap()));
    }

    #[test]
    fn non_canonical_inputs_are_reported() {
        // Keys out of length-first order: {"bb": 1, "a": 2}.
        assert!(!canonical(&[
            0xa2, 0x62, b'b', b'b', 0x01, 0x61, b'a', 0x02
        ]));
        // Duplicate keys.
        assert!(!canonical(&[0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02]));
        // A non-text key.
        assert!(!canonical(&[0xa1, 0x01, 0x02]));
        // A non-minimal integer: 1 in one extra byte.
        assert!(!canonical(&[0x18, 0x01]));
        // A 32-bit float.
        assert!(!canonical(&[0xfa, 0x3f, 0x80, 0x00, 0x00]));
        // undefined.
        assert!(!canonical(&[0xf7]));
        // A tag other than 42.
        assert!(!canonical(&[0xc1, 0x01]));
        // Invalid UTF-8 text.
        assert!(!canonical(&[0x61, 0xff]));
        assert!(canonical(&[0xfb, 0, 0, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(scan(&[0x9f, 0xff], 0), Err(ScanError::NotDagCbor));
        assert_eq!(scan(&[0x62, b'a'], 0), Err(ScanError::Truncated));
        assert_eq!(scan(&[0x82, 0x01], 0), Err(ScanError::Truncated));
        assert_eq!(scan(&[0x1b, 0, 0], 0), Err(ScanError::Truncated));
        let deep = vec![0x81; MAX_DEPTH + 2];
        assert_eq!(scan(&deep, 0), Err(ScanError::TooDeep));
    }

    #[test]
    fn heads_are_written_minimally() {
        for arg in [0, 23, 24, 255, 256, 65535, 65536, u32::MAX as u64, 1 << 33] {
            let mut out = Vec::new();
            write_head(&mut out, 3, arg);
            let (h, end) = head(&out, 0).unwrap();
            assert_eq!((h.major, h.arg, h.minimal, end), (3, arg, true, out.len()));
        }
    }
}
