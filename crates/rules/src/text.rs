//! Text features for abuse rules: normalisation, tokens, hashtags, mentions, links, domains,
//! misleading links and near-duplicate hashes.
//!
//! Everything here is a pure function over `&str`. Functions that produce text write into a
//! caller-provided buffer that is cleared and reused, and the extractors return iterators of
//! slices of their input, so that evaluating rules on a stream of posts does not allocate once
//! buffers have grown to the size of the largest text. (The NFKC iterator keeps a small inline
//! buffer that only spills to the heap on unusually long runs of combining marks; the regex
//! behind [`hashtags`] is compiled once, on first use.)
//!
//! Abuse text is written to dodge keyword filters, so matching happens on the *normalised* form
//! ([`normalize_into`]): compatibility-folded, lower-cased, without invisible characters,
//! with look-alike letters and "leet" digits folded to ASCII. Keyword lists must be normalised
//! the same way (the list loader does this), so folding is applied uniformly, to every script,
//! and is only a matching key — never show the normalised text to people as if it were the
//! original.

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

// ---------------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------------

/// Look-alike characters folded to ASCII by [`normalize_into`], sorted by code point.
///
/// A curated subset of Unicode's `confusables.txt` (Cyrillic, Greek, Armenian and IPA
/// letters that render like Latin ones), plus the small capitals used by "fancy text"
/// generators. Entries are matched both before lower-casing (so that capital Greek `Η`, which
/// looks like `H`, is not first turned into `η`, which looks like `n`) and after it. Characters
/// whose NFKC form is already ASCII (fullwidth forms, mathematical alphanumerics, `ſ`, `ℓ`,
/// circled letters) need no entry. The order is checked at compile time.
static CONFUSABLES: &[(char, char)] = &[
    ('\u{0130}', 'i'), // İ LATIN CAPITAL LETTER I WITH DOT ABOVE (lower-cases to i + U+0307)
    ('\u{0131}', 'i'), // ı LATIN SMALL LETTER DOTLESS I
    ('\u{0251}', 'a'), // ɑ LATIN SMALL LETTER ALPHA
    ('\u{0261}', 'g'), // ɡ LATIN SMALL LETTER SCRIPT G
    ('\u{0262}', 'g'), // ɢ LATIN LETTER SMALL CAPITAL G
    ('\u{0269}', 'i'), // ɩ LATIN SMALL LETTER IOTA
    ('\u{026A}', 'i'), // ɪ LATIN LETTER SMALL CAPITAL I
    ('\u{0274}', 'n'), // ɴ LATIN LETTER SMALL CAPITAL N
    ('\u{0280}', 'r'), // ʀ LATIN LETTER SMALL CAPITAL R
    ('\u{028F}', 'y'), // ʏ LATIN LETTER SMALL CAPITAL Y
    ('\u{0299}', 'b'), // ʙ LATIN LETTER SMALL CAPITAL B
    ('\u{029C}', 'h'), // ʜ LATIN LETTER SMALL CAPITAL H
    ('\u{029F}', 'l'), // ʟ LATIN LETTER SMALL CAPITAL L
    ('\u{037F}', 'j'), // Ϳ GREEK CAPITAL LETTER YOT
    ('\u{0391}', 'a'), // Α GREEK CAPITAL LETTER ALPHA
    ('\u{0392}', 'b'), // Β GREEK CAPITAL LETTER BETA
    ('\u{0395}', 'e'), // Ε GREEK CAPITAL LETTER EPSILON
    ('\u{0396}', 'z'), // Ζ GREEK CAPITAL LETTER ZETA
    ('\u{0397}', 'h'), // Η GREEK CAPITAL LETTER ETA
    ('\u{0399}', 'i'), // Ι GREEK CAPITAL LETTER IOTA
    ('\u{039A}', 'k'), // Κ GREEK CAPITAL LETTER KAPPA
    ('\u{039C}', 'm'), // Μ GREEK CAPITAL LETTER MU
    ('\u{039D}', 'n'), // Ν GREEK CAPITAL LETTER NU
    ('\u{039F}', 'o'), // Ο GREEK CAPITAL LETTER OMICRON
    ('\u{03A1}', 'p'), // Ρ GREEK CAPITAL LETTER RHO
    ('\u{03A4}', 't'), // Τ GREEK CAPITAL LETTER TAU
    ('\u{03A5}', 'y'), // Υ GREEK CAPITAL LETTER UPSILON
    ('\u{03A7}', 'x'), // Χ GREEK CAPITAL LETTER CHI
    ('\u{03B1}', 'a'), // α GREEK SMALL LETTER ALPHA
    ('\u{03B3}', 'y'), // γ GREEK SMALL LETTER GAMMA
    ('\u{03B5}', 'e'), // ε GREEK SMALL LETTER EPSILON
    ('\u{03B7}', 'n'), // η GREEK SMALL LETTER ETA
    ('\u{03B9}', 'i'), // ι GREEK SMALL LETTER IOTA
    ('\u{03BA}', 'k'), // κ GREEK SMALL LETTER KAPPA
    ('\u{03BD}', 'v'), // ν GREEK SMALL LETTER NU
    ('\u{03BF}', 'o'), // ο GREEK SMALL LETTER OMICRON
    ('\u{03C1}', 'p'), // ρ GREEK SMALL LETTER RHO
    ('\u{03C4}', 't'), // τ GREEK SMALL LETTER TAU
    ('\u{03C5}', 'u'), // υ GREEK SMALL LETTER UPSILON
    ('\u{03C7}', 'x'), // χ GREEK SMALL LETTER CHI
    ('\u{03C9}', 'w'), // ω GREEK SMALL LETTER OMEGA
    ('\u{03F3}', 'j'), // ϳ GREEK LETTER YOT
    ('\u{0405}', 's'), // Ѕ CYRILLIC CAPITAL LETTER DZE
    ('\u{0406}', 'i'), // І CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I
    ('\u{0408}', 'j'), // Ј CYRILLIC CAPITAL LETTER JE
    ('\u{0410}', 'a'), // А CYRILLIC CAPITAL LETTER A
    ('\u{0412}', 'b'), // В CYRILLIC CAPITAL LETTER VE
    ('\u{0415}', 'e'), // Е CYRILLIC CAPITAL LETTER IE
    ('\u{041A}', 'k'), // К CYRILLIC CAPITAL LETTER KA
    ('\u{041C}', 'm'), // М CYRILLIC CAPITAL LETTER EM
    ('\u{041D}', 'h'), // Н CYRILLIC CAPITAL LETTER EN
    ('\u{041E}', 'o'), // О CYRILLIC CAPITAL LETTER O
    ('\u{0420}', 'p'), // Р CYRILLIC CAPITAL LETTER ER
    ('\u{0421}', 'c'), // С CYRILLIC CAPITAL LETTER ES
    ('\u{0422}', 't'), // Т CYRILLIC CAPITAL LETTER TE
    ('\u{0423}', 'y'), // У CYRILLIC CAPITAL LETTER U
    ('\u{0425}', 'x'), // Х CYRILLIC CAPITAL LETTER HA
    ('\u{0430}', 'a'), // а CYRILLIC SMALL LETTER A
    ('\u{0435}', 'e'), // е CYRILLIC SMALL LETTER IE
    ('\u{043E}', 'o'), // о CYRILLIC SMALL LETTER O
    ('\u{0440}', 'p'), // р CYRILLIC SMALL LETTER ER
    ('\u{0441}', 'c'), // с CYRILLIC SMALL LETTER ES
    ('\u{0443}', 'y'), // у CYRILLIC SMALL LETTER U
    ('\u{0445}', 'x'), // х CYRILLIC SMALL LETTER HA
    ('\u{0455}', 's'), // ѕ CYRILLIC SMALL LETTER DZE
    ('\u{0456}', 'i'), // і CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I
    ('\u{0458}', 'j'), // ј CYRILLIC SMALL LETTER JE
    ('\u{04AE}', 'y'), // Ү CYRILLIC CAPITAL LETTER STRAIGHT U
    ('\u{04BA}', 'h'), // Һ CYRILLIC CAPITAL LETTER SHHA
    ('\u{04BB}', 'h'), // һ CYRILLIC SMALL LETTER SHHA
    ('\u{04C0}', 'l'), // Ӏ CYRILLIC LETTER PALOCHKA
    ('\u{04CF}', 'l'), // ӏ CYRILLIC SMALL LETTER PALOCHKA
    ('\u{0501}', 'd'), // ԁ CYRILLIC SMALL LETTER KOMI DE
    ('\u{051A}', 'q'), // Ԛ CYRILLIC CAPITAL LETTER QA
    ('\u{051B}', 'q'), // ԛ CYRILLIC SMALL LETTER QA
    ('\u{051C}', 'w'), // Ԝ CYRILLIC CAPITAL LETTER WE
    ('\u{051D}', 'w'), // ԝ CYRILLIC SMALL LETTER WE
    ('\u{0570}', 'h'), // հ ARMENIAN SMALL LETTER HO
    ('\u{0578}', 'n'), // ո ARMENIAN SMALL LETTER VO
    ('\u{057D}', 'u'), // ս ARMENIAN SMALL LETTER SEH
    ('\u{0585}', 'o'), // օ ARMENIAN SMALL LETTER OH
    ('\u{1D00}', 'a'), // ᴀ LATIN LETTER SMALL CAPITAL A
    ('\u{1D04}', 'c'), // ᴄ LATIN LETTER SMALL CAPITAL C
    ('\u{1D05}', 'd'), // ᴅ LATIN LETTER SMALL CAPITAL D
    ('\u{1D07}', 'e'), // ᴇ LATIN LETTER SMALL CAPITAL E
    ('\u{1D0A}', 'j'), // ᴊ LATIN LETTER SMALL CAPITAL J
    ('\u{1D0B}', 'k'), // ᴋ LATIN LETTER SMALL CAPITAL K
    ('\u{1D0D}', 'm'), // ᴍ LATIN LETTER SMALL CAPITAL M
    ('\u{1D0F}', 'o'), // ᴏ LATIN LETTER SMALL CAPITAL O
    ('\u{1D18}', 'p'), // ᴘ LATIN LETTER SMALL CAPITAL P
    ('\u{1D1B}', 't'), // ᴛ LATIN LETTER SMALL CAPITAL T
    ('\u{1D1C}', 'u'), // ᴜ LATIN LETTER SMALL CAPITAL U
    ('\u{1D20}', 'v'), // ᴠ LATIN LETTER SMALL CAPITAL V
    ('\u{1D21}', 'w'), // ᴡ LATIN LETTER SMALL CAPITAL W
    ('\u{1D22}', 'z'), // ᴢ LATIN LETTER SMALL CAPITAL Z
    ('\u{A730}', 'f'), // ꜰ LATIN LETTER SMALL CAPITAL F
    ('\u{A731}', 's'), // ꜱ LATIN LETTER SMALL CAPITAL S
];

