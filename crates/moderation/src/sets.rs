//! `tools.ozone.set.*` on the rule engine's list files.
//!
//! A set is the list file `lists/<name>.txt` of the rules directory: one value per line, as
//! every list file. So a moderator adding a domain to `promo-domains` changes what
//! `lists.promo_domains` matches as soon as the engine reloads its lists, which a change
//! requests at once (and the directory watcher would do anyway). The set's description and
//! creation time are kept in `#` comment lines at the top, which the rule loader skips.
//!
//! Set names are limited to letters, digits, `-` and `_` (3–128 bytes), so a name is always a
//! plain file name. Writes are serialised and atomic (a temporary file renamed over the old).

use crate::{XrpcError, datetime_ms};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most values one set may hold.
pub const MAX_SET_VALUES: usize = 100_000;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

/// A set's metadata (`tools.ozone.set.defs#setView` without the size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    /// Name (the file stem).
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Values held.
    pub size: usize,
    /// Created (stored form).
    pub created_at: String,
    /// Last changed (the file's modification time).
    pub updated_at: String,
}

impl SetInfo {
    /// `setView`.
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": self.name,
            "setSize": self.size,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        });
        if let Some(d) = &self.description {
            v["description"] = d.clone().into();
        }
        v
    }
}

/// Sets as list files under a rules directory.
pub struct ListSets {
    dir: Option<PathBuf>,
    on_change: Arc<dyn Fn() + Send + Sync>,
    write: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ListSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListSets").field("dir", &self.dir).finish()
    }
}

struct SetFile {
    description: Option<String>,
    created_at: Option<String>,
    values: Vec<String>,
}

fn set_not_found(name: &str) -> XrpcError {
    XrpcError::new(400, "SetNotFound", format!("set `{name}` does not exist"))
}

/// Checks a set name.
pub fn check_name(name: &str) -> Result<(), XrpcError> {
    if (3..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(XrpcError::invalid(format!(
            "set name `{name}`: 3-128 letters, digits, `-` or `_` (a set is the list file lists/<name>.txt)"
        )))
    }
}

fn check_value(v: &str) -> Result<(), XrpcError> {
    if v.trim().is_empty()
        || v.len() > MAX_VALUE_BYTES
        || v.contains(['\n', '\r'])
        || v.trim_start().starts_with('#')
        || v.trim() != v
    {
        return Err(XrpcError::invalid(format!(
            "set value {v:?}: one line of at most {MAX_VALUE_BYTES} bytes, without surrounding spaces, not starting with `#`"
        )));
    }
    Ok(())
}

impl ListSets {
    /// Sets in `rules_dir/lists` (`None`: the built-in ruleset, which has no files: every set
    /// call is refused, saying so). `on_change` is called after each change.
    pub fn new(rules_dir: Option<PathBuf>, on_change: Arc<dyn Fn() + Send + Sync>) -> Self {
        ListSets {
            dir: rules_dir.map(|d| d.join("lists")),
            on_change,
            write: tokio::sync::Mutex::new(()),
        }
    }

    fn dir(&self) -> Result<&Path, XrpcError> {
        self.dir.as_deref().ok_or_else(|| {
            XrpcError::invalid(
                "sets are the rules directory's list files, and this service runs the built-in ruleset: start it with --rules DIR to manage sets",
            )
        })
    }

    fn path(&self, name: &str) -> Result<PathBuf, XrpcError> {
        check_name(name)?;
        Ok(self.dir()?.join(format!("{name}.txt")))
    }

