//! Values between the local database and the change log.
//!
//! Locally a reference is a rowid and a path is absolute; in a log a reference is
//! `{"$ref": "<table>/<gid>"}` (lore_presets.lore_ids: an array of them) and a path inside
//! the mount is `{"$mount": "<relative path>"}`. Blobs travel as `{"$blob": "<base64>"}`.
//! Must never guess: a reference to a row this side does not know becomes NULL (logged).

use std::path::{Path, PathBuf};

use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::json;

use super::identity::{id_key, key_id, IdMap};
use super::merge::Value;
use super::schema::{Schema, LORE_IDS, PATH_COLUMNS};
use crate::paths::Style;

pub fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => json!({ "$blob": base64(b) }),
    }
}

pub fn to_sql(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(*b as i64),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Object(o) => match o.get("$blob").and_then(|b| b.as_str()) {
            Some(b) => SqlValue::Blob(unbase64(b).unwrap_or_default()),
            None => SqlValue::Text(v.to_string()),
        },
        Value::Array(_) => SqlValue::Text(v.to_string()),
    }
}

pub struct Translator<'a> {
    pub schema: &'a Schema,
    pub ids: &'a IdMap,
    pub mount: Option<&'a Path>,
}

fn is_path_column(table: &str, col: &str) -> bool {
    PATH_COLUMNS.iter().any(|(t, c)| *t == table && *c == col)
}

impl Translator<'_> {
    fn ref_target(&self, table: &str, col: &str) -> Option<&str> {
        self.schema.table(table)?.refs.get(col).map(|s| s.as_str())
    }

    /// A local value as it travels in a log.
    pub fn to_wire(&self, table: &str, col: &str, v: &Value) -> Value {
        if (table, col) == (LORE_IDS.0, LORE_IDS.1) {
            return self.lore_ids_to_wire(v);
        }
        if let Some(target) = self.ref_target(table, col) {
            let Some(id) = v.as_i64() else {
                return v.clone();
            };
            return match self.ids.gid_of(target, &id_key(id)) {
                Some(g) => json!({ "$ref": format!("{target}/{g}") }),
                None => {
                    tracing::warn!(table, col, id, target, "dangling reference sent as NULL");
                    Value::Null
                }
            };
        }
        if is_path_column(table, col) {
            if let (Some(mount), Some(s)) = (self.mount, v.as_str()) {
                // Relative with `/` whatever this machine's separators (paths/library.rs).
                let root = mount.to_string_lossy();
                if let Some(rel) = crate::paths::library::to_wire(s, &root, Style::HOST) {
                    return json!({ "$mount": rel });
                }
            }
        }
        v.clone()
    }

    fn lore_ids_to_wire(&self, v: &Value) -> Value {
        let Some(text) = v.as_str() else {
            return v.clone();
        };
        let Ok(ids) = serde_json::from_str::<Vec<i64>>(text) else {
            // Not an array of ids: send as it is (the app would not read it either).
            return v.clone();
        };
        let refs: Vec<Value> = ids
            .iter()
            .filter_map(|id| {
                let g = self.ids.gid_of(LORE_IDS.2, &id_key(*id));
                if g.is_none() {
                    tracing::warn!(id, "lore_presets.lore_ids names a missing lore entry");
                }
                g.map(|g| json!({ "$ref": format!("{}/{g}", LORE_IDS.2) }))
            })
            .collect();
        json!({ "$refs": refs })
    }

    /// A value from a log as it is written locally.
    pub fn to_local(&self, table: &str, col: &str, v: &Value) -> Value {
        let Some(obj) = v.as_object() else {
            return v.clone();
        };
        if let Some(r) = obj.get("$ref").and_then(|r| r.as_str()) {
            return self.local_id(r).map(Value::from).unwrap_or(Value::Null);
        }
        if let Some(refs) = obj.get("$refs").and_then(|r| r.as_array()) {
            let ids: Vec<i64> = refs
                .iter()
                .filter_map(|r| r.get("$ref").and_then(|r| r.as_str()))
                .filter_map(|r| self.local_id(r))
                .collect();
            return Value::String(serde_json::to_string(&ids).expect("ints encode"));
        }
        if let Some(rel) = obj.get("$mount").and_then(|r| r.as_str()) {
            let root: PathBuf = self
                .mount
                .map(Path::to_path_buf)
                .unwrap_or_else(|| crate::config::home_dir().join("SongFactory").join("audio"));
            return Value::String(crate::paths::library::to_native(
                rel,
                &root.to_string_lossy(),
                Style::HOST,
            ));
        }
        let _ = (table, col);
        v.clone()
    }

    /// The local rowid of `"<table>/<gid>"`, if that row lives here.
    pub fn local_id(&self, r: &str) -> Option<i64> {
        let (t, g) = r.split_once('/')?;
        self.ids.key_of(t, g).and_then(key_id)
    }
}

/// The `RowId` text inside a `$ref`, or the refs inside `$refs`.
pub fn refs_in(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(r) = v.get("$ref").and_then(|r| r.as_str()) {
        if let Some((t, g)) = r.split_once('/') {
            out.push((t.to_string(), g.to_string()));
        }
    }
    if let Some(rs) = v.get("$refs").and_then(|r| r.as_array()) {
        for r in rs {
            out.extend(refs_in(r));
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|x| *x == c)? as u32;
        buf = buf << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[0, 255, 7, 9, 1]] {
            assert_eq!(unbase64(&base64(data)).unwrap(), data);
        }
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