// Binary search in `confusable` needs the table sorted: fail the build otherwise.
const _: () = {
    let mut i = 1;
    while i < CONFUSABLES.len() {
        assert!((CONFUSABLES[i - 1].0 as u32) < (CONFUSABLES[i].0 as u32));
        i += 1;
    }
};

/// The ASCII letter that `c` is a look-alike of, from a curated subset of Unicode's
/// `confusables.txt` (see [`normalize_into`]); `None` for characters that are not folded.
pub fn confusable(c: char) -> Option<char> {
    if c.is_ascii() {
        return None;
    }
    CONFUSABLES
        .binary_search_by_key(&c, |&(k, _)| k)
        .ok()
        .map(|i| CONFUSABLES[i].1)
}

/// Characters that render as nothing (zero-width spaces and joiners, soft hyphen, word joiner
/// and invisible operators, variation selectors, tag characters, deprecated format controls)
/// or only reorder text (bidi embeddings, overrides, isolates and marks). Abusers insert them
/// inside words to split keywords without changing how the text looks.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// Whitespace for [`normalize_into`]: Unicode `White_Space` plus characters that are not
/// whitespace but render as a blank (Braille pattern blank, Hangul fillers), which are used to
/// pad or fake-split text.
fn is_blank(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{115F}' | '\u{1160}' | '\u{2800}' | '\u{3164}' | '\u{FFA0}'
        )
}

