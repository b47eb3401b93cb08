//! The simulated network: accounts with their own keys and repos, a realistic mix of activity
//! with Zipf-distributed account activity, injected abuse scenarios with ground truth, and the
//! `subscribeRepos` frames a PDS would emit for all of it. Deterministic from the seed.

use crate::repo::{Change, FrameOp, Repo, UnsignedCommit};
use cid::Cid;
use serde::Serialize;
use sha2::{Digest, Sha256};
use skywarden_atproto::crypto::{Curve, PublicKey, SigningKey};
use skywarden_atproto::data::{Ipld, json_to_ipld};
use skywarden_atproto::frame::encode_message;
use skywarden_atproto::syntax::Datetime;
use skywarden_ingest::synth::{Rng, tid, words};
use std::collections::{HashMap, VecDeque};

/// The DID the default ruleset lists as a protected account (`rules/lists/protected-dids.txt`):
/// the harassment scenario targets it.
pub const PROTECTED_DID: &str = "did:plc:protectedtarget00000001";

/// The abuse scenarios, each with its accounts recorded in the ground truth.
pub const SCENARIOS: [&str; 8] = [
    "greeting-spam",
    "reply-ring",
    "copy-paste",
    "follow-churn",
    "link-spam",
    "harassment",
    "impersonation",
    "slur-evasion",
];

/// How to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed: the same seed gives the same frames.
    pub seed: u64,
    /// Ordinary accounts (abusive ones are added: one per 50).
    pub accounts: usize,
    /// Simulated time of the first event (µs since the epoch).
    pub start_micros: i64,
    /// Simulated time between events (µs).
    pub step_micros: i64,
    /// Inject abuse scenarios.
    pub abuse: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            accounts: 1000,
            start_micros: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
            step_micros: 1_000,
            abuse: true,
        }
    }
}

/// One ground-truth entry: an account acting out a scenario, from its first abusive frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Truth {
    /// The scenario (one of [`SCENARIOS`]).
    pub scenario: &'static str,
    /// The abusive account.
    pub did: String,
    /// The `seq` of its first abusive frame.
    #[serde(rename = "firstSeq")]
    pub first_seq: i64,
    /// Its simulated time (µs).
    #[serde(rename = "firstTime")]
    pub first_time: i64,
}

/// One frame of the simulated firehose.
#[derive(Debug, Clone)]
pub struct SimFrame {
    /// Its `seq`.
    pub seq: i64,
    /// The encoded frame (header + body), as a PDS sends it.
    pub bytes: Vec<u8>,
    /// Simulated time (µs).
    pub time_micros: i64,
}

/// A frame generated but not yet encoded: a commit waits to be signed, with what signing
/// needs, so that it can be signed on another thread while the network goes on.
enum Pending {
    Ready(SimFrame),
    Commit(Box<PendingCommit>),
}

struct PendingCommit {
    did: String,
    key: SigningKey,
    seq: i64,
    time_micros: i64,
    commit: UnsignedCommit,
}

