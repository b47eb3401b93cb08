//! PLACEHOLDER until the text features module lands.
#![allow(missing_docs, unused_variables)]
pub fn normalize_into(input: &str, out: &mut String) {
    out.clear();
    out.push_str(&input.to_lowercase());
}
pub fn has_bidi_override(s: &str) -> bool {
    s.contains('\u{202E}')
}
pub fn tokens(normalized: &str) -> impl Iterator<Item = &str> {
    normalized
        .split(|c: char| !c.is_alphanumeric())
        .filter(|s| !s.is_empty())
}
pub fn hashtags(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace().filter_map(|w| w.strip_prefix('#'))
}
pub fn mentions(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace().filter_map(|w| w.strip_prefix('@'))
}
pub fn links(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace().filter(|w| w.starts_with("http"))
}
pub fn host_of(link: &str) -> Option<&str> {
    let r = link.split("://").last()?;
    r.split('/').next().filter(|h| !h.is_empty())
}
pub fn registrable_domain(host: &str) -> Option<&str> {
    psl::domain_str(host)
}
pub fn misleading_link(anchor_text: &str, target_uri: &str) -> bool {
    false
}
pub fn simhash(normalized: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(normalized.as_bytes())
}
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}
pub fn fingerprint(normalized: &str) -> u64 {
    if normalized.is_empty() {
        0
    } else {
        xxhash_rust::xxh3::xxh3_64(normalized.as_bytes())
    }
}
pub fn word_boundary_at(h: &str, start: usize, end: usize) -> bool {
    true
}
