//! Actions: what a rule asks for when it fires, as data. The engine carries them out
//! (de-duplicated, under quotas); this crate only says what, on what, and why.

use crate::Mode;

/// What to do. `C` is the type of comments and messages: rendered text in actions, templates
/// (`Verb<Template>`) as declared in rule files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb<C = String> {
    /// Apply a label (`negate`: remove it).
    Label {
        /// Label value, e.g. `spam`.
        value: String,
        /// Negate (remove) instead of apply.
        negate: bool,
        /// Expiry, in microseconds after the action, if any.
        expires_in: Option<i64>,
    },
    /// Add moderation tags to the subject.
    Tag {
        /// Tags.
        tags: Vec<String>,
    },
    /// Set an internal flag on the subject (not visible to users; read by other rules and the
    /// console).
    Flag {
        /// Flag name.
        value: String,
    },
    /// File a report in the moderation queue.
    Report {
        /// Reason type NSID (`com.atproto.moderation.defs#reasonSpam`, ...).
        reason: String,
        /// Comment.
        comment: C,
    },
    /// Take the subject down.
    Takedown {
        /// Comment.
        comment: C,
    },
    /// Escalate the subject to a senior moderator.
    Escalate {
        /// Comment.
        comment: C,
    },
    /// Acknowledge open reports on the subject.
    Acknowledge {
        /// Comment.
        comment: C,
    },
    /// Add a comment to the subject's history.
    Comment {
        /// Comment.
        comment: C,
    },
    /// Send a webhook notification.
    Notify {
        /// Webhook name, resolved by the engine's configuration.
        webhook: String,
        /// Message.
        message: C,
    },
}

impl<C> Verb<C> {
    /// The same verb with its comment or message converted (templates rendered).
    pub fn map<'s, D>(&'s self, mut f: impl FnMut(&'s C) -> D) -> Verb<D> {
        match self {
            Verb::Label {
                value,
                negate,
                expires_in,
            } => Verb::Label {
                value: value.clone(),
                negate: *negate,
                expires_in: *expires_in,
            },
            Verb::Tag { tags } => Verb::Tag { tags: tags.clone() },
            Verb::Flag { value } => Verb::Flag {
                value: value.clone(),
            },
            Verb::Report { reason, comment } => Verb::Report {
                reason: reason.clone(),
                comment: f(comment),
            },
            Verb::Takedown { comment } => Verb::Takedown {
                comment: f(comment),
            },
            Verb::Escalate { comment } => Verb::Escalate {
                comment: f(comment),
            },
            Verb::Acknowledge { comment } => Verb::Acknowledge {
                comment: f(comment),
            },
            Verb::Comment { comment } => Verb::Comment {
                comment: f(comment),
            },
            Verb::Notify { webhook, message } => Verb::Notify {
                webhook: webhook.clone(),
                message: f(message),
            },
        }
    }

    /// The verb's name as written in rule files.
    pub fn name(&self) -> &'static str {
        match self {
            Verb::Label { negate: false, .. } => "label",
            Verb::Label { negate: true, .. } => "negate_label",
            Verb::Tag { .. } => "tag",
            Verb::Flag { .. } => "flag",
            Verb::Report { .. } => "report",
            Verb::Takedown { .. } => "takedown",
            Verb::Escalate { .. } => "escalate",
            Verb::Acknowledge { .. } => "acknowledge",
            Verb::Comment { .. } => "comment",
            Verb::Notify { .. } => "notify",
        }
    }
}

/// What an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The account (DID).
    Account {
        /// DID.
        did: String,
    },
    /// One record.
    Record {
        /// AT-URI.
        uri: String,
        /// CID, when the record is known (not for deletes).
        cid: Option<String>,
    },
}

/// One action a rule asks for, with its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// What to do.
    pub verb: Verb,
    /// On what.
    pub subject: Subject,
    /// The rule that fired.
    pub rule: String,
    /// The ruleset version the rule came from.
    pub ruleset_version: String,
    /// `live` actions are carried out; `shadow` ones are only recorded.
    pub mode: Mode,
    /// The values the rule's condition read when it fired: `(expression, value)`.
    pub explanation: Explanation,
}

/// `(expression, value)` for every field and counter a rule's condition read when it fired,
/// shared by the firing and each of its actions.
pub type Explanation = std::sync::Arc<[(String, String)]>;