/// Writes the matching form of `input` into `out` (cleared first).
///
/// Steps, in order:
/// 1. drop invisible characters ([`is_invisible`]: zero-width characters, soft hyphen, bidi
///    controls, variation selectors, …) and other control characters;
/// 2. NFKC, which folds fullwidth forms, mathematical alphanumerics, ligatures, circled and
///    superscript letters to their plain forms (skipped for ASCII input, which is already NFKC);
/// 3. fold look-alike letters to ASCII ([`confusable`], checked before and after lower-casing)
///    and lower-case everything else with [`char::to_lowercase`];
/// 4. collapse every run of whitespace (and blank-looking characters) to one ASCII space, with
///    none at either end;
/// 5. fold "leet" inside words: digits `0 1 3 4 5 7` become `o i e a s t` when their run of such
///    digits touches a letter on at least one side and no other digit (so `fr33 m0ney` becomes
///    `free money` while `1000`, `2024`, `covid19` and `12ab` stay), except a run that starts a
///    word and is followed only by a one-letter or common unit/ordinal suffix (`10k`, `5g`, `3rd`,
///    `7pm`, `50mg`); `@` becomes `a` after a letter unless the rest of the word looks like an
///    e-mail or handle domain (`sc@m` → `scam`, `bob@example.com` stays); `$` becomes `s` after a
///    letter unless a digit follows (`ca$h` → `cash`; cashtags like `$btc` and `us$5` stay).
///
/// The leet rule is a heuristic: words that really end in such a digit are folded too
/// (`web3` → `webe`). Folding applies to every script (Russian `сок` becomes `cok`): the
/// result is a key for matching lists normalised the same way, not readable text.
///
/// Does not allocate once `out` has enough capacity.
pub fn normalize_into(input: &str, out: &mut String) {
    out.clear();
    out.reserve(input.len());
    let mut pending_space = false;
    // Most text is already in NFKC: the quick check (a table lookup per character) lets it skip
    // the decompose-recompose pass. Invisible characters must go before NFKC, so their presence
    // forces the full path.
    let already_nfkc = input.is_ascii()
        || (unicode_normalization::is_nfkc_quick(input.chars())
            == unicode_normalization::IsNormalized::Yes
            && !input.chars().any(is_invisible));
    if is_plain_ascii(input) {
        // Printable ASCII words separated by single spaces, as most text is: only the case
        // changes.
        out.push_str(input);
        out.make_ascii_lowercase();
    } else if already_nfkc {
        // Word by word, so that ASCII words (most of any text) are copied and lower-cased in
        // bulk; between words, as in `push_folded`, a space is pending once something is out.
        for word in input.split_ascii_whitespace() {
            pending_space = !out.is_empty();
            if word.is_ascii() && !word.bytes().any(|b| b.is_ascii_control()) {
                if pending_space {
                    out.push(' ');
                }
                let start = out.len();
                out.push_str(word);
                out[start..].make_ascii_lowercase();
            } else {
                for c in word.chars() {
                    push_folded(out, &mut pending_space, c);
                }
            }
        }
    } else {
        for c in input.chars().filter(|&c| !is_invisible(c)).nfkc() {
            push_folded(out, &mut pending_space, c);
        }
    }
    fold_leet(out);
}

/// Whether `s` is printable ASCII with single spaces between words and none at either end:
/// text that normalisation only lower-cases (before the leet step).
fn is_plain_ascii(s: &str) -> bool {
    let b = s.as_bytes();
    b.first() != Some(&b' ')
        && b.last() != Some(&b' ')
        && b.iter().all(|&c| (b' '..=b'~').contains(&c))
        && !b.windows(2).any(|w| w == b"  ")
}

/// Steps 3 and 4 of [`normalize_into`] for one NFKC character.
fn push_folded(out: &mut String, pending_space: &mut bool, c: char) {
    // ASCII, most of any text: whitespace, control or a letter to lower-case; no table lookups.
    if c.is_ascii() {
        if c.is_ascii_whitespace() {
            *pending_space = !out.is_empty();
        } else if !c.is_ascii_control() {
            if *pending_space {
                out.push(' ');
                *pending_space = false;
            }
            out.push(c.to_ascii_lowercase());
        }
        return;
    }
    if is_blank(c) {
        *pending_space = !out.is_empty();
        return;
    }
    if c.is_control() || is_invisible(c) {
        return;
    }
    if *pending_space {
        out.push(' ');
        *pending_space = false;
    }
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
    } else if let Some(a) = confusable(c) {
        out.push(a);
    } else {
        for l in c.to_lowercase() {
            out.push(confusable(l).unwrap_or(l));
        }
    }
}

