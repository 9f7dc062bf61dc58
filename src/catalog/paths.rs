//! Path-based access for the sync, which names files by their path relative to the
//! mount root ("2026-02-10_song/song_v1.mp3"), identical on every machine. A file with
//! hard links is listed once per name: on another machine it becomes two paths of one
//! blob. Symlinks are listed beside files; special files (FIFOs, sockets, devices) and
//! local-only files never are.

use super::node::{AttrChange, CatalogError, CatalogResult, Kind, NewNode, Node, ROOT_INO};
use super::Catalog;

impl Catalog {
    /// The entry at `path` ("" is the root).
    pub fn resolve(&self, path: &str) -> CatalogResult<Node> {
        let ix = self.index();
        let mut cur = ROOT_INO;
        let mut reached = (ROOT_INO, String::new());
        for part in path.split('/').filter(|p| !p.is_empty()) {
            reached = (cur, part.to_string());
            cur = ix.ino_at(cur, part)?;
        }
        if cur == ROOT_INO {
            return ix.node(ROOT_INO);
        }
        Ok(ix.entry(reached.0, &reached.1, cur))
    }

    /// Every file and symlink with its path, local-only files excluded (they never leave
    /// this machine), in path order.
    pub fn files(&self) -> Vec<(String, Node)> {
        let ix = self.index();
        let mut out = Vec::new();
        let mut stack = vec![(ROOT_INO, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for (name, &ino) in ix.children.get(&dir).into_iter().flatten() {
                let n = &ix.nodes[&ino];
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                match n.kind {
                    Kind::Dir => stack.push((n.ino, path)),
                    Kind::File | Kind::Symlink if !n.local_only => {
                        out.push((path, ix.entry(dir, name, ino)))
                    }
                    _ => {}
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Makes `path` a file with this content (a remote change applied by the sync):
    /// creates missing parent directories, replaces an existing file's content (or a
    /// symlink that was at the name). The owner of new entries is the owner of the mount
    /// root.
    pub fn upsert_file(
        &self,
        path: &str,
        hash: &str,
        size: u64,
        mtime_ns: i64,
        mode: u32,
    ) -> CatalogResult<Node> {
        let (parent, name) = self.parent_for(path)?;
        match self.lookup(parent, name) {
            Ok(n) if n.kind == Kind::File => {
                self.set_attr(
                    n.ino,
                    AttrChange {
                        mode: Some(mode),
                        ..AttrChange::default()
                    },
                )?;
                self.set_content(n.ino, Some(hash), size, mtime_ns, false)
            }
            found => {
                self.clear_name(parent, name, found)?;
                // Created whole, in one step: a reader in between (the folder mode's
                // pass, a stat) must never see the hash with a size of 0.
                let new = NewNode {
                    mode,
                    hash: Some(hash),
                    size,
                    mtime_ns: Some(mtime_ns),
                    ..self.owned_by_root()?
                };
                self.create_node(parent, name, Kind::File, &new)
            }
        }
    }

    /// Makes `path` a symlink to `target` (a remote change applied by the sync), in
    /// place of a file or another link at the name.
    pub fn upsert_symlink(&self, path: &str, target: &str, mtime_ns: i64) -> CatalogResult<Node> {
        let (parent, name) = self.parent_for(path)?;
        let found = self.lookup(parent, name);
        if let Ok(n) = &found {
            if n.target.as_deref() == Some(target) && n.mtime_ns == mtime_ns {
                return Ok(n.clone());
            }
        }
        self.clear_name(parent, name, found)?;
        let new = NewNode {
            mode: 0o777,
            target: Some(target),
            mtime_ns: Some(mtime_ns),
            ..self.owned_by_root()?
        };
        self.create_node(parent, name, Kind::Symlink, &new)
    }

    /// The folder `path` goes in (made, with its missing parents) and its last name.
    fn parent_for<'p>(&self, path: &'p str) -> CatalogResult<(u64, &'p str)> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((name, dirs)) = parts.split_last() else {
            return Err(CatalogError::InvalidName(path.to_string()));
        };
        let mut parent = ROOT_INO;
        for d in dirs {
            parent = match self.lookup(parent, d) {
                Ok(n) if n.is_dir() => n.ino,
                Ok(_) => return Err(CatalogError::NotDir),
                Err(CatalogError::NotFound) => {
                    let new = NewNode {
                        mode: 0o755,
                        ..self.owned_by_root()?
                    };
                    self.create_node(parent, d, Kind::Dir, &new)?.ino
                }
                Err(e) => return Err(e),
            };
        }
        Ok((parent, name))
    }

    /// Frees a name for an entry of another kind: a folder stays (the caller keeps the
    /// remote entry as a conflict copy), anything else is unlinked.
    fn clear_name(&self, parent: u64, name: &str, found: CatalogResult<Node>) -> CatalogResult<()> {
        match found {
            Ok(n) if n.is_dir() => Err(CatalogError::IsDir),
            Ok(_) => self.unlink(parent, name).map(|_| ()),
            Err(CatalogError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A new entry's owner: the owner of the mount root.
    fn owned_by_root(&self) -> CatalogResult<NewNode<'static>> {
        let root = self.get(ROOT_INO)?;
        Ok(NewNode {
            uid: root.uid,
            gid: root.gid,
            ..NewNode::default()
        })
    }

    /// Removes the file at `path` (a remote delete); None if there was none.
    pub fn remove_file(&self, path: &str) -> CatalogResult<Option<Node>> {
        let n = match self.resolve(path) {
            Ok(n) => n,
            Err(CatalogError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if n.is_dir() {
            return Err(CatalogError::IsDir);
        }
        self.unlink(n.parent, &n.name).map(Some)
    }
}
