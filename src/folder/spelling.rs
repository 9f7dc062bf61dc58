//! Which local file stands for which store path in the folder, by the rule of
//! doc/PATHS.md (`paths::names`): a name the folder's file system cannot hold gets its
//! look-alike spelling, and names it would hold as one file (case, Unicode
//! normalisation on macOS and Windows) get ` (2)`, ` (3)`... so every store path has its
//! own local file.
//!
//! Built afresh for each pass from the catalog's paths and the manifest's records. A
//! path the folder holds already keeps the local spelling recorded for it, so a twin
//! arriving later takes the next free spelling and never renames a file on disk. A
//! local file the catalog does not know yet gets the store name its spelling decodes
//! to; if that name already stands for another local file, a ` (2)` of it.
//!
//! Store paths and local paths are both relative to the folder and `/`-separated.
//! Must never: map two local files to one store path, or two store paths to one file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::manifest::Record;
use crate::paths::{names, Style};

pub struct Spelling {
    style: Style,
    to_local: HashMap<String, String>,
    to_store: HashMap<String, String>,
}

impl Spelling {
    /// The spelling of every path in `store_paths` (folders and files) and in `held`.
    pub fn new<'a>(
        style: Style,
        store_paths: impl IntoIterator<Item = &'a str>,
        held: &'a BTreeMap<String, Record>,
    ) -> Spelling {
        let mut by_dir: BTreeMap<(usize, &str), Vec<&str>> = BTreeMap::new();
        for path in store_paths
            .into_iter()
            .chain(held.keys().map(String::as_str))
        {
            let (dir, leaf) = split(path);
            by_dir.entry((depth(dir), dir)).or_default().push(leaf);
        }
        let mut s = Spelling {
            style,
            to_local: HashMap::new(),
            to_store: HashMap::new(),
        };
        // Shallow folders first, so each folder's own spelling is known before its files.
        for ((_, dir), leaves) in by_dir {
            let local_dir = s.local(dir);
            let kept: BTreeMap<String, String> = leaves
                .iter()
                .filter_map(|leaf| {
                    let rec = held.get(&join(dir, leaf))?;
                    let local = rec
                        .local
                        .clone()
                        .unwrap_or_else(|| names::encode(leaf, style));
                    Some((leaf.to_string(), local))
                })
                .collect();
            for (leaf, local_leaf) in names::local_names_keeping(leaves, &kept, style) {
                s.insert(join(dir, &leaf), join(&local_dir, &local_leaf));
            }
        }
        s
    }

    fn insert(&mut self, store: String, local: String) {
        self.to_store.insert(local.clone(), store.clone());
        self.to_local.insert(store, local);
    }

    /// The local path of a store path.
    pub fn local(&self, store: &str) -> String {
        if store.is_empty() {
            return String::new();
        }
        if let Some(l) = self.to_local.get(store) {
            return l.clone();
        }
        let (dir, leaf) = split(store);
        join(&self.local(dir), &names::encode(leaf, self.style))
    }

    /// The local file of a store path under the folder `root`.
    pub fn local_path(&self, root: &Path, store: &str) -> PathBuf {
        let mut p = root.to_path_buf();
        for part in self.local(store).split('/').filter(|s| !s.is_empty()) {
            p.push(part);
        }
        p
    }

    /// The local leaf name of a store path (what the manifest records).
    pub fn local_leaf(&self, store: &str) -> String {
        let local = self.local(store);
        split(&local).1.to_string()
    }

    /// The store path of a local path found in the folder (remembered from then on).
    pub fn store(&mut self, local: &str) -> String {
        if local.is_empty() {
            return String::new();
        }
        if let Some(s) = self.to_store.get(local) {
            return s.clone();
        }
        let (local_dir, local_leaf) = split(local);
        let dir = self.store(local_dir);
        let decoded = names::decode(local_leaf, self.style);
        let mut store = join(&dir, &decoded);
        let mut n = 2;
        while self.to_local.contains_key(&store) {
            // The decoded name stands for another local file already.
            let (stem, ext) = names::split_ext(&decoded);
            store = join(&dir, &format!("{stem} ({n}){ext}"));
            n += 1;
        }
        self.insert(store.clone(), local.to_string());
        store
    }
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn depth(dir: &str) -> usize {
    if dir.is_empty() {
        0
    } else {
        dir.matches('/').count() + 1
    }
}

fn join(dir: &str, leaf: &str) -> String {
    if dir.is_empty() {
        leaf.to_string()
    } else {
        format!("{dir}/{leaf}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(entries: &[(&str, Option<&str>)]) -> BTreeMap<String, Record> {
        entries
            .iter()
            .map(|(p, local)| {
                let mut r = Record::dir();
                r.local = local.map(str::to_string);
                (p.to_string(), r)
            })
            .collect()
    }

    #[test]
    fn case_twins_get_their_own_files_and_keep_them() {
        let m = Style::MacOs;
        let s = Spelling::new(
            m,
            ["Album", "Album/Take.wav", "Album/take.wav"],
            &BTreeMap::new(),
        );
        assert_eq!(s.local("Album/Take.wav"), "Album/Take.wav");
        assert_eq!(s.local("Album/take.wav"), "Album/take (2).wav");
        // Later: "take.wav" is held as "take (2).wav"; "Take.wav" was deleted, "TAKE.wav"
        // arrives: nobody on disk is renamed.
        let h = held(&[
            ("Album", Some("Album")),
            ("Album/take.wav", Some("take (2).wav")),
        ]);
        let mut s = Spelling::new(m, ["Album", "Album/take.wav", "Album/TAKE.wav"], &h);
        assert_eq!(s.local("Album/take.wav"), "Album/take (2).wav");
        assert_eq!(s.local("Album/TAKE.wav"), "Album/TAKE.wav");
        assert_eq!(s.store("Album/take (2).wav"), "Album/take.wav");
        assert_eq!(s.store("Album/TAKE.wav"), "Album/TAKE.wav");
    }

    #[test]
    fn a_new_local_file_gets_a_store_name_no_other_file_has() {
        let w = Style::Windows;
        let mut s = Spelling::new(w, ["a:b.wav", "c.wav"], &BTreeMap::new());
        assert_eq!(s.local("a:b.wav"), "a：b.wav");
        assert_eq!(s.store("a：b.wav"), "a:b.wav");
        assert_eq!(s.store("new?.wav"), "new?.wav");
        assert_eq!(s.local("new?.wav"), "new?.wav", "remembered as found");
        // A folder unknown to the catalog, and a file in it.
        assert_eq!(s.store("Fresh/x：y.wav"), "Fresh/x:y.wav");
        let mut s = Spelling::new(
            Style::MacOs,
            ["x.wav"],
            &held(&[("x.wav", Some("x (2).wav"))]),
        );
        // Someone made a plain "x.wav" beside the one held as "x (2).wav".
        assert_eq!(s.store("x.wav"), "x (2).wav");
        assert_eq!(s.store("x (2).wav"), "x.wav");
    }

    #[test]
    fn linux_spells_every_path_as_it_is() {
        let mut s = Spelling::new(Style::Linux, ["A/b.wav", "A/B.wav"], &BTreeMap::new());
        assert_eq!(s.local("A/b.wav"), "A/b.wav");
        assert_eq!(s.local("A/B.wav"), "A/B.wav");
        assert_eq!(s.store("A/c:d.wav"), "A/c:d.wav");
    }
}
