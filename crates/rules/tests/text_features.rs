//! Text features (`skywarden_rules::text`) on real-looking Bluesky text.

use skywarden_rules::text::*;

fn norm(s: &str) -> String {
    let mut out = String::new();
    normalize_into(s, &mut out);
    out
}

fn all<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    it.collect()
}

// --- normalisation ------------------------------------------------------------------------

#[test]
fn cyrillic_and_greek_lookalikes_fold_to_ascii() {
    // ѕ с а: Cyrillic dze, es, a.
    assert_eq!(norm("\u{0455}\u{0441}\u{0430}m"), "scam");
    // Greek capitals that look like Latin capitals fold to the Latin letter, not to the
    // lower-case Greek letter (Η → h, not η → n).
    assert_eq!(norm("ΗΟΤ ΝΕWS"), "hot news");
    // Greek small letters: ο α ν ρ τ.
    assert_eq!(norm("ρayραl suρροrτ"), "paypal support");
    assert_eq!(norm("\u{0456}\u{0458}\u{0501}\u{0261}"), "ijdg");
    // Small capitals from "fancy text" generators.
    assert_eq!(norm("ꜰʀᴇᴇ ᴄʀʏᴘᴛᴏ"), "free crypto");
}

#[test]
fn fullwidth_and_math_alphanumerics_fold_via_nfkc() {
    assert_eq!(norm("ＦＲＥＥ"), "free");
    assert_eq!(norm("𝐅𝐑𝐄𝐄 𝓶𝓸𝓷𝓮𝔂"), "free money");
    assert_eq!(norm("ⓕⓡⓔⓔ"), "free");
    assert_eq!(norm("ﬁnance"), "finance");
}

#[test]
fn invisible_characters_are_removed() {
    assert_eq!(norm("fr\u{200B}ee"), "free");
    assert_eq!(
        norm("c\u{00AD}a\u{2060}s\u{FEFF}h a\u{200D}p\u{034F}p"),
        "cash app"
    );
    assert_eq!(norm("\u{202E}gpj.exe"), "gpj.exe");
    assert_eq!(norm("a\u{2066}b\u{2069}c\u{061C}"), "abc");
}

#[test]
fn whitespace_collapses_and_trims() {
    assert_eq!(norm("  Free\t\n\u{00A0} money \u{3000} "), "free money");
    assert_eq!(norm("free\u{2800}\u{2800}money"), "free money");
    assert_eq!(norm(""), "");
    assert_eq!(norm(" \u{200B} "), "");
}

#[test]
fn leet_inside_words_folds_but_numbers_stay() {
    assert_eq!(norm("fr33 m0ney"), "free money");
    assert_eq!(norm("FR33 M0N3Y!!"), "free money!!");
    assert_eq!(norm("h4x0r"), "haxor");
    assert_eq!(norm("call 1000 now"), "call 1000 now");
    assert_eq!(norm("since 2024"), "since 2024");
    assert_eq!(norm("covid19"), "covid19");
    assert_eq!(norm("sc@m and ca$h"), "scam and cash");
    // Quantities, ordinals, cashtags, prices, e-mail addresses and mentions stay.
    assert_eq!(
        norm("10k followers, 3rd time, 5g at 7pm"),
        "10k followers, 3rd time, 5g at 7pm"
    );
    assert_eq!(norm("$BTC to US$5"), "$btc to us$5");
    assert_eq!(
        norm("mail bob@example.com or @alice.bsky.social"),
        "mail bob@example.com or @alice.bsky.social"
    );
    // Leet next to non-ASCII text.
    assert_eq!(
        norm("Café fr33 ÜBER ✨m0ney✨ ñ4"),
        "café free über ✨money✨ ña"
    );
    // A leading run that is not a unit is leet.
    assert_eq!(norm("5ex 3v1l"), "sex evil");
}

#[test]
fn normalize_reuses_the_buffer() {
    let mut out = String::from("stale contents");
    normalize_into("Hello", &mut out);
    assert_eq!(out, "hello");
    normalize_into("", &mut out);
    assert_eq!(out, "");
}

#[test]
fn confusable_table_maps_to_ascii_lowercase() {
    assert_eq!(confusable('\u{0430}'), Some('a'));
    assert_eq!(confusable('a'), None);
    assert_eq!(confusable('é'), None);
}

// --- bidi ----------------------------------------------------------------------------------

