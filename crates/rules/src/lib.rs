//! The skywarden rule language.
//!
//! A ruleset is a directory of TOML files declaring rules, counters, lists and constants.
//! Loading ([`Ruleset::load_dir`]) parses every file, type-checks every CEL expression against
//! the vocabulary ([`vocab`]) and compiles it into a [`compile::Node`] tree whose names are all
//! resolved; [`Evaluator`] then runs units of events through it without per-event heap
//! allocation (values live in a per-evaluation arena). Rules fire [`action::Action`]s: data
//! the engine carries out later, each with the rule, ruleset version and values that fired it.
//!
//! This crate knows nothing of storage or networking: counters are behind
//! [`counter::CounterStore`] (an in-memory implementation is included), and the engine supplies
//! account enrichment through [`Account`].
//!
//! Data flow inside the crate: `ruleset` (files → declarations) → `compile` (CEL → `Node`) →
//! `evaluator` (counters, then rules) → `eval` (nodes → values, reading `vocab` fields from a
//! `frame`) → `action`s.

#![warn(missing_docs)]

pub mod action;
pub mod compile;
pub mod counter;
pub mod eval;
pub mod evaluator;
pub mod frame;
pub mod input;
pub mod lists;
pub mod reference;
pub mod ruleset;
pub mod testing;
pub mod text;
pub mod value;
pub mod vocab;

pub use evaluator::{Evaluator, Firing, evaluate_expression};
pub use input::{Account, Input};
pub use ruleset::{Diagnostic, Ruleset};

/// Whether a rule's actions are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Actions are carried out.
    Live,
    /// Actions are recorded but not carried out: for trying a rule on live traffic.
    Shadow,
    /// The rule is checked and tested but not evaluated on traffic.
    Off,
}

impl Mode {
    /// `live`, `shadow` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Shadow => "shadow",
            Mode::Off => "off",
        }
    }
}