impl Pending {
    /// Encodes the frame, signing it if it is a commit.
    fn finish(self) -> SimFrame {
        let PendingCommit {
            did,
            key,
            seq,
            time_micros,
            commit,
        } = match self {
            Pending::Ready(frame) => return frame,
            Pending::Commit(pending) => *pending,
        };
        let c = commit.sign(&key);
        let time = datetime(time_micros);
        let body = CommitBody {
            seq,
            rebase: false,
            too_big: false,
            repo: &did,
            commit: c.cid,
            rev: &c.rev,
            since: c.since.as_deref(),
            blocks: &c.car,
            ops: &c.ops,
            blobs: &c.blobs,
            prev_data: c.prev_data,
            time: &time,
        };
        SimFrame {
            seq,
            bytes: encode_message("#commit", &body).expect("commit encodes"),
            time_micros,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ordinary,
    Protected,
    Abusive(usize),
}

struct Account {
    did: String,
    handle: String,
    key: SigningKey,
    repo: Repo,
    clock: u64,
    created: Option<i64>,
    role: Role,
    /// Scenario step counter (follow/unfollow alternation, one-off acts).
    acts: u64,
    /// The rkey of the last follow, for churn.
    last_follow: Option<String>,
    /// When the account's human pace allows its next ordinary act without a burst (µs of
    /// simulated time): see [`HUMAN_INTERVAL_MICROS`].
    paced_until: i64,
}

/// A person's sustained pace: one act every four seconds (900 an hour), at most
/// [`HUMAN_BURST`] acts ahead of it. Without it, the head of the Zipf distribution at the
/// default 1,000 events/s was one account acting 75 times a second, which rules for bots
/// rightly flag: their false positives on ordinary traffic were the simulator's doing.
pub const HUMAN_INTERVAL_MICROS: i64 = 4_000_000;

/// Acts a person may make in a burst ahead of [`HUMAN_INTERVAL_MICROS`] (a liking spree).
pub const HUMAN_BURST: i64 = 20;

/// Draws of another account by activity, then as many uniformly, before an ordinary act goes
/// to an account over its pace anyway: only when the stream asks more of the accounts than
/// people could do (a high live `--rate`, or few `--accounts`).
const PACE_DRAWS: usize = 8;

/// The network.
pub struct Network {
    config: SimConfig,
    accounts: Vec<Account>,
    /// Each account's index by DID (the PLC directory looks accounts up per request).
    by_did: HashMap<String, usize>,
    abusive: Vec<usize>,
    rng: Rng,
    seq: i64,
    time: i64,
    pending: VecDeque<Pending>,
    truth: Vec<Truth>,
    /// A post of the protected account, once it has one (harassment replies to it).
    protected_post: Option<(String, Cid)>,
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    h.finalize().into()
}

const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

fn plc_id(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(24)
        .map(|b| B32[(*b & 31) as usize] as char)
        .collect()
}

fn datetime(micros: i64) -> String {
    Datetime::from_timestamp_micros(micros)
        .map(|d| d.as_str().to_string())
        .unwrap_or_else(|_| "2026-01-01T00:00:00.000Z".into())
}

#[derive(Serialize)]
struct CommitBody<'a> {
    seq: i64,
    rebase: bool,
    #[serde(rename = "tooBig")]
    too_big: bool,
    repo: &'a str,
    commit: Cid,
    rev: &'a str,
    since: Option<&'a str>,
    #[serde(with = "serde_bytes")]
    blocks: &'a [u8],
    ops: &'a [crate::repo::FrameOp],
    blobs: &'a [Cid],
    #[serde(rename = "prevData", skip_serializing_if = "Option::is_none")]
    prev_data: Option<Cid>,
    time: &'a str,
}

#[derive(Serialize)]
struct IdentityBody<'a> {
    seq: i64,
    did: &'a str,
    time: &'a str,
    handle: &'a str,
}

#[derive(Serialize)]
struct AccountBody<'a> {
    seq: i64,
    did: &'a str,
    time: &'a str,
    active: bool,
}

impl Network {
    /// A network of `config.accounts` ordinary accounts, the protected account, and (with
    /// `abuse`) one abusive account per 50, spread over the scenarios.
    pub fn new(config: SimConfig) -> Network {
        let seed = config.seed.to_le_bytes();
        let mut accounts = Vec::new();
        let mut abusive = Vec::new();
        let abusive_count = if config.abuse {
            (config.accounts / 50).max(SCENARIOS.len())
        } else {
            0
        };
        let total = config.accounts + 1 + abusive_count;
        for i in 0..total {
            let secret = digest(&[b"key", &seed, &(i as u64).to_le_bytes()]);
            let key = SigningKey::from_bytes(Curve::K256, &secret)
                .unwrap_or_else(|_| SigningKey::from_bytes(Curve::K256, &[7; 32]).expect("valid"));
            let role = if i == config.accounts {
                Role::Protected
            } else if i > config.accounts {
                let n = i - config.accounts - 1;
                abusive.push(i);
                Role::Abusive(n % SCENARIOS.len())
            } else {
                Role::Ordinary
            };
            let did = if role == Role::Protected {
                PROTECTED_DID.to_string()
            } else {
                format!(
                    "did:plc:{}",
                    plc_id(&digest(&[b"did", &seed, &(i as u64).to_le_bytes()]))
                )
            };
            let handle = match role {
                Role::Protected => "protected.sim.test".to_string(),
                _ => format!("user{i}.sim.test"),
            };
            accounts.push(Account {
                repo: Repo::new(did.clone()),
                did,
                handle,
                key,
                clock: 0,
                created: None,
                role,
                acts: 0,
                last_follow: None,
                paced_until: i64::MIN,
            });
        }
        Network {
            rng: Rng::new(config.seed ^ 0x5eed),
            time: config.start_micros,
            config,
            by_did: accounts
                .iter()
                .enumerate()
                .map(|(i, a)| (a.did.clone(), i))
                .collect(),
            accounts,
            abusive,
            seq: 0,
            pending: VecDeque::new(),
            truth: Vec::new(),
            protected_post: None,
        }
    }

