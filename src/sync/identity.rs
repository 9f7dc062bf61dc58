//! Global row identity: which gid a row gets at its first capture, and the map
//! gid ↔ local key per table for one cycle.
//!
//! Rules (every device computes the same gid for the same thing):
//! - `config`: the key itself.
//! - UNIQUE-name tables (genres, lore_presets, artists, tags): `n:<name>`.
//! - songs with a `task_id`: `t:<task_id>` (the app's importer matches songs by it).
//! - `song_tags`: `p:` + hash of the song's and the tag's gids.
//! - any other row that already existed before this device's first sync: `s:` + hash of
//!   table, rowid and its identifying column (title/name), so the rows every fresh install
//!   seeds get ONE identity on all devices, even if one side edited other fields.
//! - any other new row: `r:` + 128 random bits (two rows created offline with the same
//!   rowid stay two rows).
//!
//! Must never change a row's gid once given (the shadow keeps it).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::merge::Value;

/// The identifying column of rows created before the first sync (besides the rowid).
fn seed_identity_column(table: &str) -> Option<&'static str> {
    match table {
        "songs" | "lore" | "cd_tracks" => Some("title"),
        "cd_projects" => Some("name"),
        "distributions" => Some("distributor"),
        _ => None,
    }
}

fn unique_name_table(table: &str) -> bool {
    super::schema::UNIQUE_NAME_TABLES.contains(&table)
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The gid a row gets from what it is (None: it has no natural identity).
/// `row` holds local values; `ref_gids` the gids of the rows its key columns reference
/// (song_tags).
pub fn natural_gid(
    table: &str,
    row: &BTreeMap<String, Value>,
    ref_gids: &BTreeMap<String, String>,
) -> Option<String> {
    if table == "config" {
        return text_of(row.get("key"));
    }
    if unique_name_table(table) {
        return text_of(row.get("name")).map(|n| format!("n:{n}"));
    }
    if table == "songs" {
        if let Some(t) = text_of(row.get("task_id")) {
            return Some(format!("t:{t}"));
        }
    }
    if table == "song_tags" {
        let s = ref_gids.get("song_id")?;
        let t = ref_gids.get("tag_id")?;
        return Some(format!("p:{}", short_hash(&[s, t])));
    }
    None
}

/// The gid of a row that existed before this device's first sync.
pub fn seeded_gid(table: &str, key: &str, row: &BTreeMap<String, Value>) -> String {
    let ident = seed_identity_column(table)
        .and_then(|c| text_of(row.get(c)))
        .unwrap_or_default();
    format!("s:{}", short_hash(&[table, key, &ident]))
}

/// A gid for a row created on this device after its first sync.
pub fn random_gid() -> String {
    format!("r:{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// gid ↔ local key of every live row of every synced table, for one cycle.
#[derive(Debug, Default, Clone)]
pub struct IdMap {
    by_gid: BTreeMap<String, BTreeMap<String, String>>,
    by_key: BTreeMap<String, BTreeMap<String, String>>,
}

impl IdMap {
    pub fn insert(&mut self, table: &str, gid: &str, key: &str) {
        if let Some(old) = self
            .by_gid
            .entry(table.to_string())
            .or_default()
            .insert(gid.to_string(), key.to_string())
        {
            if old != key {
                self.by_key
                    .entry(table.to_string())
                    .or_default()
                    .remove(&old);
            }
        }
        self.by_key
            .entry(table.to_string())
            .or_default()
            .insert(key.to_string(), gid.to_string());
    }

    pub fn remove_key(&mut self, table: &str, key: &str) {
        if let Some(g) = self.by_key.get_mut(table).and_then(|m| m.remove(key)) {
            if let Some(m) = self.by_gid.get_mut(table) {
                if m.get(&g).map(|k| k == key).unwrap_or(false) {
                    m.remove(&g);
                }
            }
        }
    }

    pub fn gid_of(&self, table: &str, key: &str) -> Option<&str> {
        self.by_key.get(table)?.get(key).map(|s| s.as_str())
    }

    pub fn key_of(&self, table: &str, gid: &str) -> Option<&str> {
        self.by_gid.get(table)?.get(gid).map(|s| s.as_str())
    }
}

/// The local key text of a row: a JSON array of its primary key values (`[42]`,
/// `["ai_model"]`, `[3,5]`).
pub fn key_text(values: &[Value]) -> String {
    serde_json::to_string(values).expect("JSON values always encode")
}

/// The key text of an integer id.
pub fn id_key(id: i64) -> String {
    key_text(&[Value::from(id)])
}

/// The integer id in a key text like `[42]`.
pub fn key_id(key: &str) -> Option<i64> {
    let v: Vec<Value> = serde_json::from_str(key).ok()?;
    match v.as_slice() {
        [Value::Number(n)] => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn natural_ids_come_from_names_task_ids_and_keys() {
        let none = BTreeMap::new();
        assert_eq!(
            natural_gid("genres", &row(&[("name", "Ska".into())]), &none).as_deref(),
            Some("n:Ska")
        );
        assert_eq!(
            natural_gid("config", &row(&[("key", "ai_model".into())]), &none).as_deref(),
            Some("ai_model")
        );
        assert_eq!(
            natural_gid("songs", &row(&[("task_id", "abc".into())]), &none).as_deref(),
            Some("t:abc")
        );
        assert_eq!(
            natural_gid("songs", &row(&[("task_id", Value::Null)]), &none),
            None
        );
        let refs: BTreeMap<String, String> = [("song_id", "t:a"), ("tag_id", "n:Fav")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let a = natural_gid("song_tags", &BTreeMap::new(), &refs).unwrap();
        assert!(a.starts_with("p:"));
        assert_eq!(Some(a), natural_gid("song_tags", &BTreeMap::new(), &refs));
    }

    #[test]
    fn seeded_rows_match_by_rowid_and_title_not_by_other_fields() {
        let a = row(&[("title", "Dust".into()), ("lyrics", "x".into())]);
        let b = row(&[("title", "Dust".into()), ("lyrics", "edited".into())]);
        assert_eq!(
            seeded_gid("songs", "[5]", &a),
            seeded_gid("songs", "[5]", &b)
        );
        assert_ne!(
            seeded_gid("songs", "[5]", &a),
            seeded_gid("songs", "[6]", &a)
        );
        assert_ne!(
            seeded_gid("songs", "[5]", &a),
            seeded_gid("lore", "[5]", &a)
        );
    }

    #[test]
    fn id_map_moves_a_gid_to_its_new_key() {
        let mut m = IdMap::default();
        m.insert("songs", "g1", "[1]");
        m.insert("songs", "g1", "[7]");
        assert_eq!(m.key_of("songs", "g1"), Some("[7]"));
        assert_eq!(m.gid_of("songs", "[1]"), None);
        m.remove_key("songs", "[7]");
        assert_eq!(m.key_of("songs", "g1"), None);
        assert_eq!(key_id(&id_key(42)), Some(42));
    }
}