/// Report reason types rules may use: `com.atproto.moderation.defs` and
/// `tools.ozone.report.defs` known values. Short names (`spam`, `violation`, `misleading`,
/// `sexual`, `rude`, `other`, `appeal`) mean the `com.atproto.moderation.defs` ones.
pub const REPORT_REASONS: &[&str] = &[
    "com.atproto.moderation.defs#reasonSpam",
    "com.atproto.moderation.defs#reasonViolation",
    "com.atproto.moderation.defs#reasonMisleading",
    "com.atproto.moderation.defs#reasonSexual",
    "com.atproto.moderation.defs#reasonRude",
    "com.atproto.moderation.defs#reasonOther",
    "com.atproto.moderation.defs#reasonAppeal",
    "tools.ozone.report.defs#reasonAppeal",
    "tools.ozone.report.defs#reasonOther",
    "tools.ozone.report.defs#reasonViolenceAnimal",
    "tools.ozone.report.defs#reasonViolenceThreats",
    "tools.ozone.report.defs#reasonViolenceGraphicContent",
    "tools.ozone.report.defs#reasonViolenceGlorification",
    "tools.ozone.report.defs#reasonViolenceExtremistContent",
    "tools.ozone.report.defs#reasonViolenceTrafficking",
    "tools.ozone.report.defs#reasonViolenceOther",
    "tools.ozone.report.defs#reasonSexualAbuseContent",
    "tools.ozone.report.defs#reasonSexualNCII",
    "tools.ozone.report.defs#reasonSexualDeepfake",
    "tools.ozone.report.defs#reasonSexualAnimal",
    "tools.ozone.report.defs#reasonSexualUnlabeled",
    "tools.ozone.report.defs#reasonSexualOther",
    "tools.ozone.report.defs#reasonChildSafetyCSAM",
    "tools.ozone.report.defs#reasonChildSafetyGroom",
    "tools.ozone.report.defs#reasonChildSafetyPrivacy",
    "tools.ozone.report.defs#reasonChildSafetyHarassment",
    "tools.ozone.report.defs#reasonChildSafetyOther",
    "tools.ozone.report.defs#reasonHarassmentTroll",
    "tools.ozone.report.defs#reasonHarassmentTargeted",
    "tools.ozone.report.defs#reasonHarassmentHateSpeech",
    "tools.ozone.report.defs#reasonHarassmentDoxxing",
    "tools.ozone.report.defs#reasonHarassmentOther",
    "tools.ozone.report.defs#reasonMisleadingBot",
    "tools.ozone.report.defs#reasonMisleadingImpersonation",
    "tools.ozone.report.defs#reasonMisleadingSpam",
    "tools.ozone.report.defs#reasonMisleadingScam",
    "tools.ozone.report.defs#reasonMisleadingElections",
    "tools.ozone.report.defs#reasonMisleadingOther",
    "tools.ozone.report.defs#reasonRuleSiteSecurity",
    "tools.ozone.report.defs#reasonRuleProhibitedSales",
    "tools.ozone.report.defs#reasonRuleBanEvasion",
    "tools.ozone.report.defs#reasonRuleOther",
    "tools.ozone.report.defs#reasonSelfHarmContent",
    "tools.ozone.report.defs#reasonSelfHarmED",
    "tools.ozone.report.defs#reasonSelfHarmStunts",
    "tools.ozone.report.defs#reasonSelfHarmSubstances",
    "tools.ozone.report.defs#reasonSelfHarmOther",
];

/// Resolves a reason as written in a rule file to its full NSID.
pub fn resolve_reason(reason: &str) -> Option<&'static str> {
    let short = match reason {
        "spam" => Some("com.atproto.moderation.defs#reasonSpam"),
        "violation" => Some("com.atproto.moderation.defs#reasonViolation"),
        "misleading" => Some("com.atproto.moderation.defs#reasonMisleading"),
        "sexual" => Some("com.atproto.moderation.defs#reasonSexual"),
        "rude" => Some("com.atproto.moderation.defs#reasonRude"),
        "other" => Some("com.atproto.moderation.defs#reasonOther"),
        "appeal" => Some("com.atproto.moderation.defs#reasonAppeal"),
        _ => None,
    };
    short.or_else(|| REPORT_REASONS.iter().copied().find(|r| *r == reason))
}

impl Action {
    /// The action as one JSON object (for `skywarden rules run` and webhooks).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let verb = match &self.verb {
            Verb::Label {
                value,
                negate,
                expires_in,
            } => {
                json!({ "label": value, "negate": negate, "expiresInSeconds": expires_in.map(|e| e / 1_000_000) })
            }
            Verb::Tag { tags } => json!({ "tag": tags }),
            Verb::Flag { value } => json!({ "flag": value }),
            Verb::Report { reason, comment } => json!({ "report": reason, "comment": comment }),
            Verb::Takedown { comment } => json!({ "takedown": true, "comment": comment }),
            Verb::Escalate { comment } => json!({ "escalate": true, "comment": comment }),
            Verb::Acknowledge { comment } => json!({ "acknowledge": true, "comment": comment }),
            Verb::Comment { comment } => json!({ "comment": comment }),
            Verb::Notify { webhook, message } => json!({ "notify": webhook, "message": message }),
        };
        let subject = match &self.subject {
            Subject::Account { did } => json!({ "did": did }),
            Subject::Record { uri, cid } => json!({ "uri": uri, "cid": cid }),
        };
        let explanation: serde_json::Map<String, serde_json::Value> = self
            .explanation
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        json!({
            "action": verb,
            "subject": subject,
            "rule": self.rule,
            "rulesetVersion": self.ruleset_version,
            "mode": self.mode.as_str(),
            "explanation": explanation,
        })
    }
}
