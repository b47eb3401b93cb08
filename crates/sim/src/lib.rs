//! A simulated AT Protocol network for skywarden: accounts with real keys and repos, signed
//! MST-consistent commits in real `subscribeRepos` frames, a realistic mix of activity with
//! Zipf-distributed account activity, injected abuse scenarios with ground truth, and a server
//! that speaks `subscribeRepos` and PLC so any firehose client can consume it.
//!
//! | module | job |
//! |---|---|
//! | [`repo`] | one repo: records in an MST, signed commits, the CAR of each change |
//! | [`network`] | accounts, the activity mix, abuse scenarios, ground truth, frames |
//! | [`server`] | `subscribeRepos` (cursor replay, then live) and a PLC directory |
//! | [`quality`] | a ruleset's actions against the ground truth: precision, recall, time to detection |

#![warn(missing_docs)]

pub mod network;
pub mod quality;
pub mod repo;
pub mod server;

pub use network::{Network, SCENARIOS, SimConfig, SimFrame, Truth};
