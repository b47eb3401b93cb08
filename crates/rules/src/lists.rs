//! Named lists (bad words, promo domains, protected accounts, ...) and their matchers.
//!
//! All keyword lists of a ruleset are compiled into **one** Aho-Corasick automaton, run at most
//! once per distinct string per event; each hit is mapped back to the lists it came from.
//! Lists can be replaced at run time without recompiling rules ([`Lists::build`] again and
//! hand the result to the evaluator): rules refer to lists by position, not by content.

use crate::text;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::collections::HashSet;

/// Entries shorter than this (in letters and digits) only match as whole words: substring
/// matching of short words flags innocent text (`kys` in `bsky.social`).
pub const MIN_SUBSTRING_KEYWORD: usize = 5;

/// The most lists one ruleset can declare (hits are kept in a 128-bit set).
pub const MAX_LISTS: usize = 128;

/// One list's name and entries, as loaded from its file or inline items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSource {
    /// The list's name, as rules write it (`lists.NAME`).
    pub name: String,
    /// Entries, trimmed, without comments or blank lines.
    pub items: Vec<String>,
}

impl ListSource {
    /// Parses a list file: one entry per line; blank lines and lines starting with `#` are
    /// skipped; surrounding whitespace is trimmed.
    pub fn parse(name: &str, content: &str) -> ListSource {
        ListSource {
            name: name.to_string(),
            items: content
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect(),
        }
    }
}

/// The compiled lists of a ruleset.
#[derive(Debug, Clone)]
pub struct Lists {
    names: Vec<String>,
    exact: Vec<HashSet<String>>,
    /// Each list's domains, lower-cased, without a leading `*.` or dot.
    domains: Vec<HashSet<String>>,
    keywords: Option<AhoCorasick>,
    /// For each keyword pattern, the lists that contain it (bitset).
    pattern_lists: Vec<u128>,
    slug_keywords: Option<AhoCorasick>,
    slug_pattern_lists: Vec<u128>,
}

impl Default for Lists {
    fn default() -> Self {
        Lists::build(Vec::new()).expect("no lists")
    }
}

/// Keeps the letters and digits of normalised text: `f.r.e.e` and `free` both become `free`.
fn slug(normalized: &str, out: &mut String) {
    out.clear();
    out.extend(normalized.chars().filter(|c| c.is_alphanumeric()));
}

impl Lists {
    /// Compiles lists. Entries are matched exactly by `in`, as domain suffixes by `domain_in`,
    /// and as keywords (after the same normalisation text gets) by `has_keyword` /
    /// `contains_keyword`.
    pub fn build(sources: Vec<ListSource>) -> Result<Lists, String> {
        if sources.len() > MAX_LISTS {
            return Err(format!(
                "{} lists declared; at most {MAX_LISTS} are supported",
                sources.len()
            ));
        }
        let mut names = Vec::new();
        let mut exact = Vec::new();
        let mut domains = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_lists: Vec<u128> = Vec::new();
        let mut slug_patterns: Vec<String> = Vec::new();
        let mut slug_pattern_lists: Vec<u128> = Vec::new();
        let mut norm = String::new();
        let mut slugged = String::new();
        for (i, source) in sources.into_iter().enumerate() {
            let bit = 1u128 << i;
            for item in &source.items {
                text::normalize_into(item, &mut norm);
                if !norm.is_empty() {
                    add_pattern(&mut patterns, &mut pattern_lists, &norm, bit);
                }
                slug(&norm, &mut slugged);
                if slugged.chars().count() >= MIN_SUBSTRING_KEYWORD {
                    add_pattern(&mut slug_patterns, &mut slug_pattern_lists, &slugged, bit);
                }
            }
            domains.push(
                source
                    .items
                    .iter()
                    .map(|d| {
                        d.trim_start_matches("*.")
                            .trim_start_matches('.')
                            .trim_end_matches('.')
                            .to_ascii_lowercase()
                    })
                    .collect(),
            );
            exact.push(source.items.into_iter().collect());
            names.push(source.name);
        }
        let automaton = |p: &[String]| -> Result<Option<AhoCorasick>, String> {
            if p.is_empty() {
                return Ok(None);
            }
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .build(p)
                .map(Some)
                .map_err(|e| format!("cannot build the keyword matcher: {e}"))
        };
        Ok(Lists {
            names,
            exact,
            domains,
            keywords: automaton(&patterns)?,
            pattern_lists,
            slug_keywords: automaton(&slug_patterns)?,
            slug_pattern_lists,
        })
    }

