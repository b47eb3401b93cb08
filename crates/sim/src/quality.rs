//! Detection quality: a ruleset's actions compared with the simulator's ground truth.
//!
//! An action is on an account when its subject is the account's DID or one of its records.
//! A rule's *precision* is the share of the accounts it acted on that are abusive; a
//! scenario's *recall* is the share of its accounts that any rule acted on, and its
//! *time to detection* the time from an account's first abusive frame to its first action.

use crate::Truth;
use std::collections::{BTreeMap, BTreeSet};

/// One logged action, as the effect log holds it.
#[derive(Debug, Clone)]
pub struct ActionRow {
    /// The rule.
    pub rule: String,
    /// The verb (`label`, `report`, `tag`, …).
    pub verb: String,
    /// The subject: a DID or an AT-URI.
    pub subject: String,
    /// The event time of the action (µs).
    pub event_time: i64,
}

/// One rule's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleQuality {
    /// The rule.
    pub rule: String,
    /// Verbs it used.
    pub verbs: BTreeSet<String>,
    /// Distinct accounts it acted on.
    pub accounts: usize,
    /// Of those, abusive ones.
    pub abusive: usize,
    /// `abusive / accounts`.
    pub precision: f64,
    /// Accounts caught per scenario.
    pub scenarios: BTreeMap<String, usize>,
}

/// One scenario's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioQuality {
    /// The scenario.
    pub scenario: String,
    /// Its accounts in the ground truth.
    pub accounts: usize,
    /// Those some rule acted on.
    pub detected: usize,
    /// `detected / accounts`.
    pub recall: f64,
    /// Median seconds from the first abusive frame to the first action, over detected accounts.
    pub median_seconds_to_detection: Option<f64>,
    /// Rules that caught at least one of its accounts.
    pub rules: BTreeSet<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Quality {
    /// Per rule, by name.
    pub rules: Vec<RuleQuality>,
    /// Per scenario.
    pub scenarios: Vec<ScenarioQuality>,
}

/// The account an action is on.
pub fn subject_account(subject: &str) -> &str {
    subject
        .strip_prefix("at://")
        .map_or(subject, |rest| rest.split('/').next().unwrap_or(rest))
}

/// Compares `actions` with `truth`.
pub fn evaluate(truth: &[Truth], actions: &[ActionRow]) -> Quality {
    let by_did: BTreeMap<&str, &Truth> = truth.iter().map(|t| (t.did.as_str(), t)).collect();
    let mut per_rule: BTreeMap<&str, (BTreeSet<String>, BTreeSet<&str>)> = BTreeMap::new();
    // Per abusive account: the first action on it, and which rules acted.
    let mut first_action: BTreeMap<&str, i64> = BTreeMap::new();
    let mut caught_by: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in actions {
        let account = subject_account(&a.subject);
        let entry = per_rule.entry(a.rule.as_str()).or_default();
        entry.0.insert(a.verb.clone());
        entry.1.insert(account);
        if by_did.contains_key(account) {
            let t = first_action.entry(account).or_insert(a.event_time);
            *t = (*t).min(a.event_time);
            caught_by
                .entry(account)
                .or_default()
                .insert(a.rule.as_str());
        }
    }
    let rules = per_rule
        .into_iter()
        .map(|(rule, (verbs, accounts))| {
            let mut scenarios = BTreeMap::new();
            let mut abusive = 0;
            for d in &accounts {
                if let Some(t) = by_did.get(d) {
                    abusive += 1;
                    *scenarios.entry(t.scenario.to_string()).or_insert(0) += 1;
                }
            }
            RuleQuality {
                rule: rule.to_string(),
                verbs,
                accounts: accounts.len(),
                abusive,
                precision: abusive as f64 / accounts.len().max(1) as f64,
                scenarios,
            }
        })
        .collect();
    let mut by_scenario: BTreeMap<&str, Vec<&Truth>> = BTreeMap::new();
    for t in truth {
        by_scenario.entry(t.scenario).or_default().push(t);
    }
    let scenarios = crate::SCENARIOS
        .iter()
        .map(|s| {
            let members = by_scenario.get(s).cloned().unwrap_or_default();
            let mut delays: Vec<f64> = Vec::new();
            let mut rules = BTreeSet::new();
            for t in &members {
                if let Some(at) = first_action.get(t.did.as_str()) {
                    delays.push((*at - t.first_time).max(0) as f64 / 1e6);
                    rules.extend(caught_by[t.did.as_str()].iter().map(|r| r.to_string()));
                }
            }
            delays.sort_by(|a, b| a.total_cmp(b));
            ScenarioQuality {
                scenario: s.to_string(),
                accounts: members.len(),
                detected: delays.len(),
                recall: delays.len() as f64 / members.len().max(1) as f64,
                median_seconds_to_detection: (!delays.is_empty()).then(|| delays[delays.len() / 2]),
                rules,
            }
        })
        .collect();
    Quality { rules, scenarios }
}

