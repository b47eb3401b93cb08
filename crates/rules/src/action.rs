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
    /// The action as one JSON object (for `skywarden rules run` and webhooks): what its
    /// [`Serialize`](serde::Serialize) implementation writes.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an action always serializes")
    }
}

/// One JSON object with the keys in sorted order:
/// `{"action": {..}, "explanation": {..}, "mode", "rule", "rulesetVersion", "subject": {..}}`.
/// Written straight to the serializer (the effect log writes one per logged effect), with no
/// intermediate `serde_json::Value`.
impl serde::Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("action", &VerbJson(&self.verb))?;
        map.serialize_entry("explanation", &ExplanationJson(&self.explanation))?;
        map.serialize_entry("mode", self.mode.as_str())?;
        map.serialize_entry("rule", &self.rule)?;
        map.serialize_entry("rulesetVersion", &self.ruleset_version)?;
        map.serialize_entry("subject", &SubjectJson(&self.subject))?;
        map.end()
    }
}

/// A verb as the object `Action`'s JSON holds under `action`, keys sorted.
struct VerbJson<'a>(&'a Verb);

impl serde::Serialize for VerbJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self.0 {
            Verb::Label {
                value,
                negate,
                expires_in,
            } => {
                map.serialize_entry("expiresInSeconds", &expires_in.map(|e| e / 1_000_000))?;
                map.serialize_entry("label", value)?;
                map.serialize_entry("negate", negate)?;
            }
            Verb::Tag { tags } => map.serialize_entry("tag", tags)?,
            Verb::Flag { value } => map.serialize_entry("flag", value)?,
            Verb::Report { reason, comment } => {
                map.serialize_entry("comment", comment)?;
                map.serialize_entry("report", reason)?;
            }
            Verb::Takedown { comment } => {
                map.serialize_entry("comment", comment)?;
                map.serialize_entry("takedown", &true)?;
            }
            Verb::Escalate { comment } => {
                map.serialize_entry("comment", comment)?;
                map.serialize_entry("escalate", &true)?;
            }
            Verb::Acknowledge { comment } => {
                map.serialize_entry("acknowledge", &true)?;
                map.serialize_entry("comment", comment)?;
            }
            Verb::Comment { comment } => map.serialize_entry("comment", comment)?,
            Verb::Notify { webhook, message } => {
                map.serialize_entry("message", message)?;
                map.serialize_entry("notify", webhook)?;
            }
        }
        map.end()
    }
}

/// A subject as `{"did"}` or `{"cid", "uri"}`.
struct SubjectJson<'a>(&'a Subject);

impl serde::Serialize for SubjectJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self.0 {
            Subject::Account { did } => map.serialize_entry("did", did)?,
            Subject::Record { uri, cid } => {
                map.serialize_entry("cid", cid)?;
                map.serialize_entry("uri", uri)?;
            }
        }
        map.end()
    }
}

/// The explanation as an object: keys sorted, a repeated expression keeping its last value
/// (as a JSON object built from the pairs would).
struct ExplanationJson<'a>(&'a Explanation);

impl serde::Serialize for ExplanationJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut pairs: Vec<&(String, String)> = self.0.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut map = serializer.serialize_map(None)?;
        for (i, (key, value)) in pairs.iter().map(|p| (&p.0, &p.1)).enumerate() {
            // Stable sort: of equal keys, the last in the explanation comes last.
            if pairs.get(i + 1).is_some_and(|next| &next.0 == key) {
                continue;
            }
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The JSON as an object built value by value (how the log wrote it before the direct
    /// serializer), to compare the serializer against.
    fn built(a: &Action) -> serde_json::Value {
        let verb = match &a.verb {
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
        let subject = match &a.subject {
            Subject::Account { did } => json!({ "did": did }),
            Subject::Record { uri, cid } => json!({ "uri": uri, "cid": cid }),
        };
        let explanation: serde_json::Map<String, serde_json::Value> = a
            .explanation
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        json!({
            "action": verb,
            "subject": subject,
            "rule": a.rule,
            "rulesetVersion": a.ruleset_version,
            "mode": a.mode.as_str(),
            "explanation": explanation,
        })
    }

    #[test]
    fn serialized_action_is_the_object_built_value_by_value() {
        let verbs = vec![
            Verb::Label {
                value: "spam".into(),
                negate: false,
                expires_in: Some(7_200_000_000),
            },
            Verb::Label {
                value: "spam".into(),
                negate: true,
                expires_in: None,
            },
            Verb::Tag {
                tags: vec!["a".into(), "b \"quoted\"".into()],
            },
            Verb::Flag {
                value: "ring".into(),
            },
            Verb::Report {
                reason: "com.atproto.moderation.defs#reasonSpam".into(),
                comment: "line\nbreak".into(),
            },
            Verb::Takedown {
                comment: String::new(),
            },
            Verb::Escalate {
                comment: "x".into(),
            },
            Verb::Acknowledge {
                comment: String::new(),
            },
            Verb::Comment {
                comment: "é 日本".into(),
            },
            Verb::Notify {
                webhook: "ops".into(),
                message: "m".into(),
            },
        ];
        let subjects = [
            Subject::Account {
                did: "did:plc:abc".into(),
            },
            Subject::Record {
                uri: "at://did:plc:abc/app.bsky.feed.post/3k".into(),
                cid: Some("bafyrei".into()),
            },
            Subject::Record {
                uri: "at://did:plc:abc/app.bsky.feed.post/3k".into(),
                cid: None,
            },
        ];
        // Out of order and with a repeated expression: the object keeps the last value.
        let explanation: Explanation = vec![
            ("text.length".to_string(), "30".to_string()),
            ("account.did".to_string(), "did:plc:abc".to_string()),
            ("text.length".to_string(), "31".to_string()),
        ]
        .into();
        for verb in &verbs {
            for subject in &subjects {
                let a = Action {
                    verb: verb.clone(),
                    subject: subject.clone(),
                    rule: "r".into(),
                    ruleset_version: "sha256:0".into(),
                    mode: Mode::Shadow,
                    explanation: explanation.clone(),
                };
                let expected = built(&a);
                assert_eq!(a.to_json(), expected);
                // Byte for byte: keys in the order a sorted object writes them.
                assert_eq!(
                    serde_json::to_string(&a).unwrap(),
                    serde_json::to_string(&expected).unwrap()
                );
            }
        }
    }
}
