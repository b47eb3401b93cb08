//! Running a compiled ruleset over units: update counters, evaluate the routed rules, and bind
//! the actions of those that fire.

use crate::Mode;
use crate::action::{Action, Explanation, Subject as ActionSubject};
use crate::counter::CounterStore;
use crate::eval::Cx;
use crate::frame::{Frame, Scratch};
use crate::input::Input;
use crate::ruleset::{Ruleset, TargetKind, Template, TemplatePart};
use crate::value::{Owned, Val};

/// One rule that fired on one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    /// Index of the rule in [`Ruleset::rules`].
    pub rule: usize,
    /// The rule's name.
    pub rule_name: String,
    /// The rule's mode.
    pub mode: Mode,
    /// `(expression, value)` for every field and counter the condition reads.
    pub explanation: Explanation,
    /// The bound actions.
    pub actions: Vec<Action>,
}

/// Evaluates units against a ruleset. Holds reusable scratch memory: keep one per thread.
#[derive(Default)]
pub struct Evaluator {
    scratch: Scratch,
    /// Evaluate `off` rules too (for `rules test`).
    pub include_off: bool,
    /// Units whose evaluation panicked (a bug): they are skipped, the stream goes on.
    pub failed_units: u64,
    /// Per rule index, since the last [`Evaluator::drain_tally`]: evaluations, then firings.
    tally: Vec<(u64, u64)>,
}

impl Evaluator {
    /// A new evaluator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Evaluates one unit: counts it in the counters that apply, then evaluates the rules that
    /// apply, appending one [`Firing`] per rule that fired to `out`. Returns the number of rules
    /// evaluated. Allocates only for rules that fire.
    pub fn evaluate(
        &mut self,
        ruleset: &Ruleset,
        input: Input<'_>,
        counters: &mut dyn CounterStore,
        out: &mut Vec<Firing>,
    ) -> usize {
        let before = out.len();
        // A bug in a feature must cost one unit, not the service: contain it and go on.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.evaluate_unit(ruleset, input, counters, out)
        }));
        match result {
            Ok(n) => {
                for firing in &out[before..] {
                    self.tally[firing.rule].1 += 1;
                }
                n
            }
            Err(_) => {
                out.truncate(before);
                self.failed_units += 1;
                0
            }
        }
    }

    /// Calls `f` with each rule index evaluated since the last drain, how many times it was
    /// evaluated and how many times it fired (units whose evaluation panicked fire nothing),
    /// then starts counting again. The indexes are those of the ruleset passed to
    /// [`Evaluator::evaluate`]: drain before evaluating with another ruleset.
    pub fn drain_tally(&mut self, mut f: impl FnMut(usize, u64, u64)) {
        for (i, (evaluated, fired)) in self.tally.iter_mut().enumerate() {
            if *evaluated > 0 {
                f(i, *evaluated, *fired);
                (*evaluated, *fired) = (0, 0);
            }
        }
    }

    fn evaluate_unit(
        &mut self,
        ruleset: &Ruleset,
        input: Input<'_>,
        counters: &mut dyn CounterStore,
        out: &mut Vec<Firing>,
    ) -> usize {
        self.scratch.reset();
        let subject = input.subject();
        let frame = Frame::new(input, &self.scratch, &ruleset.lists, ruleset.counters.len());
        let keys_only = Cx {
            frame: &frame,
            regexes: ruleset.regexes.as_ref(),
            counter_keys: &ruleset.counter_keys,
            store: None,
        };
        let route = ruleset.routes.get(&subject);
        for &i in &route.counters {
            let counter = &ruleset.counters[i];
            if let Some(when) = &counter.when
                && keys_only.eval(when) != Val::Bool(true)
            {
                continue;
            }
            let distinct = counter.distinct.as_ref().map(|d| keys_only.eval(d));
            // Nothing distinct to count (no mentions, no reply parent): skip the key too.
            if matches!(distinct, Some(Val::Missing) | Some(Val::List([]))) {
                continue;
            }
            let mut count = |key: u128| match distinct {
                None => counters.add(i, key, None, input.now),
                Some(Val::Str(s)) => counters.add(i, key, Some(frame.value_hash(s)), input.now),
                Some(Val::List(items)) => {
                    for s in items {
                        counters.add(i, key, Some(frame.value_hash(s)), input.now);
                    }
                }
                Some(_) => {}
            };
            match keys_only.eval(&ruleset.counter_keys[i]) {
                Val::Str(s) => {
                    // Remembered, so rules reading this counter need not evaluate the key again.
                    let key = frame.key_hash(s);
                    let _ = frame.counter_keys[i].set(Some(key));
                    count(key);
                }
                Val::List(keys) => keys.iter().for_each(|k| count(frame.key_hash(k))),
                _ => {}
            }
        }
        let cx = Cx {
            store: Some(&*counters),
            ..keys_only
        };
        let rules = if self.include_off {
            &route.all_rules
        } else {
            &route.rules
        };
        if self.tally.len() != ruleset.rules.len() {
            self.tally = vec![(0, 0); ruleset.rules.len()];
        }
        for &i in rules {
            self.tally[i].0 += 1;
            let rule = &ruleset.rules[i];
            if cx.eval(&rule.when) == Val::Bool(true) {
                out.push(bind(ruleset, i, &cx));
            }
        }
        rules.len()
    }
}