#[test]
fn bidi_override_detection() {
    assert!(has_bidi_override("invoice\u{202E}fdp.exe"));
    assert!(has_bidi_override("\u{202D}x"));
    assert!(has_bidi_override("a\u{2067}b\u{2069}"));
    assert!(has_bidi_override("\u{202B}x\u{202C}"));
    assert!(!has_bidi_override("plain text, café, 日本語, עברית"));
    assert!(!has_bidi_override("mark only \u{200F}"));
    assert!(!has_bidi_override(""));
}

// --- tokens and word boundaries -------------------------------------------------------------

#[test]
fn tokens_over_non_ascii() {
    assert_eq!(all(tokens("café über-cool!")), ["café", "über", "cool"]);
    assert_eq!(all(tokens(&norm("Café ÜBER"))), ["café", "über"]);
    // Combining marks stay inside the word (Devanagari virama).
    assert_eq!(all(tokens("नमस्ते दुनिया")), ["नमस्ते", "दुनिया"]);
    assert_eq!(all(tokens("  ...  ")), Vec::<&str>::new());
}

#[test]
fn whole_word_boundaries() {
    let h = "free money, freedom";
    assert!(word_boundary_at(h, 0, 4)); // "free"
    assert!(word_boundary_at(h, 5, 10)); // "money"
    assert!(!word_boundary_at(h, 12, 16)); // "free" in "freedom"
    assert!(word_boundary_at(h, 12, 19)); // "freedom"
    assert!(!word_boundary_at("scammer", 0, 4));
    assert!(word_boundary_at("über scam", 6, 10));
    assert!(!word_boundary_at("überscam", 5, 9));
    // A range that starts or ends with punctuation is its own boundary.
    assert!(word_boundary_at("c++dev", 0, 3));
    // Invalid ranges.
    assert!(!word_boundary_at("abc", 2, 2));
    assert!(!word_boundary_at("abc", 1, 9));
    assert!(!word_boundary_at("é", 1, 2));
}

// --- hashtags, mentions, links ---------------------------------------------------------------

#[test]
fn hashtags_like_bluesky() {
    let post = "New #BlueskyArt drop! #art, #2024 #c++ (#notatag) #🦋 #tag…\n#last.";
    assert_eq!(
        all(hashtags(post)),
        ["BlueskyArt", "art", "c++", "🦋", "tag", "last"]
    );
    assert_eq!(
        all(hashtags("#1 #12ab #covid19 #a#b")),
        ["12ab", "covid19", "a#b"]
    );
    assert_eq!(all(hashtags("email#notatag #️⃣ ＃全角")), ["全角"]);
    let long = format!("#{} #ok", "a".repeat(65));
    assert_eq!(all(hashtags(&long)), ["ok"]);
    let max = format!("#{}", "a".repeat(64));
    assert_eq!(all(hashtags(&max)), [&max[1..]]);
}

#[test]
fn mentions_like_bluesky() {
    let post = "cc @alice.bsky.social and (@Bob.Example.COM), thanks @carol.test.";
    assert_eq!(
        all(mentions(post)),
        ["alice.bsky.social", "Bob.Example.COM", "carol.test"]
    );
    // Not mentions: e-mail addresses, URL paths, dotless names, bad labels, numeric TLDs.
    let not = "bob@example.com https://medium.com/@writer.name @everyone @-bad.com @a.123 @x..y";
    assert_eq!(all(mentions(not)), Vec::<&str>::new());
    assert!(is_handle("alice.bsky.social"));
    assert!(!is_handle("alice"));
}

#[test]
fn links_in_posts() {
    let post = "Read https://www.bbc.co.uk/news/articles/c1.html, then bbc.co.uk/sport. \
                Wiki: (https://en.wikipedia.org/wiki/Rust_(programming_language)) and \
                HTTP://Example.COM:8080/x?y=1#z! Also github.io or blog.example.org:443.";
    assert_eq!(
        all(links(post)),
        [
            "https://www.bbc.co.uk/news/articles/c1.html",
            "bbc.co.uk/sport",
            "https://en.wikipedia.org/wiki/Rust_(programming_language)",
            "HTTP://Example.COM:8080/x?y=1#z",
            "github.io",
            "blog.example.org:443",
        ]
    );
    // Not links: file names, abbreviations, e-mail addresses, handles, versions, bare schemes.
    let not = "see notes.txt and script.js e.g. i.e. bob@example.com @alice.bsky.social v1.2.3 https:// 3.14";
    assert_eq!(all(links(not)), Vec::<&str>::new());
}

