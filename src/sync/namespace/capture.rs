//! Capture: diffs the live catalog against the shadow (what this device last exported
//! or applied) and queues a log of the differences. A file goes out only once its blob is
//! in the store; local-only names never do. Must never export a change this device
//! received from another as its own.

use super::*;

impl NamespaceSync<'_> {
    /// Diffs the catalog against the shadow and queues a log of the differences.
    pub(super) fn capture(&mut self, summary: &mut NsSummary) -> Result<(), NamespaceError> {
        let shadow = self.shadow()?;
        let files: BTreeMap<String, Node> = self
            .catalog
            .files()
            .into_iter()
            .filter(|(p, _)| !self.is_local_only_path(p))
            .collect();
        let mut clock = self.clock()?;
        let mut changes = Vec::new();
        let mut new_shadow: Vec<(String, Option<FileValue>)> = Vec::new();
        let mut states: BTreeMap<String, RowState> = BTreeMap::new();
        for (path, node) in &files {
            if shadow.get(path).is_some_and(|s| s.same_as(node)) {
                continue;
            }
            if self.busy.is_some_and(|b| b(node.ino)) {
                // Still being written (the app's mkstemp file, a WAV being rendered):
                // its bytes are not final; it goes out after the close.
                summary.being_written += 1;
                continue;
            }
            let v = self.value_of(node)?;
            if !self.uploaded(&v)? {
                summary.waiting_for_upload += 1;
                continue;
            }
            let mut st = self.row_state(path)?;
            let rid = RowId::new(NS_TABLE, path);
            let mut m = MergeState::default();
            m.rows.insert(rid.clone(), st.clone());
            if !m.is_alive(&rid) {
                let c = Change {
                    row: rid.clone(),
                    event: Event::Live {
                        clock: clock.tick(now_ms()),
                    },
                };
                st.apply(&c.event);
                changes.push(c);
            }
            let c = Change {
                row: rid,
                event: Event::Set {
                    column: FILE_FIELD.into(),
                    value: serde_json::to_value(&v).expect("encodes"),
                    clock: clock.tick(now_ms()),
                    replaces: st.frontier(FILE_FIELD),
                },
            };
            st.apply(&c.event);
            changes.push(c);
            states.insert(path.clone(), st);
            new_shadow.push((path.clone(), Some(v)));
            summary.sent_files += 1;
        }
        for path in shadow.keys().filter(|p| !files.contains_key(*p)) {
            // A delete is the value null, with the versions it replaces: a version written
            // elsewhere without seeing the delete is then concurrent with it, and kept as
            // a conflict copy if the delete wins (nothing is lost).
            let mut st = self.row_state(path)?;
            let c = Change {
                row: RowId::new(NS_TABLE, path),
                event: Event::Set {
                    column: FILE_FIELD.into(),
                    // Not JSON null: the merge state's storage reads a null version
                    // back as "superseded".
                    value: serde_json::json!({"deleted": true}),
                    clock: clock.tick(now_ms()),
                    replaces: st.frontier(FILE_FIELD),
                },
            };
            st.apply(&c.event);
            changes.push(c);
            states.insert(path.clone(), st);
            new_shadow.push((path.clone(), None));
            summary.sent_deletes += 1;
        }
        let dir_changes = self.capture_dirs(&mut clock, &mut changes, &mut states, summary)?;
        if changes.is_empty() {
            return Ok(());
        }
        let tx = crate::sync::state::write_tx(&self.db)?;
        StreamState::new(&tx, &NAMESPACE_TABLES).queue(&changes, MAX_CHANGES_PER_LOG)?;
        for (p, s) in &states {
            Self::put_row_state(&tx, p, s)?;
        }
        for (p, v) in &new_shadow {
            Self::put_shadow(&tx, p, v.as_ref())?;
        }
        StreamState::new(&tx, &NAMESPACE_TABLES).save_clock(&clock)?;
        for (d, present) in &dir_changes {
            Self::put_dir_shadow(&tx, d, *present)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn dir_shadow(&self) -> Result<BTreeSet<String>, NamespaceError> {
        let mut stmt = self.db.prepare("SELECT path FROM nsync_dirs")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(super) fn put_dir_shadow(
        conn: &Connection,
        path: &str,
        present: bool,
    ) -> Result<(), NamespaceError> {
        if present {
            conn.execute("INSERT OR IGNORE INTO nsync_dirs(path) VALUES (?1)", [path])?;
        } else {
            conn.execute("DELETE FROM nsync_dirs WHERE path = ?1", [path])?;
        }
        Ok(())
    }

    /// Every folder of the catalog (the root excluded), by path.
    fn local_dirs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![(ROOT_INO, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for c in self.catalog.children(dir).unwrap_or_default() {
                if c.is_dir() {
                    let p = if prefix.is_empty() {
                        c.name.clone()
                    } else {
                        format!("{prefix}/{}", c.name)
                    };
                    out.insert(p.clone());
                    stack.push((c.ino, p));
                }
            }
        }
        out
    }

    /// Adds the folders created or removed since the last capture to `changes`; returns
    /// the shadow updates to commit with them.
    fn capture_dirs(
        &self,
        clock: &mut Clock,
        changes: &mut Vec<Change>,
        states: &mut BTreeMap<String, RowState>,
        summary: &mut NsSummary,
    ) -> Result<Vec<(String, bool)>, NamespaceError> {
        let here = self.local_dirs();
        let known = self.dir_shadow()?;
        let mut out = Vec::new();
        let added = here.difference(&known).map(|d| (d, true));
        let removed = known.difference(&here).map(|d| (d, false));
        for (d, present) in added.chain(removed) {
            let gid = format!("{d}/");
            let mut st = self.row_state(&gid)?;
            let rid = RowId::new(NS_TABLE, &gid);
            let value = if present {
                serde_json::json!({"dir": true, "by": self.cfg.device_name})
            } else {
                serde_json::json!({"deleted": true})
            };
            let c = Change {
                row: rid,
                event: Event::Set {
                    column: FILE_FIELD.into(),
                    value,
                    clock: clock.tick(now_ms()),
                    replaces: st.frontier(FILE_FIELD),
                },
            };
            st.apply(&c.event);
            changes.push(c);
            states.insert(gid, st);
            out.push((d.clone(), present));
            summary.sent_dirs += 1;
        }
        Ok(out)
    }

    pub(super) fn is_local_only_path(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.cfg.is_local_only(name)
    }
}
