//! The AT Protocol core for skywarden.
//!
//! Everything here is pure protocol, with no I/O: string syntax ([`syntax`]), the DAG-CBOR data
//! model and CIDs ([`data`]), CAR files ([`car`]), firehose frames ([`frame`]), the typed event
//! every source yields ([`event`]), records read leniently ([`record`]), keys and signatures
//! ([`crypto`]), labels ([`label`]) and the repo tree ([`mst`]). Higher crates build on these types; this crate imports
//! none of them.
#![warn(missing_docs)]

pub mod car;
mod cbor;
pub mod crypto;
pub mod data;
pub mod event;
pub mod frame;
pub mod label;
pub mod mst;
pub mod record;
pub mod syntax;
pub mod tree;

pub use cid::Cid;
/// The string type of [`event::Event`]'s short fields: strings of up to 24 bytes (record keys,
/// revisions, collections, timestamps, most handles) are kept inline, without an allocation.
pub use compact_str::CompactString;