#[test]
fn host_of_urls_and_domains() {
    assert_eq!(
        host_of("https://user:pw@Example.com:8443/p?q=1#f"),
        Some("Example.com")
    );
    assert_eq!(host_of("http://bbc.co.uk"), Some("bbc.co.uk"));
    assert_eq!(host_of("example.com/path"), Some("example.com"));
    assert_eq!(host_of("example.com:8080"), Some("example.com"));
    assert_eq!(host_of("//cdn.example.net/x.js"), Some("cdn.example.net"));
    assert_eq!(host_of("https://example.com./"), Some("example.com."));
    assert_eq!(host_of("https://[::1]:8080/"), Some("[::1]"));
    assert_eq!(host_of("https://bsky.app?x"), Some("bsky.app"));
    assert_eq!(
        host_of("at://alice.bsky.social/app.bsky.feed.post/3k"),
        Some("alice.bsky.social")
    );
    assert_eq!(host_of("https:///path"), None);
    assert_eq!(host_of(""), None);
    assert_eq!(host_of("mailto:bob@example.com"), None);
    assert_eq!(host_of("at://did:plc:abc123/app.bsky.feed.post/3k"), None);
    assert_eq!(host_of("https://exa mple.com"), None);
}

#[test]
fn registrable_domains() {
    assert_eq!(registrable_domain("www.bbc.co.uk"), Some("bbc.co.uk"));
    assert_eq!(registrable_domain("a.b.example.com"), Some("example.com"));
    assert_eq!(registrable_domain("example.com"), Some("example.com"));
    assert_eq!(registrable_domain("user.github.io"), Some("user.github.io"));
    assert_eq!(
        registrable_domain("a.user.github.io"),
        Some("user.github.io")
    );
    assert_eq!(
        registrable_domain("shop.example.com.au"),
        Some("example.com.au")
    );
    assert_eq!(
        registrable_domain("x.city.kawasaki.jp"),
        Some("city.kawasaki.jp")
    );
    assert_eq!(registrable_domain("evil.example"), Some("evil.example"));
    assert_eq!(registrable_domain("www.example.com."), Some("example.com"));
    assert_eq!(registrable_domain("WWW.BBC.CO.UK"), Some("BBC.CO.UK"));
    assert_eq!(registrable_domain("localhost"), None);
    assert_eq!(registrable_domain("github.io"), None);
    assert_eq!(registrable_domain("co.uk"), None);
    assert_eq!(registrable_domain("com"), None);
    assert_eq!(registrable_domain("192.168.0.1"), None);
    assert_eq!(registrable_domain("[::1]"), None);
    assert_eq!(registrable_domain(""), None);
    assert_eq!(registrable_domain("a..com"), None);
}

#[test]
fn misleading_links() {
    assert!(misleading_link("paypal.com", "https://evil.example/login"));
    assert!(misleading_link(
        "https://www.paypal.com/signin",
        "https://paypa1-secure.com/x"
    ));
    assert!(misleading_link(
        "Log in at paypal.com",
        "https://evil.example/"
    ));
    assert!(misleading_link("paypal.com", "http://192.168.4.2/login"));
    assert!(!misleading_link(
        "bbc.co.uk/news",
        "https://www.bbc.co.uk/news/x"
    ));
    assert!(!misleading_link("BBC.co.uk", "https://www.bbc.CO.uk/"));
    // Truncated display text, as Bluesky clients shorten long links.
    assert!(!misleading_link(
        "example.com/very/lo...",
        "https://example.com/very/long/path"
    ));
    assert!(misleading_link(
        "example.com/very/lo...",
        "https://other.example/very/long/path"
    ));
    assert!(!misleading_link("click here", "https://evil.example/login"));
    assert!(!misleading_link(
        "my notes.txt",
        "https://evil.example/login"
    ));
    assert!(!misleading_link("", "https://evil.example/"));
}

// --- near duplicates ---------------------------------------------------------------------------

const SPAM_A: &str = "Congratulations! You have been selected for our exclusive crypto giveaway. \
                      Send 0.1 ETH to the wallet in our bio and receive 2 ETH back within one hour. \
                      Only the first hundred people qualify, so act fast before it ends tonight";
const SPAM_B: &str = "Congratulations! You have been chosen for our exclusive crypto giveaway. \
                      Send 0.1 ETH to the wallet in our bio and receive 2 ETH back within one hour. \
                      Only the first hundred people qualify, so act fast before it ends tonight";
const SPAM_C: &str = "Congratulations!! You have been selected for our exclusive crypto giveaway. \
                      Send 0.5 ETH to the wallet in my bio and receive 5 ETH back within one hour. \
                      Only the first hundred people qualify, so act fast before it ends tonight";