/// Digits folded by the leet step of [`normalize_into`] and what they stand for.
fn leet_digit(b: u8) -> Option<u8> {
    Some(match b {
        b'0' => b'o',
        b'1' => b'i',
        b'3' => b'e',
        b'4' => b'a',
        b'5' => b's',
        b'7' => b't',
        _ => return None,
    })
}

/// Suffixes that make a leading number a quantity or an ordinal rather than leet (`10k`,
/// `3rd`, `7pm`); one-letter suffixes are always treated so.
const NUMBER_SUFFIXES: &[&str] = &[
    "am", "bn", "cm", "fps", "gb", "hr", "hrs", "hz", "kb", "kg", "km", "kph", "mb", "mg", "min",
    "mins", "ml", "mm", "mph", "ms", "nd", "pm", "pt", "px", "rd", "st", "tb", "th", "yo", "yr",
    "yrs",
];

/// Step 5 of [`normalize_into`]. All replacements are one ASCII byte for another, so the text
/// is edited in place.
fn fold_leet(out: &mut String) {
    if !out
        .bytes()
        .any(|b| leet_digit(b).is_some() || b == b'@' || b == b'$')
    {
        return;
    }
    let letter = |c: Option<char>| c.is_some_and(char::is_alphabetic);
    let mut i = 0;
    while i < out.len() {
        let b = out.as_bytes()[i];
        if leet_digit(b).is_none() && b != b'@' && b != b'$' {
            i += 1;
            continue;
        }
        // `b` is ASCII, so `i` is on a character boundary.
        let prev = out[..i].chars().next_back();
        if leet_digit(b).is_some() {
            let run = out.as_bytes()[i..]
                .iter()
                .take_while(|&&b| leet_digit(b).is_some())
                .count();
            let end = i + run;
            let next = out[end..].chars().next();
            let digit_next_to =
                prev.is_some_and(char::is_numeric) || next.is_some_and(char::is_numeric);
            let fold = (letter(prev) || letter(next))
                && !digit_next_to
                && !(prev.is_none_or(|c| !c.is_alphanumeric()) && number_suffix(&out[end..]));
            if fold {
                for k in i..end {
                    let to = leet_digit(out.as_bytes()[k]).unwrap_or(b'?');
                    replace_byte(out, k, to);
                }
            }
            i = end;
            continue;
        }
        match b {
            b'@' if letter(prev) && !looks_like_domain_after_at(&out[i + 1..]) => {
                replace_byte(out, i, b'a');
            }
            b'$' if letter(prev) && !out[i + 1..].starts_with(|c: char| c.is_numeric()) => {
                replace_byte(out, i, b's');
            }
            _ => {}
        }
        i += 1;
    }
}

/// Replaces the ASCII byte at `i` with ASCII byte `to` (same length: no reallocation).
fn replace_byte(s: &mut String, i: usize, to: u8) {
    let buf = [to];
    let to = std::str::from_utf8(&buf).unwrap_or("?");
    s.replace_range(i..i + 1, to);
}

/// Whether `rest` (the text after a leading number) starts with a unit or ordinal suffix that
/// ends the word.
fn number_suffix(rest: &str) -> bool {
    let n = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
    if rest[n..].starts_with(|c: char| c.is_alphanumeric()) {
        return false;
    }
    n <= 1 || NUMBER_SUFFIXES.contains(&&rest[..n])
}

/// Whether the word after an `@` contains a `.` followed by a letter or digit, like the domain
/// of an e-mail address or handle.
fn looks_like_domain_after_at(rest: &str) -> bool {
    let word = rest.split(char::is_whitespace).next().unwrap_or("");
    word.match_indices('.')
        .any(|(i, _)| word[i + 1..].starts_with(|c: char| c.is_alphanumeric()))
}

// ---------------------------------------------------------------------------------------------
// Bidi, tokens, word boundaries
// ---------------------------------------------------------------------------------------------

/// Whether raw text contains a bidi control that can visually reorder what follows it:
/// U+202A/U+202B (LTR/RTL embedding), U+202D/U+202E (LTR/RTL override) or U+2066..U+2069
/// (isolates). These make `exe.gpj` display as `jpg.exe`, or a handle or link read as something
/// else. Marks (U+200E, U+200F, U+061C) and a lone U+202C are not reported.
///
/// Checks UTF-8 bytes directly: all of these are `E2 80 AA..AE` or `E2 81 A6..A9`.
pub fn has_bidi_override(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &x)| {
        x == 0xE2
            && matches!(
                (b.get(i + 1), b.get(i + 2)),
                (Some(0x80), Some(0xAA | 0xAB | 0xAD | 0xAE)) | (Some(0x81), Some(0xA6..=0xA9))
            )
    })
}

/// Whether `c` belongs to a word: letters and digits of any script, plus combining marks (so
/// that Devanagari viramas or Thai tone marks do not split words).
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || (!c.is_ascii() && unicode_normalization::char::is_combining_mark(c))
}

/// Word tokens of (normalised) text: maximal runs of [`is_word_char`] characters; everything
/// else separates tokens and is dropped (`"café über-cool!"` → `café`, `über`, `cool`).
pub fn tokens(normalized: &str) -> impl Iterator<Item = &str> {
    Tokens { rest: normalized }
}

