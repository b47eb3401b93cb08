//! The default ruleset's near-duplicate detection at network volume: SimHash bands are 16 bits,
//! so once an hour holds a few hundred thousand posts every band value is shared by several
//! unrelated accounts by chance. `near-duplicate-campaign` must stay quiet on such traffic and
//! still catch a real campaign in it.

use skywarden_atproto::data::json_to_ipld;
use skywarden_atproto::event::Action as OpAction;
use skywarden_rules::counter::MemoryCounters;
use skywarden_rules::testing::record_event;
use skywarden_rules::{Account, Evaluator, Input, Ruleset};
use std::path::Path;

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
const RULE: &str = "near-duplicate-campaign";

struct Run {
    rules: Ruleset,
    evaluator: Evaluator,
    counters: MemoryCounters,
    account: Account,
}

impl Run {
    fn default_rules() -> Run {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
        let rules = Ruleset::load_dir(&dir).unwrap_or_else(|d| panic!("{d:?}"));
        let counters = MemoryCounters::new(rules.counters.iter().map(|c| c.spec.clone()).collect());
        Run {
            rules,
            evaluator: Evaluator::new(),
            counters,
            account: Account::default(),
        }
    }

    /// Posts `text` as `did` at `t`; whether the near-duplicate rule fired.
    fn post(&mut self, did: &str, t: i64, text: &str) -> bool {
        let record = json_to_ipld(&serde_json::json!({
            "$type": "app.bsky.feed.post",
            "text": text,
            "createdAt": "2026-01-01T00:00:00.000Z",
        }))
        .unwrap();
        let rkey = format!("3k{:011}", t % 100_000_000_000);
        let event = record_event(
            did,
            t,
            OpAction::Create,
            "app.bsky.feed.post",
            &rkey,
            Some(record),
        );
        let mut firings = Vec::new();
        for input in Input::units(&event, &self.account, t) {
            self.evaluator
                .evaluate(&self.rules, input, &mut self.counters, &mut firings);
        }
        firings.iter().any(|f| f.rule_name == RULE)
    }
}

/// Ordinary text: random words of two to four syllables, so no two posts are near-duplicates.
fn words(state: &mut u64, n: usize) -> String {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "hu", "ja", "ke",
        "li", "mo", "nu", "pa", "re", "si", "to", "un", "ve",
    ];
    let mut next = || {
        // splitmix64
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        for _ in 0..2 + next() % 3 {
            out.push_str(SYLLABLES[(next() % SYLLABLES.len() as u64) as usize]);
        }
    }
    out
}

#[test]
fn unrelated_posts_at_volume_are_not_a_campaign_and_a_campaign_still_is() {
    let mut run = Run::default_rules();
    let mut state = 7u64;
    // 250,000 posts from as many accounts within 25 minutes: about 3.8 posts per 16-bit band
    // value, where a fixed threshold of 10 accounts on two bands flags unrelated accounts.
    let posts = 250_000i64;
    let mut flagged = Vec::new();
    for i in 0..posts {
        let n = 6 + (i % 8) as usize;
        let text = words(&mut state, n);
        if run.post(&format!("did:plc:ordinary{i:09}"), T0 + i * 6_000, &text) {
            flagged.push(i);
        }
    }
    assert!(
        flagged.is_empty(),
        "{} unrelated accounts flagged, the first at post {:?}",
        flagged.len(),
        flagged.first()
    );
    // A copy-paste campaign in the same hour: caught, after more accounts than on a quiet
    // stream (the bar rises with the band load), and every later account too.
    let t = T0 + posts * 6_000;
    let campaign = (0..40)
        .map(|k| {
            let text = format!(
                "Earn 500 dollars a day working from home, message me to learn how{}",
                ["!", " now", " today", ""][k % 4]
            );
            run.post(&format!("did:plc:campaign{k:04}"), t + k as i64, &text)
        })
        .collect::<Vec<_>>();
    let first = campaign
        .iter()
        .position(|&f| f)
        .expect("the campaign is caught");
    assert!(
        (10..=30).contains(&first),
        "caught at account {first}: {campaign:?}"
    );
    // Every later exact copy is caught (variants may move bits out of the busiest bands).
    assert!(
        campaign.iter().skip(first).step_by(4).all(|&f| f),
        "{campaign:?}"
    );
}