const OTHER_1: &str = "Spent the afternoon repotting the monstera and finally fixed the leaky \
                       kitchen tap. Tomorrow I want to try that sourdough recipe everyone keeps \
                       posting about, wish me luck with the starter";
const OTHER_1_EDITED: &str = "Spent the morning repotting the monstera and finally fixed the \
                              leaky kitchen tap. Tomorrow I want to try that sourdough recipe \
                              everyone keeps posting about, wish me luck";
const OTHER_2: &str = "The council meeting about the new cycle lanes ran three hours late, and \
                       most of the discussion was about parking rather than safety for children \
                       walking to the primary school on the hill";

fn sim(s: &str) -> u64 {
    simhash(&norm(s))
}

#[test]
fn simhash_is_stable_and_close_for_near_duplicates() {
    assert_eq!(simhash(""), 0);
    assert_eq!(simhash("!!! ..."), 0);
    assert_ne!(simhash("hello"), 0);
    assert_eq!(sim(SPAM_A), sim(SPAM_A));
    // Case, invisible characters, confusables and punctuation do not change it at all.
    assert_eq!(
        sim(SPAM_A),
        sim(&SPAM_A
            .to_uppercase()
            .replace("giveaway", "give\u{200B}away"))
    );
    assert_eq!(
        sim(SPAM_A),
        sim(&SPAM_A.replace("crypto", "сrурtо").replace('!', "!!!"))
    );
    // One word changed, a mention appended, one word changed and a few dropped.
    let with_mention = format!("{SPAM_A} @someone.bsky.social");
    for (x, y) in [
        (SPAM_A, SPAM_B),
        (SPAM_A, with_mention.as_str()),
        (OTHER_1, OTHER_1_EDITED),
    ] {
        let d = hamming(sim(x), sim(y));
        assert!(d < 10, "near duplicate at distance {d}");
    }
    // Three words changed out of 45 (2 ETH → 5 ETH, …): further, still nearer than unrelated text.
    let d = hamming(sim(SPAM_A), sim(SPAM_C));
    assert!(d < 16, "edited copy at distance {d}");
    let unrelated = [
        (SPAM_A, OTHER_1),
        (SPAM_A, OTHER_2),
        (OTHER_1, OTHER_2),
        (SPAM_C, OTHER_1),
        (SPAM_B, OTHER_1_EDITED),
        (OTHER_2, OTHER_1_EDITED),
    ];
    for (x, y) in unrelated {
        let d = hamming(sim(x), sim(y));
        assert!(d > 15, "unrelated texts at distance {d}");
    }
}

/// Short texts of unrelated words get hashes with as many ones as zeros, so that their 16-bit
/// bands (the near-duplicate counter's keys) spread over the band's 65,536 values. With ties
/// read as 0, these texts had 25.6 of 64 bits set on average.
/// A xorshift64 generator: deterministic test input.
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[test]
fn simhash_bits_of_short_texts_are_balanced() {
    let words: Vec<String> = (0..500).map(|i| format!("w{i:03}x")).collect();
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let (texts, mut ones, mut zero_bands) = (20_000, 0u64, 0u64);
    for _ in 0..texts {
        let n = 3 + (next() % 6) as usize; // 3 to 8 words: 2 to 7 shingles
        let text: Vec<&str> = (0..n)
            .map(|_| words[(next() % words.len() as u64) as usize].as_str())
            .collect();
        let h = simhash(&norm(&text.join(" ")));
        ones += u64::from(h.count_ones());
        zero_bands += (0..4).filter(|b| (h >> (16 * b)) & 0xffff == 0).count() as u64;
    }
    let mean = ones as f64 / texts as f64;
    assert!((30.0..34.0).contains(&mean), "{mean} bits set on average");
    // Uniform bands: about 80,000 / 65,536 ≈ 1 band of zeros in all.
    assert!(zero_bands < 10, "{zero_bands} bands of zeros");
}

#[test]
fn hamming_counts_bits() {
    assert_eq!(hamming(0, 0), 0);
    assert_eq!(hamming(0b1011, 0b0001), 2);
    assert_eq!(hamming(0, u64::MAX), 64);
}

fn fp(s: &str) -> u64 {
    fingerprint(&norm(s))
}

