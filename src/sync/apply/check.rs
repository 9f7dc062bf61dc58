//! The check every value from another device passes before it is written: against the
//! column it goes into (SQLite type affinity, NOT NULL, references naming a row of the
//! referenced table; the size limit is the log's, `changelog::MAX_VALUE_BYTES`). A value that fails is left out and logged; the rest
//! of the row is applied. Pure: must never read or write a database.

use serde_json::Value;

use crate::sync::schema::{Column, Table};

/// SQLite's column affinity, from the declared type (the rules of "Datatypes In SQLite",
/// section 3.1, in their order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Any,
    Real,
    Numeric,
}

fn affinity(decl: &str) -> Affinity {
    let d = decl.to_ascii_uppercase();
    if d.contains("INT") {
        Affinity::Integer
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        Affinity::Text
    } else if d.contains("BLOB") || d.is_empty() {
        Affinity::Any
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

/// Why a wire value (as it travels, before translation) may not go into `t.c`, if so.
pub fn refusal(t: &Table, c: &Column, v: &Value) -> Option<String> {
    let aff = affinity(&c.decl_type);
    let what = || {
        format!(
            "{} is not a value for {} {}",
            short(v),
            c.decl_type.to_ascii_uppercase(),
            t.name
        )
    };
    if let Value::Null = v {
        return c
            .not_null
            .then(|| format!("NULL for a NOT NULL column of {}", t.name));
    }
    if let Some(target) = t.refs.get(&c.name) {
        return match v {
            Value::Object(o) if o.contains_key("$ref") => (!names_row_of(&o["$ref"], target))
                .then(|| format!("{} does not name a row of {target}", short(v))),
            Value::Object(o) if o.contains_key("$refs") => {
                let all = o["$refs"].as_array().is_some_and(|rs| {
                    rs.iter()
                        .all(|r| r.get("$ref").is_some_and(|r| names_row_of(r, target)))
                });
                (!all).then(|| format!("{} does not name rows of {target}", short(v)))
            }
            // A list column the app filled with something else travels as it is.
            Value::String(_) if aff != Affinity::Integer => None,
            _ => Some(format!("{} is not a reference to {target}", short(v))),
        };
    }
    let ok = match v {
        Value::Bool(_) | Value::Number(_) => aff != Affinity::Text,
        Value::String(_) => matches!(aff, Affinity::Text | Affinity::Any | Affinity::Numeric),
        Value::Object(o) if o.contains_key("$blob") => o["$blob"].is_string(),
        Value::Object(o) if o.contains_key("$mount") => {
            o["$mount"].is_string() && aff != Affinity::Integer && aff != Affinity::Real
        }
        // No column of the app holds a JSON array or object: a device sends text.
        Value::Array(_) | Value::Object(_) => false,
        Value::Null => true,
    };
    (!ok).then(what)
}

fn names_row_of(r: &Value, target: &str) -> bool {
    r.as_str()
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(t, g)| t == target && !g.is_empty())
}

/// The value for a message: at most 60 characters of it.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::schema::LocalKey;
    use serde_json::json;

    fn col(name: &str, decl: &str, not_null: bool) -> Column {
        Column {
            name: name.into(),
            decl_type: decl.into(),
            not_null,
            default_sql: None,
        }
    }

    fn songs() -> Table {
        Table {
            name: "songs".into(),
            columns: vec![
                col("title", "TEXT", true),
                col("genre_id", "INTEGER", false),
                col("status", "TEXT", false),
                col("duration_seconds", "REAL", false),
                col("created_at", "TIMESTAMP", false),
            ],
            key: LocalKey::IntegerId("id".into()),
            refs: [("genre_id".to_string(), "genres".to_string())].into(),
            on_delete: Default::default(),
        }
    }

    #[test]
    fn values_of_the_wrong_kind_are_refused() {
        let t = songs();
        let c = |n: &str| t.column(n).unwrap().clone();
        let bad = [
            ("genre_id", json!("rock")),
            ("genre_id", json!(3)),
            ("genre_id", json!({"$ref": "lore/abc"})),
            ("status", json!(7)),
            ("title", json!(["a", "b"])),
            ("title", json!({"x": 1})),
            ("title", Value::Null),
            ("duration_seconds", json!("long")),
        ];
        for (n, v) in bad {
            assert!(refusal(&t, &c(n), &v).is_some(), "{n} = {v}");
        }
        let good = [
            ("genre_id", json!({"$ref": "genres/abc"})),
            ("genre_id", Value::Null),
            ("status", json!("draft")),
            ("title", json!("River Orchard")),
            ("title", json!({"$mount": "a/b.mp3"})),
            ("duration_seconds", json!(183.5)),
            ("created_at", json!("2026-01-02 10:00:00")),
        ];
        for (n, v) in good {
            assert_eq!(refusal(&t, &c(n), &v), None, "{n} = {v}");
        }
    }
}
