//! The per-path decision of the namespace apply, pure (like the merge beside it): from what
//! the merge resolved for a path, what the catalog holds there, what this device last
//! agreed on (the shadow) and whether the file is open with unsaved writes, it says who
//! keeps the name and which versions are kept as conflict copies. `apply.rs` carries the
//! decision out on the catalog.
//!
//! The rules: a local write not exported yet (it differs from the shadow, or is still
//! being written) is newer than anything this device has seen, so it keeps the name and
//! a different remote version becomes a copy; otherwise the merged version takes the
//! name. Every version that lost the merge to a concurrent one becomes a copy. Paths
//! under `.conflicts/` never produce copies themselves.
//! Must never: do I/O, or give a local write that was not exported to anything else.

use super::FileValue;
use crate::sync::clock::Hlc;

/// Everything the decision looks at, for one path.
#[derive(Debug, Clone)]
pub struct PathFacts<'a> {
    /// The merged version (None: deleted, or never there).
    pub resolved: Option<&'a FileValue>,
    /// The file at the path in the catalog (None: nothing, a folder, or a local-only file).
    pub here: Option<&'a FileValue>,
    /// What this device last exported or applied at the path.
    pub agreed: Option<&'a FileValue>,
    /// The file here is open with unsaved writes (no meaning without one).
    pub busy: bool,
    /// The path is under `.conflicts/`.
    pub is_copy: bool,
    /// Versions that lost the merge to a concurrent one in this log (not in an earlier).
    pub newly_lost: &'a [(Hlc, FileValue)],
}

/// What happens at the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtName {
    /// It already holds the merged version (or stays empty).
    Leave,
    /// The merged version is written there.
    Put(FileValue),
    /// The file there is removed (deleted elsewhere).
    Remove,
    /// A local write not exported yet keeps it; the next capture sends it as newer.
    KeepLocal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub at_name: AtName,
    /// Versions that lost the merge, each kept as a conflict copy.
    pub copies: Vec<(Hlc, FileValue)>,
    /// The remote version, kept as a conflict copy because a local write keeps the name.
    pub remote_aside: Option<FileValue>,
}

/// Same bytes (or link target) and mode (the mtime may differ).
pub fn same_content(a: &FileValue, b: &FileValue) -> bool {
    a.hash == b.hash && a.size == b.size && a.mode == b.mode && a.target == b.target
}

/// Same bytes, mode and mtime.
pub fn same_as(a: &FileValue, b: &FileValue) -> bool {
    same_content(a, b) && a.mtime_ns == b.mtime_ns
}

