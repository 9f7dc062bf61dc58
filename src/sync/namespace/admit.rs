//! Admission: every namespace entry from another device is checked on arrival, before it
//! reaches the merge. Unsafe paths (`..`, absolute, NUL, a name past 255 bytes), names
//! planted under `.conflicts/` that are no conflict copy's, hashes that are not 64 hex
//! digits, symlink targets that are empty, hold NUL or pass 4,095 bytes, and entries
//! whose chunk-hash record is missing or does not match them are
//! refused, each reported with the log it came from (`NsSummary::refused`, shown by
//! `songfs sync` and `--json`). What is admitted is made safe: setuid, setgid and sticky
//! bits stripped, the size taken from the blob's record (never the entry's claim).
//! Must never write the catalog or the store; the rest of a log is applied as usual.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::model::{is_conflict_copy, safe_path};
use super::{FileValue, NamespaceError, NamespaceSync, FILE_FIELD, NS_TABLE};
use crate::content::{self, chunk_count, is_valid_hash, BlobInfo, EMPTY_HASH};
use crate::store::StoreError;
use crate::sync::changelog::LogFile;
use crate::sync::merge::{Change, Event};

/// A remote namespace entry refused on arrival: which log, which path, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub log: String,
    pub path: String,
    pub why: String,
}

/// Mode bits a remote entry may not set: setuid, setgid, sticky.
const SPECIAL_BITS: u32 = 0o7000;

impl NamespaceSync<'_> {
    /// The changes of `log` that may enter the merge, made safe; the refused ones are
    /// logged and added to `refused`. A store error (not an absent record) is returned:
    /// the log is then applied later, whole.
    pub(super) fn admit(
        &self,
        key: &str,
        log: &LogFile,
        refused: &mut Vec<Refused>,
    ) -> Result<Vec<Change>, NamespaceError> {
        let ours: Vec<&Change> = log
            .changes
            .iter()
            .filter(|c| c.row.table == NS_TABLE)
            .collect();
        // One request per distinct blob, all at once: a first sync brings thousands.
        let hashes: BTreeSet<String> = ours
            .iter()
            .filter_map(|c| file_value(c))
            .filter_map(|v| v.ok())
            .map(|v| v.hash)
            .filter(|h| is_valid_hash(h) && h != EMPTY_HASH)
            .collect();
        let keys: Vec<String> = hashes.iter().map(|h| content::chunks_key(h)).collect();
        let mut records: BTreeMap<String, Option<BlobInfo>> = BTreeMap::new();
        for (hash, got) in hashes.iter().zip(self.store.get_many(&keys)) {
            let info = match got {
                Ok(bytes) => serde_json::from_slice(&bytes).ok(),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            records.insert(hash.clone(), info);
        }
        let mut bad_rows: BTreeMap<&str, String> = BTreeMap::new();
        let mut out = Vec::new();
        for c in &ours {
            let path = c.row.gid.as_str();
            let why = match path_refusal(path) {
                Some(why) => Err(why),
                None => match (file_value(c), &c.event) {
                    (
                        Some(Ok(v)),
                        Event::Set {
                            column,
                            clock,
                            replaces,
                            ..
                        },
                    ) => check_file(v, &records).map(|v| Change {
                        row: c.row.clone(),
                        event: Event::Set {
                            column: column.clone(),
                            value: serde_json::to_value(&v).expect("encodes"),
                            clock: clock.clone(),
                            replaces: replaces.clone(),
                        },
                    }),
                    (Some(Err(why)), _) => Err(why),
                    // Folders, deletes, creations: nothing to check beyond the path.
                    _ => Ok((*c).clone()),
                },
            };
            match why {
                Ok(admitted) => out.push(admitted),
                Err(why) => {
                    bad_rows.entry(path).or_insert(why);
                }
            }
        }
        // A refused row's other events (its creation, a delete) stay out with it.
        out.retain(|c| !bad_rows.contains_key(c.row.gid.as_str()));
        for (path, why) in bad_rows {
            tracing::warn!(key, path, why, "a remote namespace entry was refused");
            refused.push(Refused {
                log: key.to_string(),
                path: path.to_string(),
                why,
            });
        }
        Ok(out)
    }
}

/// The file version a change sets, if it sets one (None: a folder, a delete, an event
/// without a value); Err when the value is no file version at all.
fn file_value(c: &Change) -> Option<Result<FileValue, String>> {
    let Event::Set { column, value, .. } = &c.event else {
        return None;
    };
    if column != FILE_FIELD || c.row.gid.ends_with('/') || value.get("deleted").is_some() {
        return None;
    }
    Some(serde_json::from_value(value.clone()).map_err(|e| format!("not a file entry: {e}")))
}

/// Why a remote path is refused, if it is.
fn path_refusal(gid: &str) -> Option<String> {
    let dir = gid.ends_with('/');
    let path = gid.trim_end_matches('/');
    if !safe_path(path) {
        return Some(
            "unsafe path (empty, absolute, `..`, NUL, or a name past 255 bytes)".to_string(),
        );
    }
    if !dir && is_conflict_copy(path) && !looks_like_conflict_copy(path) {
        return Some(
            "under .conflicts/ but not named as a conflict copy `<name> (from <device> <date>)`"
                .to_string(),
        );
    }
    None
}