    /// Every account's DID and signing key (what a consumer resolves to verify commits).
    pub fn public_keys(&self) -> Vec<(String, PublicKey)> {
        self.accounts
            .iter()
            .map(|a| (a.did.clone(), a.key.public()))
            .collect()
    }

    /// The ground truth so far: abusive accounts and their first abusive frame.
    pub fn truth(&self) -> &[Truth] {
        &self.truth
    }

    /// The last `seq` emitted.
    pub fn seq(&self) -> i64 {
        self.seq
    }

    /// The DID document of an account (as a PLC directory serves it), if it exists yet.
    pub fn did_document(&self, did: &str) -> Option<serde_json::Value> {
        let a = &self.accounts[*self.by_did.get(did)?];
        a.created?;
        Some(serde_json::json!({
            "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
            "id": a.did,
            "alsoKnownAs": [format!("at://{}", a.handle)],
            "verificationMethod": [{
                "id": format!("{}#atproto", a.did),
                "type": "Multikey",
                "controller": a.did,
                "publicKeyMultibase": a.key.public().to_multikey(),
            }],
            "service": [{
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.sim.test",
            }],
        }))
    }

    /// The PLC audit log of an account: its creation operation, with the creation time.
    pub fn audit_log(&self, did: &str) -> Option<serde_json::Value> {
        let a = &self.accounts[*self.by_did.get(did)?];
        let created = a.created?;
        Some(serde_json::json!([{
            "did": a.did,
            "operation": { "type": "plc_operation", "alsoKnownAs": [format!("at://{}", a.handle)] },
            "cid": "bafyreigp6shzy6dlcxuowwoxz7u5nemdrkad2my5zwzpwilcnhih7bw6za",
            "nullified": false,
            "createdAt": datetime(created),
        }]))
    }