/// Iterator behind [`tokens`]: ASCII bytes are classified without decoding a character.
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    /// Length of the leading run of characters whose word-ness is `word`.
    fn run(&self, word: bool) -> usize {
        let bytes = self.rest.as_bytes();
        let mut i = 0;
        loop {
            i += bytes[i..]
                .iter()
                .position(|&b| !b.is_ascii() || b.is_ascii_alphanumeric() != word)
                .unwrap_or(bytes.len() - i);
            if i == bytes.len() || bytes[i].is_ascii() {
                return i;
            }
            let c = self.rest[i..]
                .chars()
                .next()
                .expect("a character starts here");
            if is_word_char(c) != word {
                return i;
            }
            i += c.len_utf8();
        }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.rest = &self.rest[self.run(false)..];
        let len = self.run(true);
        if len == 0 {
            return None;
        }
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(token)
    }
}

/// Whether the byte range `start..end` of `haystack` is a whole word: each end is at the edge
/// of the string, next to a non-word character, or is itself a non-word character (like
/// regex `\b`, so a hit on `c++` inside `c++dev` counts). Turns substring keyword hits
/// (Aho–Corasick) into whole-word hits. Empty or out-of-range ranges, or ranges not on
/// character boundaries, are never whole words.
pub fn word_boundary_at(haystack: &str, start: usize, end: usize) -> bool {
    if start >= end {
        return false;
    }
    let (Some(before), Some(hit), Some(after)) = (
        haystack.get(..start),
        haystack.get(start..end),
        haystack.get(end..),
    ) else {
        return false;
    };
    let edge = |outside: Option<char>, inside: Option<char>| {
        !outside.is_some_and(is_word_char) || !inside.is_some_and(is_word_char)
    };
    edge(before.chars().next_back(), hit.chars().next())
        && edge(after.chars().next(), hit.chars().next_back())
}

// ---------------------------------------------------------------------------------------------
// Hashtags and mentions
// ---------------------------------------------------------------------------------------------

/// A `#` (or fullwidth `＃`), then the longest run of non-space characters that ends in a
/// non-punctuation character and contains a character that is neither an ASCII digit nor
/// punctuation. The excluded characters are those of Bluesky's facet detection.
static HASHTAG: LazyLock<Regex> = LazyLock::new(|| {
    const Z: &str = r"\s\x{00AD}\x{2060}\x{200A}-\x{200D}\x{20E2}\x{FEFF}";
    Regex::new(&format!(
        r"[#＃][^{Z}]*[^0-9\p{{P}}{Z}](?:[^{Z}]*[^\p{{P}}{Z}])?"
    ))
    .expect("hashtag regex")
});

/// Longest hashtag returned by [`hashtags`], in characters; longer ones are skipped, as
/// Bluesky does.
pub const MAX_HASHTAG_CHARS: usize = 64;

/// Hashtags in raw text, without the `#`, case preserved, in order, duplicates included.
///
/// Follows Bluesky's facet detection: a `#` or `＃` at the start of the text or after
/// whitespace, then everything up to the next whitespace or zero-width character, with trailing
/// Unicode punctuation removed (`#rust!` → `rust`, but `#c++` → `c++` and `#a#b` → `a#b`); tags
/// made only of digits and punctuation (`#1`, `#2024`), the keycap emoji `#️⃣` and tags longer
/// than [`MAX_HASHTAG_CHARS`] characters are skipped. (Bluesky counts UTF-16 units; this counts
/// characters.)
pub fn hashtags(text: &str) -> impl Iterator<Item = &str> {
    HASHTAG.find_iter(text).filter_map(move |m| {
        if text[..m.start()]
            .chars()
            .next_back()
            .is_some_and(|c| !c.is_whitespace())
        {
            return None;
        }
        let hash_len = if text[m.start()..].starts_with('#') {
            1
        } else {
            '＃'.len_utf8()
        };
        let tag = &m.as_str()[hash_len..];
        (!tag.starts_with('\u{FE0F}') && tag.chars().count() <= MAX_HASHTAG_CHARS).then_some(tag)
    })
}

/// Whether a mention may start right after `c`: not after word characters (`bob@x.com` is an
/// e-mail address) nor after characters that put the `@` inside a URL, path or address
/// (`medium.com/@alice.smith`).
fn mention_may_follow(c: char) -> bool {
    c.is_whitespace() || !(is_word_char(c) || "/.:@_-+=&%~#\\`".contains(c))
}

/// Whether `h` is syntactically an AT Protocol handle: at least two dot-separated labels of
/// 1–63 ASCII letters, digits and inner hyphens, at most 253 characters, the last label starting
/// with a letter.
pub fn is_handle(h: &str) -> bool {
    if h.len() > 253 {
        return false;
    }
    let mut labels = 0;
    for label in h.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return false;
        }
        labels += 1;
    }
    labels >= 2
        && h.rsplit('.')
            .next()
            .is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// `@handle` mentions in raw text, without the `@`, case preserved, in order.
///
/// An `@` at the start or after whitespace or punctuation (not after a word character, `/`,
/// `.`, `:` and the like), then the longest run of ASCII letters, digits, `.` and `-`, with
/// trailing `.` and `-` removed, which must be a valid handle ([`is_handle`]; so it contains a
/// dot). Like Bluesky's facet detection; whether the handle resolves is not checked.
pub fn mentions(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices('@').filter_map(move |(i, _)| {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| !mention_may_follow(c))
        {
            return None;
        }
        let rest = &text[i + 1..];
        let len = rest
            .bytes()
            .take_while(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            .count();
        if rest[len..].starts_with(['_', '@']) {
            return None;
        }
        let handle = rest[..len].trim_end_matches(['.', '-']);
        is_handle(handle).then_some(handle)
    })
}