#[test]
fn fingerprint_ignores_surface_variation() {
    let base = fp("Claim your FREE airdrop now, limited spots");
    assert_ne!(base, 0);
    for variant in [
        "claim your free airdrop now limited spots",
        "Claim your fr\u{200B}ee air\u{00AD}drop now — limited spots!!!",
        "\u{0421}LAIM your ＦＲＥＥ аirdrop now, limited spots 🚀🚀",
        "Claim   your FR33 airdrop now,\nlimited spots",
        "Claim your FREE airdrop now, limited spots https://scam.example.com/a?ref=1",
        "Claim your FREE airdrop now, limited spots claim-airdrop.xyz/x @victim.bsky.social",
        "@target.bsky.social Claim your FREE airdrop now, limited spots #2",
    ] {
        assert_eq!(fp(variant), base, "{variant}");
    }
    assert_ne!(fp("Claim your FREE airdrop today, limited spots"), base);
    assert_ne!(fp("limited spots: claim your FREE airdrop now"), base);
    assert_ne!(fp("Good morning everyone"), base);
    assert_eq!(fp(""), 0);
    assert_eq!(fp("https://example.com/x @alice.bsky.social 12345"), 0);
}

// --- robustness ------------------------------------------------------------------------------

mod properties {
    use proptest::prelude::*;
    use skywarden_rules::text::*;

    /// Characters that exercise every branch: ASCII structure, leet, invisible and bidi
    /// controls, confusables, combining marks, multi-byte letters and NFKC-expanding forms.
    const PALETTE: &[char] = &[
        'a', 'e', 'x', 'Z', '0', '1', '3', '9', ' ', '\n', '.', ',', '/', ':', '@', '#', '$', '(',
        ')', '-', '_', '?', 'é', 'ß', 'İ', 'Σ', 'а', 'Η', 'ꜰ', '\u{0301}', '\u{094D}', '\u{200B}',
        '\u{202E}', '\u{2066}', '\u{FE0F}', '\u{2800}', 'Ｆ', '＃', '①', 'ﬁ', '…', '日', '🦋',
    ];

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(PALETTE), 0..48)
                .prop_map(|v| v.into_iter().collect()),
            any::<String>(),
        ]
    }

    fn within(outer: &str, inner: &str) -> bool {
        let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
        i >= o && i + inner.len() <= o + outer.len()
    }

    proptest! {
        #[test]
        fn features_never_panic_and_return_slices_of_input(
            s in text(),
            a in 0usize..64,
            b in 0usize..64,
        ) {
            let mut n = String::new();
            normalize_into(&s, &mut n);
            prop_assert!(!n.starts_with(' ') && !n.ends_with(' ') && !n.contains("  "));
            prop_assert!(!n.chars().any(is_invisible));
            prop_assert!(!has_bidi_override(&n));
            for t in tokens(&n) {
                prop_assert!(within(&n, t) && !t.is_empty());
            }
            for x in hashtags(&s).chain(mentions(&s)).chain(links(&s)) {
                prop_assert!(within(&s, x) && !x.is_empty());
            }
            for l in links(&s) {
                if let Some(h) = host_of(l) {
                    prop_assert!(within(l, h));
                    if let Some(d) = registrable_domain(h) {
                        prop_assert!(within(h, d));
                    }
                }
            }
            let _ = misleading_link(&s, &s);
            let _ = word_boundary_at(&s, a, b);
            prop_assert_eq!(simhash(&n) == 0, tokens(&n).next().is_none());
            prop_assert_eq!(fingerprint(&n), fingerprint(&n.clone()));
        }
    }
}

/// A link is one SimHash token: different short comments on one link are as far apart as
/// unrelated texts (about 32 bits), not pulled together by the link's five tokens
/// (`https`, `news15`, `example`, `com`, `story`).
#[test]
fn comments_on_one_link_are_not_near_duplicates() {
    const WORDS: [&str; 16] = [
        "morning", "river", "kitchen", "window", "garden", "planet", "coffee", "silver", "market",
        "winter", "signal", "button", "forest", "pencil", "harbor", "ticket",
    ];
    let mut next = xorshift(11);
    let mut comment = |n: usize| {
        (0..n)
            .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let link = "https://news15.example.com/story";
    let (mut total, pairs) = (0u32, 200);
    for _ in 0..pairs {
        let a = sim(&format!("{} {link}", comment(5)));
        let b = sim(&format!("{} {link}", comment(5)));
        total += hamming(a, b);
    }
    let mean = f64::from(total) / f64::from(pairs);
    assert!(mean > 26.0, "mean distance {mean}");
    // The link still counts: the same comment on another link is a different text.
    let c = comment(5);
    assert_ne!(
        sim(&format!("{c} {link}")),
        sim(&format!("{c} https://elsewhere.example.org/a"))
    );
}