pub fn decide(f: &PathFacts<'_>) -> Decision {
    let copies = if f.is_copy {
        Vec::new()
    } else {
        f.newly_lost.to_vec()
    };
    let already = matches!((f.resolved, f.here), (Some(v), Some(h)) if same_content(v, h));
    let busy = f.busy && f.here.is_some();
    let pending_local = busy
        || !already
            && match (f.here, f.agreed) {
                (Some(h), Some(a)) => !same_content(a, h),
                (Some(_), None) => true,
                (None, _) => false,
            };
    if pending_local {
        let remote_aside = match (f.resolved, f.here) {
            (Some(v), Some(h)) if !same_content(v, h) && !f.is_copy => Some(v.clone()),
            _ => None,
        };
        return Decision {
            at_name: AtName::KeepLocal,
            copies,
            remote_aside,
        };
    }
    let at_name = match (f.resolved, f.here) {
        (Some(v), Some(h)) if same_as(v, h) => AtName::Leave,
        (Some(v), _) => AtName::Put(v.clone()),
        (None, Some(_)) => AtName::Remove,
        (None, None) => AtName::Leave,
    };
    Decision {
        at_name,
        copies,
        remote_aside: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A file version, or (h = 3, 4) a symlink to one of two targets.
    fn value() -> impl Strategy<Value = FileValue> {
        (0..5u8, 0..2i64, prop::bool::ANY, 0..2u8).prop_map(|(h, mtime, exec, by)| {
            let link = h >= 3;
            FileValue {
                hash: if link { "h0".into() } else { format!("h{h}") },
                size: if link { 0 } else { h as u64 * 10 },
                mtime_ns: mtime,
                mode: if link || exec { 0o755 } else { 0o644 },
                by: format!("dev{by}"),
                chunk_root: None,
                target: link.then(|| format!("../t{h}")),
            }
        })
    }

    fn lost() -> impl Strategy<Value = Vec<(Hlc, FileValue)>> {
        prop::collection::vec(
            (1..100u64, value()).prop_map(|(ms, v)| {
                (
                    Hlc {
                        wall_ms: ms,
                        counter: 0,
                        device: v.by.clone(),
                    },
                    v,
                )
            }),
            0..3,
        )
    }

    /// What the catalog holds at the name once the decision is carried out.
    fn after(here: Option<&FileValue>, d: &Decision) -> Option<FileValue> {
        match &d.at_name {
            AtName::Leave | AtName::KeepLocal => here.cloned(),
            AtName::Put(v) => Some(v.clone()),
            AtName::Remove => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A local write not exported yet is never overwritten or removed, and a
        /// different remote version is kept beside it.
        #[test]
        fn a_local_write_not_exported_keeps_the_name(
            resolved in prop::option::of(value()), here in value(),
            agreed in prop::option::of(value()), busy in prop::bool::ANY,
            is_copy in prop::bool::ANY, newly_lost in lost(),
        ) {
            let pending = busy || agreed.as_ref().is_none_or(|a| !same_content(a, &here));
            let already = resolved.as_ref().is_some_and(|v| same_content(v, &here));
            prop_assume!(pending && (busy || !already));
            let d = decide(&PathFacts {
                resolved: resolved.as_ref(), here: Some(&here), agreed: agreed.as_ref(),
                busy, is_copy, newly_lost: &newly_lost,
            });
            prop_assert_eq!(&d.at_name, &AtName::KeepLocal);
            if let Some(v) = &resolved {
                prop_assert!(same_content(v, &here) || is_copy || d.remote_aside.as_ref() == Some(v));
            }
        }

        /// No version is lost: the merged one ends at the name or aside, every loser of the
        /// merge becomes a copy (outside `.conflicts/`), and what was here stays unless
        /// this device had exported it (then the store holds it).
        #[test]
        fn no_version_is_lost(
            resolved in prop::option::of(value()), here in prop::option::of(value()),
            agreed in prop::option::of(value()), busy in prop::bool::ANY,
            is_copy in prop::bool::ANY, newly_lost in lost(),
        ) {
            let f = PathFacts {
                resolved: resolved.as_ref(), here: here.as_ref(), agreed: agreed.as_ref(),
                busy, is_copy, newly_lost: &newly_lost,
            };
            let d = decide(&f);
            let now = after(here.as_ref(), &d);
            if let Some(v) = &resolved {
                let at_name = now.as_ref().is_some_and(|n| same_content(n, v));
                prop_assert!(at_name || d.remote_aside.as_ref() == Some(v) || is_copy,
                    "the merged version went nowhere: {:?}", d);
            }
            if is_copy {
                prop_assert!(d.copies.is_empty() && d.remote_aside.is_none());
            } else {
                prop_assert_eq!(&d.copies, &newly_lost);
            }
            if let Some(h) = &here {
                let kept = now.as_ref().is_some_and(|n| same_content(n, h));
                let exported = agreed.as_ref().is_some_and(|a| same_content(a, h));
                prop_assert!(kept || exported || resolved.as_ref().is_some_and(|v| same_content(v, h)),
                    "a local version that was never sent was replaced: {:?}", d);
            }
        }

        /// Deciding again on the result (the shadow now holding the merged version)
        /// changes nothing at the name and makes no new copy of a loser.
        #[test]
        fn the_decision_is_idempotent(
            resolved in prop::option::of(value()), here in prop::option::of(value()),
            agreed in prop::option::of(value()), is_copy in prop::bool::ANY,
            newly_lost in lost(),
        ) {
            let d = decide(&PathFacts {
                resolved: resolved.as_ref(), here: here.as_ref(), agreed: agreed.as_ref(),
                busy: false, is_copy, newly_lost: &newly_lost,
            });
            let now = after(here.as_ref(), &d);
            let again = decide(&PathFacts {
                resolved: resolved.as_ref(), here: now.as_ref(), agreed: resolved.as_ref(),
                busy: false, is_copy, newly_lost: &[],
            });
            prop_assert!(matches!(again.at_name, AtName::Leave | AtName::KeepLocal), "{:?}", again);
            prop_assert!(again.copies.is_empty());
            if d.at_name != AtName::KeepLocal {
                prop_assert_eq!(again.at_name, AtName::Leave);
            }
        }
    }
}