impl Quality {
    /// A plain-text report: one table per rule, one per scenario.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("rule                                  verbs                     accounts  abusive  precision  caught\n");
        for r in &self.rules {
            let verbs: Vec<&str> = r.verbs.iter().map(String::as_str).collect();
            let caught: Vec<String> = r
                .scenarios
                .iter()
                .map(|(s, n)| format!("{s}:{n}"))
                .collect();
            out.push_str(&format!(
                "{:<37} {:<25} {:>8} {:>8} {:>10.2}  {}\n",
                r.rule,
                verbs.join(","),
                r.accounts,
                r.abusive,
                r.precision,
                caught.join(" ")
            ));
        }
        out.push('\n');
        out.push_str(
            "scenario        accounts  detected  recall  median time to detection  rules\n",
        );
        for s in &self.scenarios {
            let ttd = s
                .median_seconds_to_detection
                .map_or("-".to_string(), |t| format!("{t:.1} s"));
            let rules: Vec<&str> = s.rules.iter().map(String::as_str).collect();
            out.push_str(&format!(
                "{:<15} {:>8} {:>9} {:>7.2}  {:>24}  {}\n",
                s.scenario,
                s.accounts,
                s.detected,
                s.recall,
                ttd,
                rules.join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_and_time_to_detection() {
        let truth = vec![
            Truth {
                scenario: "reply-ring",
                did: "did:plc:a".into(),
                first_seq: 1,
                first_time: 1_000_000,
            },
            Truth {
                scenario: "reply-ring",
                did: "did:plc:b".into(),
                first_seq: 2,
                first_time: 2_000_000,
            },
            Truth {
                scenario: "link-spam",
                did: "did:plc:c".into(),
                first_seq: 3,
                first_time: 0,
            },
        ];
        let act = |rule: &str, subject: &str, t: i64| ActionRow {
            rule: rule.into(),
            verb: "report".into(),
            subject: subject.into(),
            event_time: t,
        };
        let q = evaluate(
            &truth,
            &[
                act("replies", "did:plc:a", 4_000_000),
                act("replies", "at://did:plc:a/app.bsky.feed.post/1", 3_000_000),
                act("replies", "did:plc:ordinary", 5_000_000),
                act("links", "at://did:plc:c/app.bsky.feed.post/2", 500_000),
            ],
        );
        let replies = q.rules.iter().find(|r| r.rule == "replies").unwrap();
        assert_eq!((replies.accounts, replies.abusive), (2, 1));
        assert!((replies.precision - 0.5).abs() < 1e-9);
        let ring = q
            .scenarios
            .iter()
            .find(|s| s.scenario == "reply-ring")
            .unwrap();
        assert_eq!((ring.accounts, ring.detected), (2, 1));
        assert_eq!(
            ring.median_seconds_to_detection,
            Some(2.0),
            "first action, on a record"
        );
        let links = q
            .scenarios
            .iter()
            .find(|s| s.scenario == "link-spam")
            .unwrap();
        assert_eq!(links.recall, 1.0);
        let churn = q
            .scenarios
            .iter()
            .find(|s| s.scenario == "follow-churn")
            .unwrap();
        assert_eq!(
            (
                churn.accounts,
                churn.detected,
                churn.median_seconds_to_detection
            ),
            (0, 0, None)
        );
        assert!(q.table().contains("reply-ring"));
    }
}
