//! Detection quality: a ruleset's actions compared with the simulator's ground truth.
//!
//! An action is on an account when its subject is the account's DID or one of its records.
//! A rule's *precision* is the share of the accounts it acted on that are abusive; a
//! scenario's *recall* is the share of its accounts that any rule acted on, and its
//! *time to detection* the time from an account's first abusive frame to its first action.
//! The same two figures are given per rule within each scenario: which rule finds a scenario,
//! and how early, is what decides which one to tune or retire.

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
    /// Per rule that caught at least one of its accounts, by rule name.
    pub rules: Vec<RuleDetection>,
}

/// One rule's figures within one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDetection {
    /// The rule.
    pub rule: String,
    /// The scenario's accounts this rule acted on.
    pub detected: usize,
    /// `detected` over the scenario's accounts.
    pub recall: f64,
    /// Median seconds from the first abusive frame to this rule's first action, over the
    /// accounts it acted on.
    pub median_seconds_to_detection: Option<f64>,
}

/// The median of `values` (sorted here), the upper one of an even count.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied()
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
    // Per abusive account: the first action on it, and each acting rule's first action.
    let mut first_action: BTreeMap<&str, i64> = BTreeMap::new();
    let mut caught_by: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    for a in actions {
        let account = subject_account(&a.subject);
        let entry = per_rule.entry(a.rule.as_str()).or_default();
        entry.0.insert(a.verb.clone());
        entry.1.insert(account);
        if by_did.contains_key(account) {
            let t = first_action.entry(account).or_insert(a.event_time);
            *t = (*t).min(a.event_time);
            let t = caught_by
                .entry(account)
                .or_default()
                .entry(a.rule.as_str())
                .or_insert(a.event_time);
            *t = (*t).min(a.event_time);
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
            let delay = |t: &Truth, at: i64| (at - t.first_time).max(0) as f64 / 1e6;
            let mut delays: Vec<f64> = Vec::new();
            let mut rule_delays: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for t in &members {
                if let Some(at) = first_action.get(t.did.as_str()) {
                    delays.push(delay(t, *at));
                    for (rule, at) in &caught_by[t.did.as_str()] {
                        rule_delays.entry(rule).or_default().push(delay(t, *at));
                    }
                }
            }
            let of_members = |n: usize| n as f64 / members.len().max(1) as f64;
            ScenarioQuality {
                scenario: s.to_string(),
                accounts: members.len(),
                detected: delays.len(),
                recall: of_members(delays.len()),
                median_seconds_to_detection: median(&mut delays),
                rules: rule_delays
                    .into_iter()
                    .map(|(rule, mut delays)| RuleDetection {
                        rule: rule.to_string(),
                        detected: delays.len(),
                        recall: of_members(delays.len()),
                        median_seconds_to_detection: median(&mut delays),
                    })
                    .collect(),
            }
        })
        .collect();
    Quality { rules, scenarios }
}

impl Quality {
    /// A plain-text report: one table per rule, one per scenario, and one per rule within
    /// each scenario.
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
            let line = format!(
                "{:<37} {:<25} {:>8} {:>8} {:>10.2}  {}",
                r.rule,
                verbs.join(","),
                r.accounts,
                r.abusive,
                r.precision,
                caught.join(" ")
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(
            "scenario        accounts  detected  recall  median time to detection  rules\n",
        );
        let seconds = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{t:.1} s"));
        for s in &self.scenarios {
            let ttd = seconds(s.median_seconds_to_detection);
            let rules: Vec<&str> = s.rules.iter().map(|r| r.rule.as_str()).collect();
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
        out.push('\n');
        out.push_str("scenario        rule                                  detected  recall  median time to detection\n");
        for s in &self.scenarios {
            for r in &s.rules {
                out.push_str(&format!(
                    "{:<15} {:<37} {:>8} {:>7.2}  {:>24}\n",
                    s.scenario,
                    r.rule,
                    r.detected,
                    r.recall,
                    seconds(r.median_seconds_to_detection)
                ));
            }
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
                act("replies", "did:plc:c", 9_000_000),
            ],
        );
        let replies = q.rules.iter().find(|r| r.rule == "replies").unwrap();
        assert_eq!((replies.accounts, replies.abusive), (3, 2));
        assert!((replies.precision - 2.0 / 3.0).abs() < 1e-9);
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
        assert_eq!(
            ring.rules,
            [RuleDetection {
                rule: "replies".into(),
                detected: 1,
                recall: 0.5,
                median_seconds_to_detection: Some(2.0),
            }]
        );
        let links = q
            .scenarios
            .iter()
            .find(|s| s.scenario == "link-spam")
            .unwrap();
        assert_eq!(links.recall, 1.0);
        assert_eq!(links.median_seconds_to_detection, Some(0.5));
        // Per rule: each rule's own first action on the account.
        let per_rule: Vec<(&str, Option<f64>)> = links
            .rules
            .iter()
            .map(|r| (r.rule.as_str(), r.median_seconds_to_detection))
            .collect();
        assert_eq!(per_rule, [("links", Some(0.5)), ("replies", Some(9.0))]);
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
        let table = q.table();
        assert!(
            table.lines().any(|l| l.starts_with("link-spam")
                && l.contains("replies")
                && l.ends_with("9.0 s")),
            "{table}"
        );
    }
}
