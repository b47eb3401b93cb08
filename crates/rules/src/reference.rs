//! The reference page of the rule language, generated from the vocabulary table so it cannot
//! drift from the code. `skywarden rules reference` prints it; a test keeps
//! `docs/rules/reference.md` equal to it.

use crate::action::REPORT_REASONS;
use crate::ruleset::COLLECTION_ALIASES;
use crate::vocab::{FIELDS, ROOTS};
use std::fmt::Write;

/// The hand-written parts of the page, around the generated tables.
const INTRO: &str = include_str!("reference_intro.md");
const LANGUAGE: &str = include_str!("reference_language.md");

/// Renders the reference page as Markdown.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str(INTRO);
    out.push_str("\n## Vocabulary\n\n");
    out.push_str("Roots:\n\n");
    for (root, doc) in ROOTS {
        let _ = writeln!(out, "- `{root}`: {doc}");
    }
    out.push_str(
        "\nFields (a `?` in *Missing* means the value can be missing; see \
         [Missing data](#missing-data)):\n\n",
    );
    out.push_str("| Field | Type | Missing | Meaning |\n|---|---|---|---|\n");
    for f in FIELDS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            f.path,
            f.ty.name(),
            if f.optional { "?" } else { "" },
            f.doc.replace('|', "\\|")
        );
    }
    out.push_str("\n## Event selectors\n\n");
    out.push_str(
        "`on` lists selectors `[action:]target`. Actions: `create`, `update`, `delete`, `write` \
         (create or update, the default) and `*`. Targets: a collection NSID, `*` (any record), \
         `identity`, `account`, or one of these aliases:\n\n",
    );
    for (alias, nsid) in COLLECTION_ALIASES {
        let _ = writeln!(out, "- `{alias}` = `{nsid}`");
    }
    out.push('\n');
    out.push_str(LANGUAGE);
    out.push_str("\n## Report reasons\n\n");
    out.push_str(
        "`report` accepts the short names `spam`, `violation`, `misleading`, `sexual`, `rude`, \
         `other`, `appeal` (the `com.atproto.moderation.defs` reasons) or any full reason:\n\n",
    );
    for r in REPORT_REASONS {
        let _ = writeln!(out, "- `{r}`");
    }
    out
}