    /// Zipf-like activity: account `i` (of `n`) is picked with weight about 1/(i+1).
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let i = ((n as f64 + 1.0).powf(u) - 1.0) as usize;
        i.min(n - 1)
    }

    /// The account that makes the next ordinary act: drawn by activity, redrawn while the draw
    /// is ahead of a person's pace (a virtual-time rate limit per account, in simulated time).
    fn ordinary_actor(&mut self) -> usize {
        let n = self.config.accounts.max(1);
        let now = self.time;
        let mut i = self.zipf(n);
        // By activity first; then, as the busy head is mostly at its pace, uniformly.
        for draw in 1..2 * PACE_DRAWS {
            if self.accounts[i].paced_until <= now + HUMAN_BURST * HUMAN_INTERVAL_MICROS {
                break;
            }
            i = if draw < PACE_DRAWS {
                self.zipf(n)
            } else {
                self.rng.below(n as u64) as usize
            };
        }
        let a = &mut self.accounts[i];
        a.paced_until = a.paced_until.max(now) + HUMAN_INTERVAL_MICROS;
        i
    }

    fn push(&mut self, bytes: Vec<u8>, seq: i64) {
        self.pending.push_back(Pending::Ready(SimFrame {
            seq,
            bytes,
            time_micros: self.time,
        }));
    }

    /// Queues an `#identity` frame with account `i`'s current handle; returns its `seq`.
    fn emit_identity(&mut self, i: usize) -> i64 {
        let seq = self.next_seq();
        let time = datetime(self.time);
        let a = &self.accounts[i];
        let body = IdentityBody {
            seq,
            did: &a.did,
            time: &time,
            handle: &a.handle,
        };
        let bytes = encode_message("#identity", &body).expect("identity encodes");
        self.push(bytes, seq);
        seq
    }

    /// Queues an `#account` frame saying account `i` is active.
    fn emit_account(&mut self, i: usize) {
        let seq = self.next_seq();
        let time = datetime(self.time);
        let body = AccountBody {
            seq,
            did: &self.accounts[i].did,
            time: &time,
            active: true,
        };
        let bytes = encode_message("#account", &body).expect("account encodes");
        self.push(bytes, seq);
    }

    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    /// Creates account `i` on first use: `#identity`, `#account`, and a profile commit.
    fn ensure_created(&mut self, i: usize) {
        if self.accounts[i].created.is_some() {
            return;
        }
        self.accounts[i].created = Some(self.time);
        self.emit_identity(i);
        self.emit_account(i);
        let name = match self.accounts[i].role {
            Role::Abusive(6) => "Elon Musk".to_string(),
            Role::Protected => "A journalist".to_string(),
            _ => {
                let n = 1 + self.rng.below(2) as usize;
                words(&mut self.rng, n)
            }
        };
        let record = serde_json::json!({
            "$type": "app.bsky.actor.profile",
            "displayName": name,
            "description": "",
        });
        self.commit(
            i,
            vec![Change::Put {
                path: "app.bsky.actor.profile/self".into(),
                record: json_to_ipld(&record).expect("valid record"),
            }],
        );
    }

    /// Queues a commit of `changes` by account `i`; returns its ops.
    fn commit(&mut self, i: usize, changes: Vec<Change>) -> Vec<FrameOp> {
        let time = self.time;
        let a = &mut self.accounts[i];
        a.clock += 1;
        let rev = tid(time, a.clock);
        let blobs = changes
            .iter()
            .filter_map(|c| match c {
                Change::Put { record, .. } => Some(blob_refs(record)),
                Change::Delete { .. } => None,
            })
            .flatten()
            .collect();
        let commit = a.repo.commit(rev, &changes, blobs);
        let ops = commit.ops.clone();
        let (did, key) = (a.did.clone(), a.key.clone());
        let seq = self.next_seq();
        self.pending
            .push_back(Pending::Commit(Box::new(PendingCommit {
                did,
                key,
                seq,
                time_micros: self.time,
                commit,
            })));
        ops
    }

    fn rkey(&mut self, i: usize) -> String {
        let a = &mut self.accounts[i];
        a.clock += 1;
        tid(self.time, a.clock)
    }

    fn random_other(&mut self, not: usize) -> usize {
        let n = self.config.accounts.max(2);
        let mut j = self.rng.below(n as u64) as usize;
        if j == not {
            j = (j + 1) % n;
        }
        j
    }

    /// A post of account `j`, created if it has none (replies, likes and quotes need one).
    fn some_post(&mut self, j: usize) -> (String, Cid) {
        self.ensure_created(j);
        let found = {
            let repo = &self.accounts[j].repo;
            repo.paths_in("app.bsky.feed.post")
                .next()
                .map(|p| (p.to_string(), repo.cid(p).expect("present")))
        };
        let (path, cid) = match found {
            Some(x) => x,
            None => {
                let n = 5 + self.rng.below(8) as usize;
                let text = words(&mut self.rng, n);
                let path = format!("app.bsky.feed.post/{}", self.rkey(j));
                let out = self.commit(
                    j,
                    vec![Change::Put {
                        path: path.clone(),
                        record: post_record(&text, self.time, None, None),
                    }],
                );
                (path, out[0].cid.expect("created"))
            }
        };
        (format!("at://{}/{path}", self.accounts[j].did), cid)
    }

    fn ordinary_event(&mut self, i: usize) {
        let roll = self.rng.below(1000);
        let j = self.random_other(i);
        let t = self.time;
        let change = match roll {
            0..=419 => {
                let (uri, cid) = self.some_post(j);
                Change::Put {
                    path: format!("app.bsky.feed.like/{}", self.rkey(i)),
                    record: subject_record("app.bsky.feed.like", &uri, cid, t),
                }
            }
            420..=619 => {
                let did = self.accounts[j].did.clone();
                self.ensure_created(j);
                Change::Put {
                    path: format!("app.bsky.graph.follow/{}", self.rkey(i)),
                    record: json_to_ipld(&serde_json::json!({
                        "$type": "app.bsky.graph.follow",
                        "subject": did,
                        "createdAt": datetime(t),
                    }))
                    .expect("valid"),
                }
            }
            620..=769 => {
                let (uri, cid) = self.some_post(j);
                Change::Put {
                    path: format!("app.bsky.feed.repost/{}", self.rkey(i)),
                    record: subject_record("app.bsky.feed.repost", &uri, cid, t),
                }
            }
            770..=919 => {
                let n = 4 + self.rng.below(14) as usize;
                let text = words(&mut self.rng, n);
                let shape = self.rng.below(10);
                let reply = if shape < 3 {
                    Some(self.some_post(j))
                } else {
                    None
                };
                let embed = match shape {
                    3 => Some(Embed::Quote(self.some_post(j))),
                    4 | 5 => Some(Embed::Image(fake_blob(&text))),
                    6 => Some(Embed::Link(format!(
                        "https://news{}.example.com/story",
                        self.rng.below(20)
                    ))),
                    _ => None,
                };
                let text = match &embed {
                    Some(Embed::Link(url)) => format!("{text} {url}"),
                    _ => text,
                };
                Change::Put {
                    path: format!("app.bsky.feed.post/{}", self.rkey(i)),
                    record: post_record(&text, t, reply, embed),
                }
            }
            920..=949 => {
                let n = 1 + self.rng.below(2) as usize;
                let name = words(&mut self.rng, n);
                Change::Put {
                    path: "app.bsky.actor.profile/self".into(),
                    record: json_to_ipld(&serde_json::json!({
                        "$type": "app.bsky.actor.profile",
                        "displayName": name,
                        "description": "",
                    }))
                    .expect("valid"),
                }
            }
            950..=989 => {
                // Delete something of one's own (not the profile), if there is anything.
                let repo = &self.accounts[i].repo;
                let n = repo.len();
                let target = (n > 1)
                    .then(|| repo.nth_path(self.rng.below(n as u64) as usize))
                    .flatten()
                    .filter(|p| !p.starts_with("app.bsky.actor.profile"))
                    .map(str::to_string);
                match target {
                    Some(path) => Change::Delete { path },
                    None => return,
                }
            }
            990..=996 => {
                // A handle change.
                let a = &mut self.accounts[i];
                a.handle = format!("user{i}-{}.sim.test", a.clock);
                self.emit_identity(i);
                return;
            }
            _ => {
                // An account status event (reactivation after a pause).
                self.emit_account(i);
                return;
            }
        };
        self.commit(i, vec![change]);
    }

    fn abusive_event(&mut self, i: usize, scenario: usize) {
        let first = self.accounts[i].acts == 0;
        self.accounts[i].acts += 1;
        let acts = self.accounts[i].acts;
        let t = self.time;
        let j = self.random_other(i);
        let change = match SCENARIOS[scenario] {
            "greeting-spam" => {
                let text = [
                    "Hello, can we be friends?",
                    "hello dear, how are you doing today?",
                ][self.rng.below(2) as usize];
                Change::Put {
                    path: format!("app.bsky.feed.post/{}", self.rkey(i)),
                    record: post_record(text, t, None, None),
                }
            }
            "reply-ring" => {
                let parent = self.some_post(j);
                Change::Put {
                    path: format!("app.bsky.feed.post/{}", self.rkey(i)),
                    record: post_record(
                        "Check my profile for free crypto giveaway",
                        t,
                        Some(parent),
                        None,
                    ),
                }
            }
            "copy-paste" => {
                let tail = ["!", "!!", " 💰", " now", " today", " ✅"][self.rng.below(6) as usize];
                let text = format!(
                    "Earn 500 dollars a day working from home, message me to learn how{tail}"
                );
                Change::Put {
                    path: format!("app.bsky.feed.post/{}", self.rkey(i)),
                    record: post_record(&text, t, None, None),
                }
            }
            "follow-churn" => match self.accounts[i].last_follow.take() {
                Some(rkey) if acts.is_multiple_of(2) => Change::Delete {
                    path: format!("app.bsky.graph.follow/{rkey}"),
                },
                _ => {
                    self.ensure_created(j);
                    let rkey = self.rkey(i);
                    self.accounts[i].last_follow = Some(rkey.clone());
                    Change::Put {
                        path: format!("app.bsky.graph.follow/{rkey}"),
                        record: json_to_ipld(&serde_json::json!({
                            "$type": "app.bsky.graph.follow",
                            "subject": self.accounts[j].did,
                            "createdAt": datetime(t),
                        }))
                        .expect("valid"),
                    }
                }
            },
            "link-spam" => {
                // A domain never seen before, for every post.
                let fresh = plc_id(&digest(&[
                    &acts.to_le_bytes(),
                    self.accounts[i].did.as_bytes(),
                ]));
                let domain = format!("{}-deals.top", &fresh[..8]);
                let url = format!("https://{domain}/promo");
                Change::Put {
                    path: format!("app.bsky.feed.post/{}", self.rkey(i)),
                    record: post_record(
                        &format!("Limited offer {url}"),
                        t,
                        None,
                        Some(Embed::Link(url)),
                    ),
                }
            }
            "harassment" => {
                let target = self
                    .accounts
                    .iter()
                    .position(|a| a.role == Role::Protected)
                    .expect("exists");
                let parent = match self.protected_post.clone() {
                    Some(p) => p,
                    None => {
                        let p = self.some_post(target);
                        self.protected_post = Some(p.clone());
                        p
                    }
                };
                Change::Put {
                    path: format!("app.bsky.feed.post/{}", self.rkey(i)),
                    record: post_record("nobody wants you here, log off", t, Some(parent), None),
                }
            }
            "impersonation" => {
                if first {
                    // Take a handle that carries a celebrity's name.
                    let a = &mut self.accounts[i];
                    a.handle = format!("elonmusk-official{i}.sim.test");
                    let seq = self.emit_identity(i);
                    self.record_truth(i, scenario, seq);
                    return;
                }
                Change::Put {
                    path: format!("app.bsky.feed.post/{}", self.rkey(i)),
                    record: post_record(
                        "Sending crypto back to everyone who sends me some",
                        t,
                        None,
                        None,
                    ),
                }
            }
            _ => {
                // slur-evasion: the word written with look-alike letters.
                let variant =
                    ["\u{043a}ys", "k\u{0443}s", "ky\u{0455}", "k.y.s"][self.rng.below(4) as usize];
                let parent = self.some_post(j);
                Change::Put {
                    path: format!("app.bsky.feed.post/{}", self.rkey(i)),
                    record: post_record(&format!("just {variant} already"), t, Some(parent), None),
                }
            }
        };
        let seq_before = self.seq;
        self.commit(i, vec![change]);
        if first {
            self.record_truth(i, scenario, seq_before + 1);
        }
    }

    fn record_truth(&mut self, i: usize, scenario: usize, seq: i64) {
        self.truth.push(Truth {
            scenario: SCENARIOS[scenario],
            did: self.accounts[i].did.clone(),
            first_seq: seq,
            first_time: self.time,
        });
    }

    /// Generates events until a frame is queued.
    fn fill(&mut self) {
        while self.pending.is_empty() {
            self.time += self.config.step_micros;
            // About 4 % of events are abusive, from the scenario accounts in turn.
            if !self.abusive.is_empty() && self.rng.below(100) < 4 {
                let k = self.rng.below(self.abusive.len() as u64) as usize;
                let i = self.abusive[k];
                self.ensure_created(i);
                if let Role::Abusive(s) = self.accounts[i].role {
                    // The real frames of the act follow the creation frames already queued.
                    self.abusive_event(i, s);
                }
            } else {
                let i = self.ordinary_actor();
                self.ensure_created(i);
                self.ordinary_event(i);
            }
        }
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> SimFrame {
        self.next_pending().finish()
    }

    fn next_pending(&mut self) -> Pending {
        self.fill();
        self.pending.pop_front().expect("not empty")
    }

    /// The next `n` frames, the same as `n` calls of [`Network::next_frame`]. With more than
    /// one core, commits are signed on a thread of their own, a batch of [`SIGNING_BATCH`]
    /// frames behind the generator, so that signing (about half the work) overlaps
    /// generating and whatever the caller does with the frames.
    pub fn frames(&mut self, n: u64) -> Frames<'_> {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let signer = (cores > 1 && n > SIGNING_BATCH).then(|| {
            let (to_sign, inbox) = std::sync::mpsc::channel::<Vec<Pending>>();
            let (outbox, signed) = std::sync::mpsc::channel::<Vec<SimFrame>>();
            std::thread::spawn(move || {
                for batch in inbox {
                    let frames = batch.into_iter().map(Pending::finish).collect();
                    if outbox.send(frames).is_err() {
                        return;
                    }
                }
            });
            Signer {
                to_sign,
                signed,
                in_flight: 0,
            }
        });
        Frames {
            network: self,
            left: n,
            ready: Vec::new().into_iter(),
            signer,
        }
    }
}

