//! Apply: merges one remote namespace log and brings the catalog to the merged state of
//! its paths. Who keeps each name and which versions become conflict copies is decided
//! by `decide.rs` (pure); this file carries the decision out on the catalog and writes
//! the bookkeeping in one transaction. Must never overwrite a local write that was not
//! exported yet, or lose a version (it becomes a conflict copy).

use super::decide::{decide, AtName, PathFacts};
use super::*;

impl NamespaceSync<'_> {
    /// Merges one remote log and brings the catalog to the merged state of its paths.
    fn apply_log(
        &mut self,
        key: &str,
        log: &LogFile,
        cursor: Option<u64>,
        summary: &mut NsSummary,
        touched: &mut Vec<Touched>,
        records: &mut Vec<ConflictRecord>,
    ) -> Result<(), NamespaceError> {
        let rules = Rules::none();
        let admitted = self.admit(key, log, &mut summary.refused)?;
        let mut clock = self.clock()?;
        let mut m = MergeState::default();
        let mut paths = BTreeSet::new();
        for c in &admitted {
            if !m.rows.contains_key(&c.row) {
                m.rows.insert(c.row.clone(), self.row_state(&c.row.gid)?);
            }
            paths.insert(c.row.gid.clone());
        }
        let before: BTreeMap<String, BTreeSet<Hlc>> = paths
            .iter()
            .map(|p| (p.clone(), lost_clocks(&m, &rules, p)))
            .collect();
        for c in &admitted {
            clock.observe(c.event.clock());
            m.apply(c);
        }
        let shadow = self.shadow()?;
        // The catalog is written through its own connection to the same state.db, so our
        // bookkeeping is written after it, in one transaction; the "applying" mark makes
        // the next cycle replay this log (idempotent) before it captures, if a crash
        // comes in between.
        Self::set_meta(
            &self.db,
            "applying",
            &Stream::NAMESPACE.log_key(&log.device_id, log.seq),
        )?;
        // Each entry is still its own catalog transaction, but the disk is waited for
        // once, before the cursor moves (catalog/batch.rs).
        let relaxed = self.catalog.relax_commits()?;
        let mut new_shadow: Vec<(String, Option<FileValue>)> = Vec::new();
        let mut derived: Vec<(String, RowState)> = Vec::new();
        for path in paths.iter().filter(|p| !p.ends_with('/')) {
            if self.is_local_only_path(path) || !safe_path(path) {
                tracing::warn!(
                    path,
                    "a remote namespace entry was ignored (local-only name or unsafe path)"
                );
                continue;
            }
            let resolved: Option<FileValue> = m
                .resolve(&rules, &RowId::new(NS_TABLE, path))
                .and_then(|row| row.get(FILE_FIELD).cloned())
                .and_then(|v| serde_json::from_value(v).ok());
            let local = match self.catalog.resolve(path) {
                Ok(n) if !n.is_dir() && !n.local_only => Some(n),
                _ => None,
            };
            let agreed = shadow.get(path);
            let busy = local
                .as_ref()
                .is_some_and(|n| self.busy.is_some_and(|b| b(n.ino)));
            let here = local.as_ref().map(|n| self.value_of(n)).transpose()?;
            // Versions of this path that lost to a concurrent one (in this log, not an
            // earlier one: those have their copies already).
            let newly_lost: Vec<(Hlc, FileValue)> = lost_versions(&m, &rules, path)
                .into_iter()
                .filter(|(c, _)| !before[path].contains(c))
                .collect();
            let d = decide(&PathFacts {
                resolved: resolved.as_ref(),
                here: here.as_ref(),
                agreed,
                busy,
                is_copy: is_conflict_copy(path),
                newly_lost: &newly_lost,
            });
            for (lost_clock, lost) in &d.copies {
                let copy = match self.derive_copy(path, lost, lost_clock, &paths, touched)? {
                    Some(DerivedCopy { copy, state, value }) => {
                        new_shadow.push((copy.clone(), value));
                        derived.push((copy.clone(), state));
                        copy
                    }
                    None => self.keep_copy(path, lost, lost_clock.wall_ms, touched)?,
                };
                summary.conflict_copies += 1;
                records.push(file_conflict(path, resolved.as_ref(), lost, &copy, "written on two devices without either seeing the other: the later keeps the name"));
            }
            if let Some(v) = &d.remote_aside {
                let copy = self.keep_copy(path, v, now_ms(), touched)?;
                summary.conflict_copies += 1;
                records.push(file_conflict(path, here.as_ref(), v, &copy, "changed here while the other device's version arrived: this device's newer write keeps the name"));
            }
            match &d.at_name {
                // The shadow takes the merged value: with a local write kept, the next
                // capture sends what is here (or its delete) as a newer edit, whatever
                // the user does meanwhile.
                AtName::Leave | AtName::KeepLocal => {}
                AtName::Put(v) => {
                    match self.put_file(path, v) {
                        Ok(n) => {
                            touched.push(Touched {
                                parent: n.parent,
                                name: n.name.clone(),
                                ino: Some(n.ino),
                            });
                            summary.received_files += 1;
                        }
                        Err(CatalogError::Db(e)) => return Err(CatalogError::Db(e).into()),
                        Err(e) => {
                            // A folder here has the file's name (or a file has its folder's):
                            // keep the remote file as a copy rather than stall every cycle.
                            let copy = if is_conflict_copy(path) {
                                None
                            } else {
                                self.keep_copy(path, v, now_ms(), touched).ok()
                            };
                            tracing::warn!(path, error = %e, ?copy, "a remote file does not fit here");
                            if let Some(copy) = copy {
                                summary.conflict_copies += 1;
                                records.push(file_conflict(
                                    path,
                                    None,
                                    v,
                                    &copy,
                                    &format!(
                                        "the other device's file cannot take its place here ({e})"
                                    ),
                                ));
                            }
                            continue;
                        }
                    }
                }
                AtName::Remove => {
                    if let Some(n) = self.catalog.remove_file(path)? {
                        touched.push(Touched {
                            parent: n.parent,
                            name: n.name.clone(),
                            ino: Some(n.ino),
                        });
                    }
                    summary.received_deletes += 1;
                }
            }
            new_shadow.push((path.clone(), resolved));
        }
        let dirs = self.apply_dirs(&m, &rules, &paths, summary, touched);
        relaxed.durable()?;
        let tx = crate::sync::state::write_tx(&self.db)?;
        for path in &paths {
            Self::put_row_state(&tx, path, &m.rows[&RowId::new(NS_TABLE, path)])?;
        }
        for (path, state) in &derived {
            Self::put_row_state(&tx, path, state)?;
        }
        for (d, present) in &dirs {
            Self::put_dir_shadow(&tx, d, *present)?;
        }
        for (p, v) in &new_shadow {
            Self::put_shadow(&tx, p, v.as_ref())?;
        }
        let stream = StreamState::new(&tx, &NAMESPACE_TABLES);
        if let Some(seq) = cursor {
            stream.set_cursor(&log.device_id, seq)?;
        }
        stream.save_clock(&clock)?;
        stream.remove_meta("applying")?;
        tx.commit()?;
        Ok(())
    }

    /// The conflict copy of a version that lost to a concurrent one, as every device that
    /// sees both versions derives it: same path (from the loser's device and clock), and a
    /// row state at the loser's own clock. No device exports it, so a delete or a restore
    /// of the copy on one device (a newer edit of that row) removes it everywhere, instead
    /// of racing the other devices' exports of the same copy. A copy deleted before this
    /// device derived it stays deleted. None when the name is taken here (or the copy is in
    /// this very log): then the copy goes to a free name and is exported as usual.
    fn derive_copy(
        &self,
        path: &str,
        v: &FileValue,
        lost_clock: &Hlc,
        in_log: &BTreeSet<String>,
        touched: &mut Vec<Touched>,
    ) -> Result<Option<DerivedCopy>, NamespaceError> {
        let copy = conflict_copy_path(path, &v.by, lost_clock.wall_ms);
        if in_log.contains(&copy) {
            return Ok(None);
        }
        let rid = RowId::new(NS_TABLE, &copy);
        let mut state = self.row_state(&copy)?;
        state.apply(&Event::Live {
            clock: lost_clock.clone(),
        });
        state.apply(&Event::Set {
            column: FILE_FIELD.into(),
            value: serde_json::to_value(v).expect("encodes"),
            clock: lost_clock.clone(),
            replaces: Vec::new(),
        });
        let mut m = MergeState::default();
        m.rows.insert(rid.clone(), state.clone());
        let value: Option<FileValue> = m
            .resolve(&Rules::none(), &rid)
            .and_then(|row| row.get(FILE_FIELD).cloned())
            .and_then(|v| serde_json::from_value(v).ok());
        match (&value, self.catalog.resolve(&copy)) {
            (Some(want), Ok(n)) if want.same_content(&n) => {}
            (Some(_), Ok(_)) => return Ok(None),
            (Some(want), Err(CatalogError::NotFound)) => {
                let n = self.put_file(&copy, want)?;
                tracing::warn!(path, copy = %copy, "conflicting versions: one kept as a conflict copy");
                touched.push(Touched {
                    parent: n.parent,
                    name: n.name,
                    ino: Some(n.ino),
                });
            }
            (Some(_), Err(e)) => return Err(e.into()),
            (None, _) => {
                tracing::info!(path, copy = %copy, "conflict copy already removed on another device");
            }
        }
        Ok(Some(DerivedCopy { copy, state, value }))
    }

    /// Puts `v` at its conflict-copy path (a free name), unless an identical copy is
    /// already there. The copy is not in the shadow: the next capture exports it, so
    /// every device ends up with it.
    fn keep_copy(
        &self,
        path: &str,
        v: &FileValue,
        wall_ms: u64,
        touched: &mut Vec<Touched>,
    ) -> Result<String, NamespaceError> {
        let base = conflict_copy_path(path, &v.by, wall_ms);
        let mut candidate = base.clone();
        for i in 2.. {
            match self.catalog.resolve(&candidate) {
                Ok(n) if v.same_content(&n) => return Ok(candidate),
                Ok(_) => {
                    candidate = match base.rsplit_once('.') {
                        Some((s, e)) if !s.ends_with(CONFLICTS_DIR) => format!("{s} {i}.{e}"),
                        _ => format!("{base} {i}"),
                    }
                }
                Err(CatalogError::NotFound) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let n = self.put_file(&candidate, v)?;
        tracing::warn!(path, copy = %candidate, "conflicting versions: one kept as a conflict copy");
        touched.push(Touched {
            parent: n.parent,
            name: n.name,
            ino: Some(n.ino),
        });
        Ok(candidate)
    }

    /// Brings the folders named in a log to their merged state, deepest first (after the
    /// files, so a removed folder is empty by then). A removed folder that still holds
    /// something here stays, and the next capture sends it back as present. Returns the
    /// folder shadow updates.
    fn apply_dirs(
        &self,
        m: &MergeState,
        rules: &Rules,
        paths: &BTreeSet<String>,
        summary: &mut NsSummary,
        touched: &mut Vec<Touched>,
    ) -> Vec<(String, bool)> {
        let mut dirs: Vec<&String> = paths.iter().filter(|p| p.ends_with('/')).collect();
        dirs.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        let mut out = Vec::new();
        for gid in dirs {
            let d = gid.trim_end_matches('/');
            if !safe_path(d) {
                continue;
            }
            let present = m
                .resolve(rules, &RowId::new(NS_TABLE, gid))
                .and_then(|row| row.get(FILE_FIELD).cloned())
                .is_some_and(|v| v.get("dir") == Some(&serde_json::Value::Bool(true)));
            let local = self.catalog.resolve(d).ok().filter(|n| n.is_dir());
            match (present, local) {
                (true, None) => match ensure_dirs(self.catalog, d) {
                    Ok(ino) => {
                        if let Ok(n) = self.catalog.get(ino) {
                            touched.push(Touched {
                                parent: n.parent,
                                name: n.name,
                                ino: Some(n.ino),
                            });
                        }
                        summary.received_dirs += 1;
                    }
                    Err(e) => {
                        tracing::warn!(path = d, error = %e, "a remote folder does not fit here");
                        continue;
                    }
                },
                (false, Some(n)) => {
                    let empty = self.catalog.children(n.ino).is_ok_and(|c| c.is_empty());
                    if empty && self.catalog.rmdir(n.parent, &n.name).is_ok() {
                        touched.push(Touched {
                            parent: n.parent,
                            name: n.name,
                            ino: Some(n.ino),
                        });
                        summary.received_dirs += 1;
                    }
                }
                _ => {}
            }
            out.push((d.to_string(), present));
        }
        out
    }
}

/// A conflict copy at its derived path, with its row state and resolved value (None: it
/// was removed already).
struct DerivedCopy {
    copy: String,
    state: RowState,
    value: Option<FileValue>,
}

fn lost_versions(m: &MergeState, rules: &Rules, path: &str) -> Vec<(Hlc, FileValue)> {
    let Some(s) = m.rows.get(&RowId::new(NS_TABLE, path)) else {
        return Vec::new();
    };
    s.conflicts(rules, NS_TABLE)
        .into_iter()
        .filter(|c| c.column == FILE_FIELD)
        .filter_map(|c| {
            let lost: FileValue = serde_json::from_value(c.lost).ok()?;
            let kept: Option<FileValue> = serde_json::from_value(c.kept).ok();
            // Same bytes on both sides is no conflict worth a copy.
            let same = kept
                .as_ref()
                .is_some_and(|k| k.hash == lost.hash && k.target == lost.target);
            (!same).then_some((c.lost_clock, lost))
        })
        .collect()
}

fn lost_clocks(m: &MergeState, rules: &Rules, path: &str) -> BTreeSet<Hlc> {
    lost_versions(m, rules, path)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

fn file_conflict(
    path: &str,
    kept: Option<&FileValue>,
    lost: &FileValue,
    copy: &str,
    why: &str,
) -> ConflictRecord {
    ConflictRecord {
        at: chrono::Utc::now().to_rfc3339(),
        kind: "file".into(),
        table: NS_TABLE.into(),
        row: path.into(),
        local_id: None,
        column: Some(FILE_FIELD.into()),
        kept: serde_json::to_value(kept).unwrap_or_default(),
        lost: serde_json::json!({"hash": lost.hash, "size": lost.size, "copy": copy}),
        kept_by: kept.map(|k| k.by.clone()),
        lost_by: Some(lost.by.clone()),
        why: why.into(),
    }
}

/// The namespace as a stream's receiver.
pub(super) struct NsReceiver<'n, 'a> {
    pub(super) ns: &'n mut NamespaceSync<'a>,
    pub(super) summary: &'n mut NsSummary,
    pub(super) touched: Vec<Touched>,
    pub(super) records: Vec<ConflictRecord>,
}

impl transport::Receiver for NsReceiver<'_, '_> {
    type Error = NamespaceError;

    fn state(&self) -> StreamState<'_> {
        self.ns.stream()
    }

    fn apply(
        &mut self,
        key: &str,
        _device: &str,
        cursor: Option<u64>,
        log: &LogFile,
    ) -> Result<(), NamespaceError> {
        self.ns.apply_log(
            key,
            log,
            cursor,
            self.summary,
            &mut self.touched,
            &mut self.records,
        )?;
        self.summary.logs_applied += 1;
        Ok(())
    }
}