// ---------------------------------------------------------------------------------------------
// Links and domains
// ---------------------------------------------------------------------------------------------

/// Links in raw text, in order: `http://` and `https://` URLs (scheme case-insensitive), and
/// bare domains with an optional port and path (`example.com/path`, `www.bbc.co.uk`).
///
/// A link starts at the start of the text or after whitespace or an opening bracket or quote
/// (so not inside e-mail addresses or mentions), runs to the next whitespace, and loses
/// trailing `. , ; : ! ? ' "`, closing quotes, `…`, and `)` / `]` that have no partner inside it.
/// A URL must have a host ([`host_of`]). A bare domain needs at least two labels of letters,
/// digits and hyphens, a last label of at least two letters that is a real top-level domain
/// (known to the public suffix list: this is what keeps `file.txt`, `node.js` and `e.g.` out,
/// as Bluesky does with its TLD list), and must be followed by the end, `/`, `?`, `#` or a
/// `:port`. Returned slices are not lower-cased or otherwise altered.
pub fn links(text: &str) -> impl Iterator<Item = &str> {
    // Every link has a `.` or a `:` (see `Links::next`): text with neither, most short posts,
    // is done at one byte scan.
    let pos = if text.bytes().any(|b| b == b'.' || b == b':') {
        0
    } else {
        text.len()
    };
    Links { text, pos }
}

/// Iterator behind [`links`].
struct Links<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Links<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.text;
        while self.pos < text.len() {
            let rest = &text[self.pos..];
            let blank = rest.len() - rest.trim_start().len();
            if blank > 0 {
                self.pos += blank;
                continue;
            }
            // A link never spans whitespace, and needs a `.` (a domain) or a `:` (`://`): a run
            // of text without either holds none, wherever it starts, so skip it whole. Most
            // words are skipped here at a byte scan.
            let chunk_start = self.pos;
            let chunk = &rest[..rest.find(char::is_whitespace).unwrap_or(rest.len())];
            self.pos += chunk.len();
            if !chunk.bytes().any(|b| b == b'.' || b == b':') {
                continue;
            }
            let mut prev = text[..chunk_start].chars().next_back();
            for (offset, c) in chunk.char_indices() {
                let boundary = prev.is_none_or(|p| {
                    matches!(
                        p,
                        ' ' | '\n' | '\t' | '\r' | '(' | '[' | '{' | '<' | '"' | '\''
                    ) || (!p.is_ascii() && (p.is_whitespace() || matches!(p, '«' | '“' | '‘')))
                });
                prev = Some(c);
                if boundary && c.is_alphanumeric() {
                    let start = chunk_start + offset;
                    if let Some(len) = link_at(&text[start..]) {
                        self.pos = start + len;
                        return Some(&text[start..start + len]);
                    }
                }
            }
        }
        None
    }
}

/// Length of the link at the very start of `s`, if there is one (see [`links`]).
fn link_at(s: &str) -> Option<usize> {
    let chunk = &s[..s.find(char::is_whitespace).unwrap_or(s.len())];
    let chunk = trim_link_tail(chunk);
    if strip_prefix_ignore_case(chunk, "https://")
        .or_else(|| strip_prefix_ignore_case(chunk, "http://"))
        .is_some()
    {
        return host_of(chunk).map(|_| chunk.len());
    }
    // A bare domain has a dot: most words are ruled out here, before any parsing.
    if !chunk.contains('.') {
        return None;
    }
    let host_len = chunk
        .find(|c: char| !(is_word_char(c) || c == '.' || c == '-'))
        .unwrap_or(chunk.len());
    let (host, rest) = chunk.split_at(host_len);
    let rest_ok = match rest.as_bytes().first() {
        None | Some(b'/' | b'?' | b'#') => true,
        Some(b':') => rest[1..].starts_with(|c: char| c.is_ascii_digit()),
        Some(_) => false,
    };
    (rest_ok && is_bare_domain(host)).then_some(chunk.len())
}

/// Whether `host` looks like a domain name written in prose: labels of word characters and
/// hyphens, at least two, none empty, the last one all letters, at least two of them, and a
/// top-level domain known to the public suffix list.
fn is_bare_domain(host: &str) -> bool {
    let mut labels = 0;
    for label in host.split('.') {
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        labels += 1;
    }
    let tld = host.rsplit('.').next().unwrap_or("");
    labels >= 2
        && tld.chars().count() >= 2
        && tld.chars().all(char::is_alphabetic)
        && known_tld(tld)
}

/// Whether `tld` (any case) is a top-level domain in the public suffix list.
fn known_tld(tld: &str) -> bool {
    let mut buf = [0u8; 64];
    let mut n = 0;
    for c in tld.chars().flat_map(char::to_lowercase) {
        let len = c.len_utf8();
        if n + len > buf.len() {
            return false;
        }
        c.encode_utf8(&mut buf[n..]);
        n += len;
    }
    psl::suffix(&buf[..n]).is_some_and(|s| s.is_known())
}

/// `s` without trailing punctuation that ends sentences or encloses links rather than belonging
/// to them. Closing `)` and `]` are kept when the link has a matching opener
/// (`https://en.wikipedia.org/wiki/Rust_(language)`).
fn trim_link_tail(mut s: &str) -> &str {
    loop {
        let Some(c) = s.chars().next_back() else {
            return s;
        };
        let strip = match c {
            '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '"' | '…' | '”' | '’' | '»' | '>' => {
                true
            }
            ')' => s.matches('(').count() < s.matches(')').count(),
            ']' => s.matches('[').count() < s.matches(']').count(),
            _ => false,
        };
        if !strip {
            return s;
        }
        s = &s[..s.len() - c.len_utf8()];
    }
}