/// True for `… (from <device> YYYY-MM-DD HH-MM-SS)[ N][.ext]`, the names
/// `conflict_copy_path` and the copy numbering make.
fn looks_like_conflict_copy(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some(close) = name.rfind(')') else {
        return false;
    };
    let head = &name[..close];
    let Some(date) = head.get(head.len().saturating_sub(19)..) else {
        return false;
    };
    head.contains(" (from ")
        && chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H-%M-%S").is_ok()
}

/// The longest symlink target Linux stores (PATH_MAX less its NUL).
const LINK_MAX: usize = 4095;

/// A remote file version made safe, or why it is refused.
fn check_file(
    mut v: FileValue,
    records: &BTreeMap<String, Option<BlobInfo>>,
) -> Result<FileValue, String> {
    if let Some(target) = &v.target {
        // Kept verbatim, absolute ones too: the catalog never follows a link, so a target
        // cannot make anything land outside the mount; the reader's kernel resolves it.
        if target.is_empty() || target.contains('\0') || target.len() > LINK_MAX {
            return Err(format!(
                "a symlink target must be 1 to {LINK_MAX} bytes without NUL ({} bytes given)",
                target.len()
            ));
        }
        v.hash = EMPTY_HASH.to_string();
        v.size = 0;
        v.chunk_root = None;
        v.mode &= 0o777;
        return Ok(v);
    }
    if !is_valid_hash(&v.hash) {
        return Err(format!("{:?} is not a blob hash (64 hex digits)", v.hash));
    }
    if v.mode & SPECIAL_BITS != 0 {
        tracing::info!(
            hash = v.hash,
            mode = format!("{:o}", v.mode),
            "setuid/setgid/sticky bits of a remote entry stripped"
        );
        v.mode &= !SPECIAL_BITS;
    }
    if v.hash == EMPTY_HASH {
        v.size = 0;
        return Ok(v);
    }
    let key = content::chunks_key(&v.hash);
    let Some(info) = records.get(&v.hash).cloned().flatten() else {
        return Err(format!("{key} is missing or unreadable in the store"));
    };
    if info.hash != v.hash || info.chunks.len() as u64 != chunk_count(info.size) {
        return Err(format!("{key} does not describe this blob"));
    }
    if info.chunks.len() == 1 && info.chunks[0] != v.hash {
        return Err(format!("{key}: the only chunk's hash is not the blob's"));
    }
    if let Some(root) = v.chunk_root.as_deref().filter(|r| *r != info.chunk_root()) {
        return Err(format!(
            "{key} does not match the chunk root {root} the entry carries (altered in the store)"
        ));
    }
    if v.size != info.size {
        tracing::warn!(
            hash = v.hash,
            claimed = v.size,
            size = info.size,
            "a remote entry's size is not its blob's: the blob's is taken"
        );
        v.size = info.size;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_copy_names_are_recognised() {
        let p = super::super::conflict_copy_path("a/song.mp3", "laptop", 1_700_000_000_000);
        assert!(looks_like_conflict_copy(&p), "{p}");
        assert!(looks_like_conflict_copy(&p.replace(").mp3", ") 2.mp3")));
        for planted in [
            ".conflicts/evil.sh",
            ".conflicts/a (from x).mp3",
            ".conflicts/x)",
        ] {
            assert!(!looks_like_conflict_copy(planted), "{planted}");
        }
    }

    #[test]
    fn unsafe_and_planted_paths_are_refused() {
        for p in [
            "../x",
            "/etc/passwd",
            "a/\0b",
            &"n".repeat(300),
            ".conflicts/evil.sh",
        ] {
            assert!(path_refusal(p).is_some(), "{p:?}");
        }
        assert!(path_refusal("a/b.mp3").is_none());
        assert!(path_refusal(".conflicts/").is_none());
    }

    #[test]
    fn symlink_targets_are_kept_verbatim_or_refused() {
        let link = |t: &str| FileValue {
            hash: "not a hash".into(),
            size: 77,
            mtime_ns: 1,
            mode: 0o4777,
            by: "x".into(),
            chunk_root: Some("r".into()),
            target: Some(t.into()),
        };
        let none = BTreeMap::new();
        let v = check_file(link("/etc/passwd"), &none).unwrap();
        assert_eq!(
            v.target.as_deref(),
            Some("/etc/passwd"),
            "absolute kept as it is"
        );
        assert_eq!((v.hash.as_str(), v.size, v.mode), (EMPTY_HASH, 0, 0o777));
        assert_eq!(v.chunk_root, None);
        assert!(check_file(link("../../x"), &none).is_ok(), "relative kept");
        for bad in ["", "a\0b", &"t".repeat(LINK_MAX + 1)] {
            assert!(check_file(link(bad), &none).is_err(), "{bad:?}");
        }
    }
}
