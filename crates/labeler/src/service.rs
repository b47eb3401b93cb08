//! The labeler's identity on the network: the DID document of a did:web labeler, and the
//! `app.bsky.labeler.service` record that declares its label values to clients.

use serde::Deserialize;
use skywarden_atproto::crypto::PublicKey;

/// The labeler's declaration, as written in the config file's `[labeler]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// Label values this labeler emits, with how clients should show them.
    #[serde(default, rename = "label")]
    pub labels: Vec<LabelValueDefinition>,
    /// Report reason types the service reviews (absent: all).
    pub reason_types: Option<Vec<String>>,
    /// Subject types the service accepts reports on (`account`, `record`, `chat`).
    pub subject_types: Option<Vec<String>>,
    /// Record collections the service accepts reports on (absent: any).
    pub subject_collections: Option<Vec<String>>,
}

/// `com.atproto.label.defs#labelValueDefinition`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelValueDefinition {
    /// The value (`[a-z-]+`, at most 100 characters).
    pub identifier: String,
    /// `inform`, `alert` or `none`.
    pub severity: String,
    /// `content`, `media` or `none`.
    pub blurs: String,
    /// `ignore`, `warn` or `hide` [default: warn].
    pub default_setting: Option<String>,
    /// Only for accounts with adult content enabled.
    #[serde(default)]
    pub adult_only: bool,
    /// Names and descriptions per language.
    #[serde(default, rename = "locale")]
    pub locales: Vec<LabelLocale>,
}

/// `com.atproto.label.defs#labelValueDefinitionStrings`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelLocale {
    /// BCP-47 language code.
    pub lang: String,
    /// Short name.
    pub name: String,
    /// Longer description (Markdown).
    pub description: String,
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{field} `{value}`: expected one of {}",
            allowed.join(", ")
        ))
    }
}

impl Declaration {
    /// Checks the declaration against the lexicon, naming the first problem.
    pub fn validate(&self) -> Result<(), String> {
        for (i, l) in self.labels.iter().enumerate() {
            let at = format!("labeler.label[{i}] ({})", l.identifier);
            let id_ok = !l.identifier.is_empty()
                && l.identifier.len() <= 100
                && l.identifier
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-');
            if !id_ok {
                return Err(format!(
                    "{at}: identifier must be 1-100 of lowercase a-z and `-` (custom values; `!`-values are global)"
                ));
            }
            one_of(
                &format!("{at}: severity"),
                &l.severity,
                &["inform", "alert", "none"],
            )?;
            one_of(
                &format!("{at}: blurs"),
                &l.blurs,
                &["content", "media", "none"],
            )?;
            if let Some(d) = &l.default_setting {
                one_of(
                    &format!("{at}: default_setting"),
                    d,
                    &["ignore", "warn", "hide"],
                )?;
            }
            if l.locales.is_empty() {
                return Err(format!(
                    "{at}: needs at least one [[labeler.label.locale]] with lang, name and description"
                ));
            }
        }
        for t in self.subject_types.iter().flatten() {
            one_of("labeler.subject_types", t, &["account", "record", "chat"])?;
        }
        for r in self.reason_types.iter().flatten() {
            if !r.contains('#') {
                return Err(format!(
                    "labeler.reason_types `{r}`: expected an NSID with a fragment, e.g. com.atproto.moderation.defs#reasonSpam"
                ));
            }
        }
        Ok(())
    }

    /// The `app.bsky.labeler.service` record (record key `self`).
    pub fn record(&self, created_at: &str) -> serde_json::Value {
        let definitions: Vec<serde_json::Value> = self
            .labels
            .iter()
            .map(|l| {
                let mut d = serde_json::json!({
                    "identifier": l.identifier,
                    "severity": l.severity,
                    "blurs": l.blurs,
                    "locales": l.locales.iter().map(|x| serde_json::json!({
                        "lang": x.lang, "name": x.name, "description": x.description,
                    })).collect::<Vec<_>>(),
                });
                if let Some(s) = &l.default_setting {
                    d["defaultSetting"] = s.clone().into();
                }
                if l.adult_only {
                    d["adultOnly"] = true.into();
                }
                d
            })
            .collect();
        let mut record = serde_json::json!({
            "$type": "app.bsky.labeler.service",
            "policies": {
                "labelValues": self.labels.iter().map(|l| l.identifier.clone()).collect::<Vec<_>>(),
                "labelValueDefinitions": definitions,
            },
            "createdAt": created_at,
        });
        if let Some(r) = &self.reason_types {
            record["reasonTypes"] = r.clone().into();
        }
        if let Some(s) = &self.subject_types {
            record["subjectTypes"] = s.clone().into();
        }
        if let Some(c) = &self.subject_collections {
            record["subjectCollections"] = c.clone().into();
        }
        record
    }
}

/// The DID document `/.well-known/did.json` serves for a did:web labeler: the label signing
/// key under `#atproto_label` and the `#atproto_labeler` service endpoint.
pub fn did_web_document(did: &str, key: &PublicKey, endpoint: &str) -> serde_json::Value {
    serde_json::json!({
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/multikey/v1",
        ],
        "id": did,
        "verificationMethod": [{
            "id": format!("{did}#atproto_label"),
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": key.to_multikey(),
        }],
        "service": [{
            "id": "#atproto_labeler",
            "type": "AtprotoLabeler",
            "serviceEndpoint": endpoint,
        }],
    })
}

/// The did:web DID for a public base URL: `https://labels.example.org` →
/// `did:web:labels.example.org`; a port is percent-encoded (`did:web:localhost%3A2480`).
pub fn did_web_for(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split('/').next()?.trim();
    if host.is_empty() {
        return None;
    }
    Some(format!("did:web:{}", host.replace(':', "%3A")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_checked_and_rendered() {
        let text = r#"
reason_types = ["com.atproto.moderation.defs#reasonSpam"]
subject_types = ["account", "record"]
[[label]]
identifier = "spam"
severity = "inform"
blurs = "none"
default_setting = "warn"
[[label.locale]]
lang = "en"
name = "Spam"
description = "Unwanted, repeated content"
"#;
        let d: Declaration = toml_like(text);
        d.validate().unwrap();
        let r = d.record("2026-12-01T00:00:00.000Z");
        assert_eq!(r["policies"]["labelValues"][0], "spam");
        assert_eq!(
            r["policies"]["labelValueDefinitions"][0]["defaultSetting"],
            "warn"
        );
        assert_eq!(r["subjectTypes"][1], "record");
        let mut bad = d.clone();
        bad.labels[0].identifier = "Spam!".into();
        assert!(bad.validate().unwrap_err().contains("identifier"));
        let mut bad = d.clone();
        bad.labels[0].blurs = "all".into();
        assert!(bad.validate().unwrap_err().contains("blurs `all`"));
        assert_eq!(
            did_web_for("http://127.0.0.1:2480/").as_deref(),
            Some("did:web:127.0.0.1%3A2480")
        );
        assert_eq!(
            did_web_for("https://labels.example.org").as_deref(),
            Some("did:web:labels.example.org")
        );
        assert_eq!(did_web_for("ftp://x"), None);
    }

    fn toml_like(text: &str) -> Declaration {
        toml::from_str(text).unwrap()
    }
}