/// How many frames [`Network::frames`] generates before signing them together.
pub const SIGNING_BATCH: u64 = 1024;

/// The frames of [`Network::frames`].
pub struct Frames<'a> {
    network: &'a mut Network,
    /// Frames not yet generated.
    left: u64,
    ready: std::vec::IntoIter<SimFrame>,
    signer: Option<Signer>,
}

/// The signing thread of [`Frames`]: batches go in order and come back in order.
struct Signer {
    to_sign: std::sync::mpsc::Sender<Vec<Pending>>,
    signed: std::sync::mpsc::Receiver<Vec<SimFrame>>,
    in_flight: usize,
}

impl Frames<'_> {
    /// Generates the next batch of at most [`SIGNING_BATCH`] frames, unsigned.
    fn generate(&mut self) -> Vec<Pending> {
        let n = self.left.min(SIGNING_BATCH);
        self.left -= n;
        (0..n).map(|_| self.network.next_pending()).collect()
    }
}

impl Iterator for Frames<'_> {
    type Item = SimFrame;

    fn next(&mut self) -> Option<SimFrame> {
        if let Some(frame) = self.ready.next() {
            return Some(frame);
        }
        if self.signer.is_none() {
            if self.left == 0 {
                return None;
            }
            self.ready = self
                .generate()
                .into_iter()
                .map(Pending::finish)
                .collect::<Vec<_>>()
                .into_iter();
            return self.ready.next();
        }
        // Keep two batches with the signer: one it signs while the next is generated.
        while self.signer.as_ref().is_some_and(|s| s.in_flight < 2) && self.left > 0 {
            let batch = self.generate();
            let signer = self.signer.as_mut().expect("checked");
            signer.to_sign.send(batch).expect("the signing thread runs");
            signer.in_flight += 1;
        }
        let signer = self.signer.as_mut().expect("checked");
        if signer.in_flight == 0 {
            return None;
        }
        let frames = signer.signed.recv().expect("the signing thread runs");
        signer.in_flight -= 1;
        self.ready = frames.into_iter();
        self.ready.next()
    }
}