/// `s` without ASCII prefix `prefix`, compared case-insensitively.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The host of a URL (`https://user@Example.com:8443/path?q#f` → `Example.com`), of a bare
/// domain with optional port and path (`example.com/path` → `example.com`), or of a host itself.
///
/// Strips the scheme (any `scheme://`, or `//`), user info, port, path, query and fragment.
/// Returns a slice of the input, so case and any trailing dot are preserved: callers lower-case
/// when they compare (hosts in atproto link facets are normally lower-case already; see
/// [`registrable_domain`], which is case-insensitive). IPv6 literals are returned with their
/// brackets (`[::1]`). `None` for an empty or malformed host, a non-numeric port, and URIs
/// without an authority (`mailto:`, `did:plc:…`, `at://did:plc:…` whose "port" is not a number).
pub fn host_of(link: &str) -> Option<&str> {
    let link = link.trim();
    let scheme_len = link
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
        .unwrap_or(link.len());
    let after_scheme = &link[scheme_len..];
    let rest = if scheme_len > 0
        && link.starts_with(|c: char| c.is_ascii_alphabetic())
        && after_scheme.starts_with("://")
    {
        &link[scheme_len + 3..]
    } else if let Some(rest) = link.strip_prefix("//") {
        rest
    } else if let Some(port) = after_scheme.strip_prefix(':')
        && !port
            .split(['/', '?', '#'])
            .next()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        // `mailto:…`, `did:plc:…`: a scheme without an authority, not `host:port`.
        return None;
    } else {
        link
    };
    let authority = &rest[..rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if host_port.starts_with('[') {
        let close = host_port.find(']')?;
        (&host_port[..=close], &host_port[close + 1..])
    } else {
        match host_port.find(':') {
            Some(i) => (&host_port[..i], &host_port[i..]),
            None => (host_port, ""),
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = if host.starts_with('[') {
        host.len() > 2
            && host[1..host.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host.chars().any(|c| c != '.')
            && host
                .chars()
                .all(|c| is_word_char(c) || matches!(c, '.' | '-' | '_'))
    };
    (port_ok && host_ok).then_some(host)
}

/// The registrable domain (eTLD+1) of a host, from the public suffix list compiled into the
/// `psl` crate: `www.bbc.co.uk` → `bbc.co.uk`, `a.b.example.com` → `example.com`,
/// `user.github.io` → `user.github.io` (`github.io` is a suffix under which anyone can register).
///
/// `None` for a host that is itself a public suffix (`com`, `github.io`) or a single label
/// (`localhost`), for IP addresses and malformed hosts. A trailing dot is ignored and not
/// returned. Hosts under a top-level domain the list does not know get psl's default rule (the
/// last label is the suffix, so `evil.example` → `evil.example`).
///
/// `psl` matches lower-case bytes only (`WWW.BBC.CO.UK` would be treated as an unknown suffix),
/// so ASCII upper-case input is lower-cased into a stack buffer for the lookup; the result is a
/// slice of the input with its original case (compare with `eq_ignore_ascii_case`).
/// Non-ASCII upper-case letters (in Unicode IDN labels) are not folded.
pub fn registrable_domain(host: &str) -> Option<&str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || host.len() > 253
        || host.starts_with('.')
        || host.contains("..")
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || matches!(b, b':' | b'[' | b']' | b'/' | b'@'))
        || host
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut buf = [0u8; 253];
    let name = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        let buf = &mut buf[..host.len()];
        buf.copy_from_slice(host.as_bytes());
        buf.make_ascii_lowercase();
        &*buf
    } else {
        host.as_bytes()
    };
    let len = psl::domain(name)?.as_bytes().len();
    host.get(host.len() - len..)
}

/// Whether a link facet misleads: its visible `anchor_text` names a domain (a URL or bare
/// domain as found by [`links`], possibly truncated like `example.com/very/lo...`) whose
/// registrable domain differs, case-insensitively, from that of `target_uri` — or the target has
/// no registrable domain at all (an IP address, `localhost`, a non-web URI).
///
/// Anchors that name no domain (`click here`) are never misleading; an anchor naming the same
/// site (`bbc.co.uk/news` → `https://www.bbc.co.uk/news/x`) is not either. Internationalised
/// names are compared as written (no IDNA), so a Unicode anchor and a punycode target differ.
pub fn misleading_link(anchor_text: &str, target_uri: &str) -> bool {
    let target = host_of(target_uri).and_then(registrable_domain);
    links(anchor_text)
        .filter_map(|l| host_of(l).and_then(registrable_domain))
        .any(|shown| !target.is_some_and(|t| t.eq_ignore_ascii_case(shown)))
}

// ---------------------------------------------------------------------------------------------
// Near-duplicates
// ---------------------------------------------------------------------------------------------