    async fn read(&self, name: &str) -> Result<Option<(SetFile, String)>, XrpcError> {
        let path = self.path(name)?;
        let content = match tokio::fs::read_to_string(&path).await {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(XrpcError::internal(format!("{}: {e}", path.display()))),
        };
        let updated = tokio::fs::metadata(&path)
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| datetime_ms(d.as_micros() as i64))
            .unwrap_or_else(|| datetime_ms(0));
        let mut file = SetFile {
            description: None,
            created_at: None,
            values: Vec::new(),
        };
        for line in content.lines() {
            let line = line.trim();
            if let Some(d) = line.strip_prefix("# description: ") {
                file.description = serde_json::from_str(d).ok();
            } else if let Some(c) = line.strip_prefix("# created: ") {
                file.created_at = Some(c.to_string());
            } else if !line.is_empty() && !line.starts_with('#') {
                file.values.push(line.to_string());
            }
        }
        Ok(Some((file, updated)))
    }

    async fn write_file(&self, name: &str, file: &SetFile) -> Result<(), XrpcError> {
        let path = self.path(name)?;
        let mut out = format!("# set: {name} (managed through tools.ozone.set)\n");
        if let Some(d) = &file.description {
            out.push_str(&format!(
                "# description: {}\n",
                serde_json::Value::from(d.as_str())
            ));
        }
        if let Some(c) = &file.created_at {
            out.push_str(&format!("# created: {c}\n"));
        }
        for v in &file.values {
            out.push_str(v);
            out.push('\n');
        }
        let dir = self.dir()?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| XrpcError::internal(format!("{}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".{name}.txt.tmp"));
        tokio::fs::write(&tmp, out)
            .await
            .map_err(|e| XrpcError::internal(format!("{}: {e}", tmp.display())))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| XrpcError::internal(format!("{}: {e}", path.display())))?;
        (self.on_change)();
        Ok(())
    }

    async fn info(&self, name: &str) -> Result<Option<(SetInfo, Vec<String>)>, XrpcError> {
        Ok(self.read(name).await?.map(|(file, updated)| {
            (
                SetInfo {
                    name: name.to_string(),
                    description: file.description,
                    size: file.values.len(),
                    created_at: file.created_at.unwrap_or_else(|| updated.clone()),
                    updated_at: updated,
                },
                file.values,
            )
        }))
    }

    /// Creates a set, or replaces its description.
    pub async fn upsert(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<SetInfo, XrpcError> {
        if description.is_some_and(|d| d.len() > 10_240) {
            return Err(XrpcError::invalid("set description: at most 10240 bytes"));
        }
        let _guard = self.write.lock().await;
        let mut file = match self.read(name).await? {
            Some((file, _)) => file,
            None => SetFile {
                description: None,
                created_at: Some(datetime_ms(crate::now_micros())),
                values: Vec::new(),
            },
        };
        file.description = description.map(str::to_string);
        self.write_file(name, &file).await?;
        drop(_guard);
        Ok(self.info(name).await?.ok_or_else(|| set_not_found(name))?.0)
    }

    /// Adds values (those already present are left alone).
    pub async fn add_values(&self, name: &str, values: &[String]) -> Result<(), XrpcError> {
        if values.is_empty() || values.len() > 1000 {
            return Err(XrpcError::invalid("values: 1 to 1000 per call"));
        }
        for v in values {
            check_value(v)?;
        }
        let _guard = self.write.lock().await;
        let (mut file, _) = self.read(name).await?.ok_or_else(|| set_not_found(name))?;
        let mut present: std::collections::HashSet<String> = file.values.iter().cloned().collect();
        for v in values {
            if present.insert(v.clone()) {
                file.values.push(v.clone());
            }
        }
        if file.values.len() > MAX_SET_VALUES {
            return Err(XrpcError::invalid(format!(
                "set `{name}` would hold more than {MAX_SET_VALUES} values"
            )));
        }
        self.write_file(name, &file).await
    }

    /// Removes values.
    pub async fn delete_values(&self, name: &str, values: &[String]) -> Result<(), XrpcError> {
        if values.is_empty() {
            return Err(XrpcError::invalid("values: at least one"));
        }
        let _guard = self.write.lock().await;
        let (mut file, _) = self.read(name).await?.ok_or_else(|| set_not_found(name))?;
        file.values.retain(|v| !values.contains(v));
        self.write_file(name, &file).await
    }

    /// A page of values (in file order) and the set; the cursor is an offset.
    pub async fn values(
        &self,
        name: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(SetInfo, Vec<String>, Option<String>), XrpcError> {
        let (info, values) = self.info(name).await?.ok_or_else(|| set_not_found(name))?;
        let start: usize = match cursor {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| XrpcError::invalid("cursor: not one this service returned"))?,
        };
        let page: Vec<String> = values.iter().skip(start).take(limit).cloned().collect();
        let next = (start + page.len() < values.len()).then(|| (start + page.len()).to_string());
        Ok((info, page, next))
    }

    /// Every set whose name starts with `prefix`, sorted by `sort_by` (`name`, `createdAt`,
    /// `updatedAt`); a page from offset `cursor`.
    pub async fn query(
        &self,
        prefix: Option<&str>,
        sort_by: &str,
        descending: bool,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<SetInfo>, Option<String>), XrpcError> {
        let dir = self.dir()?;
        let mut names = Vec::new();
        match tokio::fs::read_dir(dir).await {
            Ok(mut entries) => {
                while let Ok(Some(entry)) = entries.next_entry().await {
                    let file_name = entry.file_name();
                    let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".txt")) else {
                        continue;
                    };
                    if check_name(name).is_ok() && prefix.is_none_or(|p| name.starts_with(p)) {
                        names.push(name.to_string());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(XrpcError::internal(format!("{}: {e}", dir.display()))),
        }
        let mut sets = Vec::new();
        for name in names {
            if let Some((info, _)) = self.info(&name).await? {
                sets.push(info);
            }
        }
        match sort_by {
            "name" => sets.sort_by(|a, b| a.name.cmp(&b.name)),
            "createdAt" => {
                sets.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)))
            }
            "updatedAt" => {
                sets.sort_by(|a, b| (&a.updated_at, &a.name).cmp(&(&b.updated_at, &b.name)))
            }
            other => {
                return Err(XrpcError::invalid(format!(
                    "sortBy `{other}`: one of name, createdAt, updatedAt"
                )));
            }
        }
        if descending {
            sets.reverse();
        }
        let start: usize = match cursor {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| XrpcError::invalid("cursor: not one this service returned"))?,
        };
        let total = sets.len();
        let page: Vec<SetInfo> = sets.into_iter().skip(start).take(limit).collect();
        let next = (start + page.len() < total).then(|| (start + page.len()).to_string());
        Ok((page, next))
    }

    /// Deletes a set. A rule that declares the list then fails to reload (and the running
    /// ruleset stays) until the file is back or the rule is changed.
    pub async fn delete(&self, name: &str) -> Result<(), XrpcError> {
        let path = self.path(name)?;
        let _guard = self.write.lock().await;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                (self.on_change)();
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(set_not_found(name)),
            Err(e) => Err(XrpcError::internal(format!("{}: {e}", path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn sets_are_list_files() {
        let dir = std::env::temp_dir().join(format!("skywarden-sets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let changes = Arc::new(AtomicUsize::new(0));
        let c = changes.clone();
        let sets = ListSets::new(
            Some(dir.clone()),
            Arc::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }),
        );
        sets.upsert("promo-domains", Some("line one\nline two"))
            .await
            .unwrap();
        sets.add_values(
            "promo-domains",
            &["spam.example".into(), "scam.example".into()],
        )
        .await
        .unwrap();
        sets.add_values("promo-domains", &["spam.example".into()])
            .await
            .unwrap();
        let content = std::fs::read_to_string(dir.join("lists/promo-domains.txt")).unwrap();
        // What the rule loader reads: the values, comments skipped.
        let items: Vec<&str> = content
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(items, ["spam.example", "scam.example"]);
        let (info, values, cursor) = sets.values("promo-domains", 1, None).await.unwrap();
        assert_eq!(
            (info.size, values.len(), cursor.as_deref()),
            (2, 1, Some("1"))
        );
        assert_eq!(info.description.as_deref(), Some("line one\nline two"));
        sets.delete_values("promo-domains", &["spam.example".into()])
            .await
            .unwrap();
        let (info, values, _) = sets.values("promo-domains", 10, None).await.unwrap();
        assert_eq!((info.size, values), (1, vec!["scam.example".to_string()]));
        assert_eq!(changes.load(Ordering::SeqCst), 4);
        for bad in ["../etc", "a/b", "x"] {
            assert_eq!(sets.upsert(bad, None).await.unwrap_err().status, 400);
        }
        for bad in ["two\nlines", "#comment", " padded", ""] {
            assert!(
                sets.add_values("promo-domains", &[bad.into()])
                    .await
                    .is_err()
            );
        }
        assert_eq!(
            sets.add_values("missing", &["a.example".into()])
                .await
                .unwrap_err()
                .error,
            "SetNotFound"
        );
        let (all, _) = sets.query(None, "name", false, 10, None).await.unwrap();
        assert_eq!(all.len(), 1);
        sets.delete("promo-domains").await.unwrap();
        assert_eq!(
            sets.delete("promo-domains").await.unwrap_err().error,
            "SetNotFound"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_built_in_ruleset_has_no_sets() {
        let sets = ListSets::new(None, Arc::new(|| {}));
        let e = sets.upsert("abc", None).await.unwrap_err();
        assert!(e.message.contains("--rules"));
    }
}
