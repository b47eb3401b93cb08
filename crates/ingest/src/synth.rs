//! Synthetic streams for tests and benchmarks: Jetstream-format archives of a deterministic mix
//! of likes, follows, reposts and posts from many accounts, with a few abusive accounts (GTUBE
//! posts, identical replies, bulk follows, like bursts). The same seed gives the same bytes.

use crate::archive::{ArchiveError, ArchiveWriter};
use crate::{Format, RawFrame};
use std::path::Path;

/// GTUBE, the spam filters' test string.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

const B32: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
const CID: &str = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm";

/// A TID for `micros` (sortable base32, 13 characters).
pub fn tid(micros: i64, clock: u64) -> String {
    let v = ((micros as u64) << 10) | (clock & 0x3ff);
    (0..13)
        .rev()
        .map(|i| B32[((v >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// The DID of synthetic account `n`.
pub fn did(n: usize) -> String {
    format!("did:plc:synth{n:019}")
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// What a generated stream holds.
#[derive(Debug, Default, Clone)]
pub struct Mix {
    /// Events written.
    pub events: u64,
    /// Accounts that posted GTUBE.
    pub gtube_accounts: Vec<String>,
    /// Accounts that sent identical replies.
    pub copy_accounts: Vec<String>,
    /// Accounts that followed in bulk.
    pub follow_accounts: Vec<String>,
    /// Accounts that liked in bursts.
    pub like_accounts: Vec<String>,
}

/// Writes `events` Jetstream messages from `accounts` accounts to `path`, starting at
/// 2026-01-01T00:00:00Z, 2 ms apart. Ordinary accounts: 40 % likes, 25 % follows, 20 % reposts,
/// 15 % posts (a third of them replies). Every 100th account is abusive, in turn: GTUBE poster,
/// identical replier, bulk follower or like burster.
pub fn write_archive(
    path: &Path,
    events: u64,
    accounts: usize,
    seed: u64,
) -> Result<Mix, ArchiveError> {
    let mut w = ArchiveWriter::create(path, Format::Jetstream)?;
    let mut rng = Rng::new(seed);
    let mut mix = Mix::default();
    let start = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z
    let mut clocks = vec![0u64; accounts];
    for i in 0..events {
        let t = start + i as i64 * 2_000;
        let a = rng.below(accounts as u64) as usize;
        let author = did(a);
        clocks[a] += 1;
        let rev = tid(t, clocks[a]);
        let rkey = tid(t, clocks[a] + 1);
        let other = did(rng.below(accounts as u64) as usize);
        let kind = if a % 100 == 7 { 1 + (a / 100) % 4 } else { 0 };
        let roll = rng.below(100);
        let (collection, record) = match (kind, roll) {
            (1, 0..=39) => {
                if !mix.gtube_accounts.contains(&author) {
                    mix.gtube_accounts.push(author.clone());
                }
                post(&format!("buy now {GTUBE}"), None, t)
            }
            (2, 0..=60) => {
                if !mix.copy_accounts.contains(&author) {
                    mix.copy_accounts.push(author.clone());
                }
                post(
                    "Message me on WhatsApp to recover your account",
                    Some(&other),
                    t,
                )
            }
            (3, 0..=80) => {
                if !mix.follow_accounts.contains(&author) {
                    mix.follow_accounts.push(author.clone());
                }
                follow(&other, t)
            }
            (4, 0..=80) => {
                if !mix.like_accounts.contains(&author) {
                    mix.like_accounts.push(author.clone());
                }
                like(&other, t)
            }
            (_, 0..=39) => like(&other, t),
            (_, 40..=64) => follow(&other, t),
            (_, 65..=84) => repost(&other, t),
            (_, 85..=94) => {
                let n = 6 + rng.below(12) as usize;
                post(&words(&mut rng, n), None, t)
            }
            (_, _) => {
                let n = 4 + rng.below(10) as usize;
                post(&words(&mut rng, n), Some(&other), t)
            }
        };
        let msg = serde_json::json!({
            "did": author,
            "time_us": t,
            "kind": "commit",
            "commit": {
                "rev": rev,
                "operation": "create",
                "collection": collection,
                "rkey": rkey,
                "record": record,
                "cid": CID,
            }
        });
        w.write(&RawFrame {
            bytes: msg.to_string().into_bytes().into(),
            received_micros: 0,
        })?;
        mix.events += 1;
    }
    w.finish()?;
    Ok(mix)
}

const SYLLABLES: [&str; 40] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "hu", "ja", "ke", "li",
    "mo", "nu", "pa", "re", "si", "to", "un", "ve", "wa", "xi", "yo", "ze", "an", "el", "or", "is",
    "um", "ar", "en", "ol", "ip", "ut", "es", "ax",
];

/// `n` random words of two to four syllables (about 2.6 million possible words): ordinary
/// text that rarely repeats, even approximately.
pub fn words(rng: &mut Rng, n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        for _ in 0..2 + rng.below(3) {
            out.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
        }
    }
    out
}

fn datetime(t: i64) -> String {
    let secs = t / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        (t / 1000) % 1000
    )
}

fn post(text: &str, reply_to: Option<&str>, t: i64) -> (&'static str, serde_json::Value) {
    let mut r = serde_json::json!({
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": datetime(t),
    });
    if let Some(parent) = reply_to {
        let uri = format!("at://{parent}/app.bsky.feed.post/3kfxt2dprhx22");
        r["reply"] = serde_json::json!({
            "root": { "uri": uri, "cid": CID },
            "parent": { "uri": uri, "cid": CID },
        });
    }
    ("app.bsky.feed.post", r)
}

fn like(target: &str, t: i64) -> (&'static str, serde_json::Value) {
    (
        "app.bsky.feed.like",
        serde_json::json!({
            "$type": "app.bsky.feed.like",
            "subject": { "uri": format!("at://{target}/app.bsky.feed.post/3kfxt2dprhx22"), "cid": CID },
            "createdAt": datetime(t),
        }),
    )
}

fn repost(target: &str, t: i64) -> (&'static str, serde_json::Value) {
    (
        "app.bsky.feed.repost",
        serde_json::json!({
            "$type": "app.bsky.feed.repost",
            "subject": { "uri": format!("at://{target}/app.bsky.feed.post/3kfxt2dprhx22"), "cid": CID },
            "createdAt": datetime(t),
        }),
    )
}

fn follow(target: &str, t: i64) -> (&'static str, serde_json::Value) {
    (
        "app.bsky.graph.follow",
        serde_json::json!({
            "$type": "app.bsky.graph.follow",
            "subject": target,
            "createdAt": datetime(t),
        }),
    )
}