/// 64-bit SimHash of normalised text, for fuzzy near-duplicate detection with [`hamming`].
///
/// Features are 2-token shingles (consecutive [`tokens`], hashed with xxh3), or the single
/// token when there is only one; every feature has weight 1, except that the first shingle
/// counts twice when the shingles are even in number. That way no bit is tied: a tie would
/// read as 0, and short texts (four shingles tie on 3 bits in 8) would get hashes of mostly
/// zeros, whose bands unrelated texts share. Similar texts get hashes a few bits apart:
/// changing one word of a 20-word text changes two of its 19 shingles. It is
/// order-sensitive and, on short texts, one changed word moves many bits, so compare only texts
/// of some length. 0 for text without tokens. Unlike [`fingerprint`], links, mentions and
/// numbers are included, but a link ([`links`]) is one token, its whole text: the five tokens
/// of `https://news.example.com/story` would otherwise make different comments on one link
/// near-duplicates of each other.
pub fn simhash(normalized: &str) -> u64 {
    let base = normalized.as_ptr() as usize;
    let mut in_links = links(normalized)
        .map(|l| {
            let start = l.as_ptr() as usize - base;
            (start, start + l.len())
        })
        .peekable();
    let mut bits = BitVotes::new();
    let mut prev: Option<u64> = None;
    let mut first = 0;
    let mut first_shingle = 0;
    let mut n = 0usize;
    let mut link_counted = None;
    for tok in tokens(normalized) {
        let start = tok.as_ptr() as usize - base;
        while in_links.next_if(|&(_, end)| end <= start).is_some() {}
        let h = match in_links.peek() {
            // The link's first token stands for the whole link; its other tokens are skipped.
            Some(&(link_start, link_end)) if link_start <= start => {
                if link_counted == Some(link_start) {
                    continue;
                }
                link_counted = Some(link_start);
                xxh3_64(&normalized.as_bytes()[link_start..link_end])
            }
            _ => xxh3_64(tok.as_bytes()),
        };
        match prev {
            Some(p) => {
                let mut pair = [0u8; 16];
                pair[..8].copy_from_slice(&p.to_le_bytes());
                pair[8..].copy_from_slice(&h.to_le_bytes());
                let shingle = xxh3_64(&pair);
                if n == 1 {
                    first_shingle = shingle;
                }
                bits.add(shingle);
            }
            None => first = h,
        }
        prev = Some(h);
        n += 1;
    }
    match n {
        0 => return 0,
        1 => bits.add(first),
        // n - 1 shingles: an even number gets the first one's second vote, breaking every tie.
        _ if n % 2 == 1 => bits.add(first_shingle),
        _ => {}
    }
    bits.majority()
}

/// `SPREAD[b]` has byte `i` set to bit `i` of `b` (0 or 1).
static SPREAD: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            table[b] |= ((b as u64 >> i) & 1) << (8 * i);
            i += 1;
        }
        b += 1;
    }
    table
};

/// Per-bit votes of SimHash features, each feature voting +1 for its set bits and -1 for the
/// others. Counts set bits eight at a time: byte `j` of `lanes[k]` counts bit `8k + j`, with a
/// table lookup and an add per byte of a feature instead of 64 adds.
struct BitVotes {
    ones: [u32; 64],
    lanes: [u64; 8],
    in_lanes: u32,
    features: u32,
}

impl BitVotes {
    fn new() -> Self {
        BitVotes {
            ones: [0; 64],
            lanes: [0; 8],
            in_lanes: 0,
            features: 0,
        }
    }

    fn add(&mut self, h: u64) {
        for (k, lane) in self.lanes.iter_mut().enumerate() {
            *lane += SPREAD[((h >> (8 * k)) & 0xff) as usize];
        }
        self.in_lanes += 1;
        self.features += 1;
        // A byte lane holds at most 255.
        if self.in_lanes == 255 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (k, lane) in self.lanes.iter_mut().enumerate() {
            for j in 0..8 {
                self.ones[8 * k + j] += ((*lane >> (8 * j)) & 0xff) as u32;
            }
            *lane = 0;
        }
        self.in_lanes = 0;
    }

    /// The bits more features set than cleared.
    fn majority(mut self) -> u64 {
        self.flush();
        let features = u64::from(self.features);
        self.ones.iter().enumerate().fold(0, |acc, (bit, &ones)| {
            if 2 * u64::from(ones) > features {
                acc | 1 << bit
            } else {
                acc
            }
        })
    }
}

/// Number of differing bits between two [`simhash`]es (0 = same features, 64 = opposite).
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Seed for [`fingerprint`]'s hash chain.
const FINGERPRINT_SEED: u64 = 0x736b_7977_6172_6465; // "skywarde"

/// Exact-after-normalisation key of normalised text, for counting copies of the same message
/// (e.g. as a counter key); 0 when nothing is left to hash.
///
/// Hashes (chained xxh3, token boundaries included) the sequence of [`tokens`] of `normalized`
/// after dropping tokens inside links ([`links`]) and mentions ([`mentions`]) and tokens made
/// only of digits. So texts that differ only in case, look-alike letters, leet, invisible
/// characters, whitespace, punctuation, emoji, numbers, or which links or accounts they point at
/// (a spam wave with a different URL or @-target per copy) get the same key. Any changed, added
/// or reordered word gives a different key: use [`simhash`] for fuzzy matching.
pub fn fingerprint(normalized: &str) -> u64 {
    let base = normalized.as_ptr() as usize;
    let range = |s: &str| {
        let start = s.as_ptr() as usize - base;
        (start, start + s.len())
    };
    let mut skip_links = links(normalized).map(range).peekable();
    let mut skip_mentions = mentions(normalized).map(range).peekable();
    let mut h = FINGERPRINT_SEED;
    let mut any = false;
    for tok in tokens(normalized) {
        let (start, _) = range(tok);
        while skip_links.next_if(|&(_, e)| e <= start).is_some() {}
        while skip_mentions.next_if(|&(_, e)| e <= start).is_some() {}
        let inside = skip_links.peek().is_some_and(|&(s, _)| s <= start)
            || skip_mentions.peek().is_some_and(|&(s, _)| s <= start);
        if inside || tok.chars().all(char::is_numeric) {
            continue;
        }
        h = xxh3_64_with_seed(tok.as_bytes(), h);
        any = true;
    }
    match (any, h) {
        (false, _) => 0,
        (true, 0) => 1,
        (true, h) => h,
    }
}