/// Compiles one expression against a ruleset's declarations (constants, lists, counters) and
/// evaluates it on one unit, without touching counters (counter reads are missing). For
/// playgrounds and for checking the compiler against other evaluators.
pub fn evaluate_expression(
    ruleset: &Ruleset,
    source: &str,
    input: Input<'_>,
) -> Result<Owned, Vec<crate::compile::CompileError>> {
    let scope = crate::compile::Scope {
        constants: ruleset.constants.clone().into_iter().collect(),
        counters: Vec::new(),
        lists: ruleset.lists.names().to_vec(),
        counters_allowed: false,
    };
    let mut regexes = crate::compile::RegexTable::default();
    let compiled = crate::compile::compile(source, &scope, &mut regexes, None)?;
    let set = if regexes.patterns.is_empty() {
        None
    } else {
        regex::RegexSet::new(&regexes.patterns).ok()
    };
    let scratch = Scratch::default();
    let frame = Frame::new(input, &scratch, &ruleset.lists, 0);
    let cx = Cx {
        frame: &frame,
        regexes: set.as_ref(),
        counter_keys: &[],
        store: None,
    };
    Ok(cx.eval(&compiled.node).to_owned_value())
}

fn render<'a>(t: &'a Template, cx: &Cx<'_, 'a>) -> String {
    let mut s = String::new();
    for part in &t.parts {
        match part {
            TemplatePart::Text(x) => s.push_str(x),
            TemplatePart::Hole(node) => s.push_str(&cx.eval(node).to_string()),
        }
    }
    s
}

fn bind<'a>(ruleset: &'a Ruleset, index: usize, cx: &Cx<'_, 'a>) -> Firing {
    let rule = &ruleset.rules[index];
    let input = &cx.frame.input;
    let mut explanation: Vec<(String, String)> = Vec::new();
    for (source, node) in &rule.observed {
        if !explanation.iter().any(|(s, _)| s == source) {
            explanation.push((source.clone(), cx.eval(node).to_string()));
        }
    }
    let explanation = Explanation::from(explanation);
    let did = &input.event.did;
    // Built only when an action is on the record.
    let record_subject = input
        .op
        .filter(|_| {
            rule.actions
                .iter()
                .any(|a| matches!(a.target, TargetKind::Record))
        })
        .map(|op| ActionSubject::Record {
            uri: op.uri(did),
            cid: op.cid.map(|c| c.to_string()),
        });
    let actions = rule
        .actions
        .iter()
        .map(|a| {
            let verb = a.verb.map(|t| render(t, cx));
            let subject = match (a.target, &record_subject) {
                (TargetKind::Record, Some(s)) => s.clone(),
                _ => ActionSubject::Account {
                    did: did.to_string(),
                },
            };
            Action {
                verb,
                subject,
                rule: rule.name.clone(),
                ruleset_version: ruleset.version.clone(),
                mode: rule.mode,
                explanation: explanation.clone(),
            }
        })
        .collect();
    Firing {
        rule: index,
        rule_name: rule.name.clone(),
        mode: rule.mode,
        explanation,
        actions,
    }
}
