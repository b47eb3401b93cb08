//! Rules shared by the integration tests.

pub use skywarden_ingest::synth;

/// A ruleset that acts on per-account counters and record content only, so which event fires
/// what does not depend on how partitions interleave.
pub const ACTING_RULES: &str = r#"
[constants]
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

[[counter]]
name = "follows_by_account"
on = ["follow"]
key = "account.did"
windows = ["hour", "day"]

[[counter]]
name = "copies"
on = ["create:post"]
when = "record.post.is_reply && text.length > 10"
key = 'account.did + "|" + text.fingerprint'
windows = ["day"]

[[counter]]
name = "likes_by_account"
on = ["like"]
key = "account.did"
windows = ["hour"]

[[rule]]
name = "gtube"
description = "GTUBE posts: label the post, report the account."
on = ["create:post"]
when = "text.raw.contains(GTUBE)"

[[rule.action]]
label = "spam"

[[rule.action]]
report = "spam"
comment = "GTUBE posted"
target = "account"

[[rule]]
name = "copies"
description = "Five identical replies in a day: label the account, and comment every further copy."
on = ["create:post"]
when = "counters.copies.day >= 5"

[[rule.action]]
label = "spam"
target = "account"

[[rule.action]]
comment = "copy number {{ counters.copies.day }}"
target = "account"

[[rule]]
name = "mass-follow"
description = "More than 40 follows in an hour."
on = ["follow"]
when = "counters.follows_by_account.hour > 40"

[[rule.action]]
flag = "mass-follow"
target = "account"

[[rule.action]]
tag = ["mass-follow"]
target = "account"

[[rule]]
name = "like-burst"
description = "More than 42 likes in an hour: escalate every one past the limit."
on = ["like"]
when = "counters.likes_by_account.hour > 42"

[[rule.action]]
escalate = true
comment = "{{ counters.likes_by_account.hour }} likes this hour"
target = "account"
"#;