    /// The index of a list by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// List names, in declaration order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of entries in list `i`.
    pub fn len_of(&self, i: usize) -> usize {
        self.exact[i].len()
    }

    /// Whether `s` is an entry of list `i`, exactly.
    pub fn contains(&self, i: usize, s: &str) -> bool {
        self.exact[i].contains(s)
    }

    /// Whether host `s` (or the host of URL `s`) is an entry of list `i` or a subdomain of one.
    pub fn domain_in(&self, i: usize, s: &str) -> bool {
        let Some(host) = text::host_of(s) else {
            return false;
        };
        let set = &self.domains[i];
        let host = host.trim_end_matches('.');
        let check = |h: &str| set.contains(h);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let mut rest = host;
        loop {
            if check(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => rest = parent,
                _ => return false,
            }
        }
    }

    /// Keyword hits in normalised text, as bitsets over list indexes: (whole-word hits, hits
    /// anywhere in the letters-and-digits-only form). Allocation-free apart from the arena.
    pub fn keyword_hits(&self, normalized: &str, bump: &bumpalo::Bump) -> (u128, u128) {
        let mut words = 0u128;
        if let Some(ac) = &self.keywords {
            for m in ac.find_overlapping_iter(normalized) {
                if text::word_boundary_at(normalized, m.start(), m.end()) {
                    words |= self.pattern_lists[m.pattern().as_usize()];
                }
            }
        }
        let mut anywhere = 0u128;
        if let Some(ac) = &self.slug_keywords {
            let mut s = bumpalo::collections::String::with_capacity_in(normalized.len(), bump);
            s.extend(normalized.chars().filter(|c| c.is_alphanumeric()));
            for m in ac.find_overlapping_iter(s.as_str()) {
                anywhere |= self.slug_pattern_lists[m.pattern().as_usize()];
            }
        }
        (words, anywhere | words)
    }
}

fn add_pattern(patterns: &mut Vec<String>, owners: &mut Vec<u128>, p: &str, bit: u128) {
    match patterns.iter().position(|q| q == p) {
        Some(j) => owners[j] |= bit,
        None => {
            patterns.push(p.to_string());
            owners.push(bit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> Lists {
        Lists::build(vec![
            ListSource::parse("bad", "# slurs\nscam\nfree money\nphishing\n\n"),
            ListSource::parse("promo", "example.com\n*.promo.test\n"),
        ])
        .unwrap()
    }

    #[test]
    fn keywords_match_whole_words_and_slugs() {
        let l = lists();
        let bump = bumpalo::Bump::new();
        assert_eq!(l.keyword_hits("this is a scam", &bump), (0b01, 0b01));
        assert_eq!(l.keyword_hits("get free money now", &bump).0, 0b01);
        // Inside a word: not a whole word, but present in the slug...
        assert_eq!(l.keyword_hits("phishingsite", &bump), (0, 0b01));
        assert_eq!(l.keyword_hits("p h i s h i n g", &bump), (0, 0b01));
        // ...unless the entry is too short to match safely inside other words.
        assert_eq!(l.keyword_hits("scammer", &bump), (0, 0));
        assert_eq!(l.keyword_hits("hello", &bump), (0, 0));
    }

    #[test]
    fn domains_match_suffixes() {
        let l = lists();
        assert!(l.domain_in(1, "https://www.Example.com/x"));
        assert!(l.domain_in(1, "a.promo.test"));
        assert!(!l.domain_in(1, "notexample.com"));
        assert!(!l.domain_in(1, "com"));
        assert!(l.contains(0, "scam"));
        assert!(!l.contains(0, "Scam"));
        assert_eq!(l.index("promo"), Some(1));
    }
}
