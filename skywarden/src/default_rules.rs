//! The default ruleset (`rules/` in the repository), embedded at build time.

use skywarden_rules::ruleset::SourceFile;
use skywarden_rules::{Diagnostic, Ruleset};
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/default_rules.rs"));

/// Reads an embedded file by its path relative to `rules/`.
pub fn read(path: &Path) -> std::io::Result<String> {
    let wanted = path.to_string_lossy().replace('\\', "/");
    FILES
        .iter()
        .find(|(p, _)| *p == wanted)
        .map(|(_, text)| (*text).to_string())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{wanted} is not part of the built-in ruleset"),
            )
        })
}

/// Loads the built-in ruleset.
pub fn load() -> Result<Ruleset, Vec<Diagnostic>> {
    let files = FILES
        .iter()
        .filter(|(p, _)| p.ends_with(".toml"))
        .map(|(p, text)| SourceFile {
            path: PathBuf::from(p),
            text: (*text).to_string(),
        })
        .collect();
    Ruleset::from_sources(files, &read)
}
