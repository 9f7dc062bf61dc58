//! What the live Song Factory database looks like right now: its synced tables, their
//! columns (with declared defaults), primary keys and references to other tables.
//!
//! Read from the database itself at every cycle (never assumed), so a table rebuild or
//! an added column is seen as what it is. Must never write to the database.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::SyncError;

/// Tables whose `name` column is UNIQUE in the app's schema.
pub const UNIQUE_NAME_TABLES: [&str; 4] = ["genres", "lore_presets", "artists", "tags"];

/// The app's tables songfs syncs, parents before children (inserts go in this order,
/// deletes in the reverse). `sync_metadata` (our own) and `sqlite_sequence` are never synced.
pub const SYNCED_TABLES: &[&str] = &[
    "config",
    "artists",
    "tags",
    "genres",
    "lore",
    "lore_presets",
    "cd_projects",
    "songs",
    "distributions",
    "cd_tracks",
    "song_tags",
];

/// Columns whose values are absolute paths of audio or art files: inside the mount they
/// travel relative to the mount root.
pub const PATH_COLUMNS: &[(&str, &str)] = &[
    ("songs", "file_path_1"),
    ("songs", "file_path_2"),
    ("songs", "file_path_vocals"),
    ("songs", "file_path_instrumental"),
    ("cd_tracks", "source_path"),
    ("cd_tracks", "wav_path"),
    ("distributions", "cover_art_path"),
    ("cd_projects", "disc_art_path"),
    ("cd_projects", "cover_art_path"),
    ("cd_projects", "back_art_path"),
];

/// `lore_presets.lore_ids` holds a JSON array of lore ids that SQLite does not know about.
pub const LORE_IDS: (&str, &str, &str) = ("lore_presets", "lore_ids", "lore");

/// How a table's rows are named locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalKey {
    /// `INTEGER PRIMARY KEY` (an alias of the rowid).
    IntegerId(String),
    /// A single non-integer primary key column (`config.key`).
    Text(String),
    /// A composite primary key (`song_tags(song_id, tag_id)`).
    Composite(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub decl_type: String,
    pub not_null: bool,
    /// The declared default as SQL text (`'draft'`, `0`, `CURRENT_TIMESTAMP`), if any.
    pub default_sql: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    pub key: LocalKey,
    /// column → referenced table (foreign keys, plus `lore_presets.lore_ids`).
    pub refs: BTreeMap<String, String>,
    /// column → the foreign key's ON DELETE action (`CASCADE`, `SET NULL`, `NO ACTION`).
    pub on_delete: BTreeMap<String, String>,
}

impl Table {
    pub fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c.name == name)
    }
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
    /// The key columns, in key order.
    pub fn key_columns(&self) -> Vec<String> {
        match &self.key {
            LocalKey::IntegerId(c) | LocalKey::Text(c) => vec![c.clone()],
            LocalKey::Composite(cs) => cs.clone(),
        }
    }
}

/// The synced tables present in the database.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub tables: BTreeMap<String, Table>,
}

impl Schema {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    /// (child table, column, ON DELETE action) of every foreign key into `parent`.
    pub fn children_of(&self, parent: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for t in self.tables.values() {
            for (col, target) in &t.refs {
                if target == parent {
                    if let Some(action) = t.on_delete.get(col) {
                        out.push((t.name.clone(), col.clone(), action.clone()));
                    }
                }
            }
        }
        out
    }
}

/// A plain SQL identifier (letters, digits, underscore; not starting with a digit).
/// Everything from a change log that ends up in SQL text must pass this.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.chars().next().unwrap().is_ascii_digit()
}

/// Reads the synced tables of the live database.
pub fn introspect(conn: &Connection) -> Result<Schema, SyncError> {
    let mut schema = Schema::default();
    for &name in SYNCED_TABLES {
        if let Some(t) = read_table(conn, name)? {
            schema.tables.insert(name.to_string(), t);
        }
    }
    Ok(schema)
}

fn read_table(conn: &Connection, name: &str) -> Result<Option<Table>, SyncError> {
    let mut stmt =
        conn.prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)")?;
    let mut columns = Vec::new();
    let mut pk: Vec<(i64, String, String)> = Vec::new();
    let rows = stmt.query_map([name], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (col, ty, nn, dflt, pkpos) = row?;
        if pkpos > 0 {
            pk.push((pkpos, col.clone(), ty.clone()));
        }
        columns.push(Column {
            name: col,
            decl_type: ty,
            not_null: nn != 0,
            default_sql: dflt,
        });
    }
    if columns.is_empty() {
        return Ok(None);
    }
    pk.sort();
    let key = match pk.as_slice() {
        [(_, c, ty)] if ty.eq_ignore_ascii_case("INTEGER") => LocalKey::IntegerId(c.clone()),
        [(_, c, _)] => LocalKey::Text(c.clone()),
        [] => {
            return Err(SyncError::Schema(format!(
                "table {name} has no primary key: songfs cannot tell its rows apart"
            )))
        }
        many => LocalKey::Composite(many.iter().map(|(_, c, _)| c.clone()).collect()),
    };
    let mut refs = BTreeMap::new();
    let mut on_delete = BTreeMap::new();
    let mut fk =
        conn.prepare("SELECT \"from\", \"table\", on_delete FROM pragma_foreign_key_list(?1)")?;
    let fks = fk.query_map([name], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for f in fks {
        let (from, to, action) = f?;
        refs.insert(from.clone(), to);
        on_delete.insert(from, action.to_ascii_uppercase());
    }
    if name == LORE_IDS.0 && columns.iter().any(|c| c.name == LORE_IDS.1) {
        refs.insert(LORE_IDS.1.to_string(), LORE_IDS.2.to_string());
    }
    Ok(Some(Table {
        name: name.to_string(),
        columns,
        key,
        refs,
        on_delete,
    }))
}

/// The value a column holds when an INSERT does not name it, if it is a constant
/// (`CURRENT_TIMESTAMP` and expressions are not). Used to tell "a column was added and
/// filled with its default" from "a user wrote a value".
pub fn constant_default(col: &Column) -> Option<serde_json::Value> {
    let Some(d) = col.default_sql.as_deref() else {
        return Some(serde_json::Value::Null);
    };
    let d = d.trim();
    if let Some(s) = d.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return Some(serde_json::Value::String(s.replace("''", "'")));
    }
    if d.eq_ignore_ascii_case("null") {
        return Some(serde_json::Value::Null);
    }
    if d.eq_ignore_ascii_case("true") {
        return Some(1.into());
    }
    if d.eq_ignore_ascii_case("false") {
        return Some(0.into());
    }
    if let Ok(i) = d.parse::<i64>() {
        return Some(i.into());
    }
    if let Ok(f) = d.parse::<f64>() {
        return serde_json::Number::from_f64(f).map(serde_json::Value::Number);
    }
    None
}