enum Embed {
    Quote((String, Cid)),
    Image(Cid),
    Link(String),
}

fn fake_blob(text: &str) -> Cid {
    // A raw-codec CID (0x55), as blobs have.
    skywarden_atproto::data::cid_for(0x55, text.as_bytes())
}

fn blob_refs(record: &Ipld) -> Vec<Cid> {
    let mut out = Vec::new();
    fn walk(v: &Ipld, out: &mut Vec<Cid>) {
        match v {
            Ipld::Map(m) => {
                if m.get("$type") == Some(&Ipld::String("blob".into()))
                    && let Some(Ipld::Link(c)) = m.get("ref")
                {
                    out.push(*c);
                }
                m.values().for_each(|x| walk(x, out));
            }
            Ipld::List(l) => l.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(record, &mut out);
    out
}

fn subject_record(kind: &str, uri: &str, cid: Cid, t: i64) -> Ipld {
    json_to_ipld(&serde_json::json!({
        "$type": kind,
        "subject": { "uri": uri, "cid": cid.to_string() },
        "createdAt": datetime(t),
    }))
    .expect("valid")
}

fn post_record(text: &str, t: i64, reply: Option<(String, Cid)>, embed: Option<Embed>) -> Ipld {
    let mut r = serde_json::json!({
        "$type": "app.bsky.feed.post",
        "text": text,
        "langs": ["en"],
        "createdAt": datetime(t),
    });
    if let Some((uri, cid)) = reply {
        let strong = serde_json::json!({ "uri": uri, "cid": cid.to_string() });
        r["reply"] = serde_json::json!({ "root": strong, "parent": strong });
    }
    match embed {
        Some(Embed::Quote((uri, cid))) => {
            r["embed"] = serde_json::json!({
                "$type": "app.bsky.embed.record",
                "record": { "uri": uri, "cid": cid.to_string() },
            });
        }
        Some(Embed::Image(blob)) => {
            r["embed"] = serde_json::json!({
                "$type": "app.bsky.embed.images",
                "images": [{
                    "alt": "",
                    "image": { "$type": "blob", "ref": { "$link": blob.to_string() }, "mimeType": "image/jpeg", "size": 48213 },
                }],
            });
        }
        Some(Embed::Link(url)) => {
            // A link facet over the URL where it appears in the text.
            if let Some(start) = text.find(&url) {
                r["facets"] = serde_json::json!([{
                    "index": { "byteStart": start, "byteEnd": start + url.len() },
                    "features": [{ "$type": "app.bsky.richtext.facet#link", "uri": url }],
                }]);
            }
        }
        None => {}
    }
    json_to_ipld(&r).expect("valid record")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws `n` ordinary actors one step apart and returns the most acts of one account.
    fn busiest(accounts: usize, n: usize) -> (usize, usize) {
        let mut net = Network::new(SimConfig {
            accounts,
            abuse: false,
            ..SimConfig::default()
        });
        let mut acts = vec![0usize; accounts];
        for _ in 0..n {
            net.time += net.config.step_micros;
            acts[net.ordinary_actor()] += 1;
        }
        let most = *acts.iter().max().expect("accounts");
        (most, acts.iter().filter(|&&a| a > 0).count())
    }

    #[test]
    fn ordinary_accounts_keep_a_human_pace() {
        // 300 simulated seconds at the default 1,000 events/s: a person does at most the burst
        // plus one act per interval. Unpaced, the head of the distribution made about 7.5 %
        // of the acts (22,000 here).
        let seconds = 300;
        let (most, active) = busiest(10_000, seconds * 1_000);
        let pace = HUMAN_BURST as usize + 1 + seconds * 1_000_000 / HUMAN_INTERVAL_MICROS as usize;
        assert!(
            most <= pace,
            "the busiest account made {most} acts, a person at most {pace}"
        );
        assert!(
            active > 5_000,
            "activity still spreads over the accounts: {active} active"
        );
    }

    #[test]
    fn the_stream_keeps_its_rate_when_people_cannot() {
        // 50 accounts cannot make 1,000 acts a second at a person's pace: the acts still happen,
        // over the pace, rather than the stream slowing down.
        let (most, _) = busiest(50, 10_000);
        assert!(most > HUMAN_BURST as usize + 3, "busiest made {most}");
    }
}
