//! `docs/rules/reference.md` is generated from the vocabulary table: this test keeps the
//! committed page equal to what the code generates. To regenerate after changing the
//! vocabulary: `skywarden rules reference > docs/rules/reference.md` (or run this test with
//! `SKYWARDEN_UPDATE_REFERENCE=1`).

use std::path::Path;

#[test]
fn reference_page_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/rules/reference.md");
    let generated = skywarden_rules::reference::markdown();
    if std::env::var_os("SKYWARDEN_UPDATE_REFERENCE").is_some() {
        std::fs::write(&path, &generated).expect("write the reference page");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/rules/reference.md is out of date: run `skywarden rules reference > docs/rules/reference.md`"
    );
}

#[test]
fn every_field_is_documented_and_typed() {
    for f in skywarden_rules::vocab::FIELDS {
        assert!(!f.doc.is_empty(), "{} has no documentation", f.path);
        let root = f.path.split('.').next().unwrap_or("");
        assert!(
            skywarden_rules::vocab::ROOTS
                .iter()
                .any(|(r, _)| *r == root),
            "{} is not under a documented root",
            f.path
        );
    }
}
