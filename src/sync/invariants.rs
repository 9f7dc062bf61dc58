//! Cross-row invariants that a field-level merge can break, and the corrections that restore them.
//!
//! Two devices that each made a different artist the default, or each renumbered a CD project's
//! tracks, merge field by field into a state the app never makes (two defaults, two tracks numbered 3).
//! Every device computes the same corrections from the same merged state, so they are applied locally
//! and are NOT new events. Pure: no I/O, no SQLite.
//! Must never: depend on local row ids or arrival order (only on merged values, clocks and global ids).
//!
//! - **One default artist** (`artists.is_default`): among the alive artists whose resolved `is_default`
//!   is true, the one whose winning `is_default` version has the highest clock stays default (the most
//!   recent "make default" wins); the others get 0. If no alive artist is default, the oldest alive
//!   artist (smallest creation clock; a row never seen created comes last; then global id) becomes the
//!   default — after a fresh install that is the seeded default artist.
//! - **CD track numbers** (`cd_tracks.track_number`): the alive tracks of each project (grouped by the
//!   resolved `project_id`) are renumbered 1..n, ordered by their resolved number, then by the clock of
//!   that number (the track that held the number first keeps it), then by global id; tracks without an
//!   integer number go last.
//! - **Unique names** (`genres`, `lore_presets`, `artists`, `tags`: `name` is UNIQUE): two rows can end
//!   with one name when one device renamed a row to a name another device gave a new row. The oldest
//!   (creation clock, then global id) keeps the name; each other one is shown as `<name> (2)`, `(3)`…
//!   (the first such name no alive row holds), so both rows and everything attached to them stay.

use super::clock::Hlc;
use super::merge::{MergeState, Row, RowId, RowState, Rules, Value};
use super::schema::UNIQUE_NAME_TABLES;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One field of one resolved row to overwrite before the row is written to the app database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub row: RowId,
    pub column: String,
    pub value: Value,
    /// Why, for the log.
    pub reason: &'static str,
}

/// The corrections the merged `state` needs, in a deterministic order. Only alive rows are considered;
/// a fix is listed only when it changes the resolved value.
pub fn corrections(state: &MergeState, rules: &Rules) -> Vec<Fix> {
    let mut fixes = default_artist(state, rules);
    fixes.extend(track_numbers(state, rules));
    for table in UNIQUE_NAME_TABLES {
        fixes.extend(unique_names(state, rules, table));
    }
    fixes
}

/// Resolves every alive row and applies the corrections: the rows the app database must hold.
pub fn resolve_all(state: &MergeState, rules: &Rules) -> BTreeMap<RowId, Row> {
    let mut rows: BTreeMap<RowId, Row> = state
        .rows
        .keys()
        .filter_map(|id| Some((id.clone(), state.resolve(rules, id)?)))
        .collect();
    apply_fixes(&mut rows, &corrections(state, rules));
    rows
}

/// Overwrites the fixed fields of resolved rows (rows not in `rows` are skipped).
pub fn apply_fixes(rows: &mut BTreeMap<RowId, Row>, fixes: &[Fix]) {
    for fix in fixes {
        if let Some(row) = rows.get_mut(&fix.row) {
            row.insert(fix.column.clone(), fix.value.clone());
        }
    }
}

/// SQLite booleans arrive as integers; be lenient with other spellings.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => matches!(s.as_str(), "1" | "true" | "True" | "TRUE"),
        _ => false,
    }
}

fn alive_rows<'a>(
    state: &'a MergeState,
    table: &'a str,
) -> impl Iterator<Item = (&'a RowId, &'a RowState)> {
    state.table(table).filter(|(id, _)| state.is_alive(id))
}

fn default_artist(state: &MergeState, rules: &Rules) -> Vec<Fix> {
    let artists: Vec<(&RowId, &RowState)> = alive_rows(state, "artists").collect();
    if artists.is_empty() {
        return Vec::new();
    }
    let default_clock = |row: &RowState| -> Option<Hlc> {
        let (clock, value) = row.field(rules, "artists", "is_default")?;
        truthy(value).then(|| clock.clone())
    };
    let keep: &RowId = match artists
        .iter()
        .filter_map(|(id, row)| Some((default_clock(row)?, *id)))
        .max()
    {
        Some((_, id)) => id,
        None => {
            artists
                .iter()
                .min_by(|(a_id, a), (b_id, b)| {
                    // None (never seen created) sorts last.
                    let key = |row: &RowState| (row.created().is_none(), row.created().cloned());
                    key(a).cmp(&key(b)).then(a_id.cmp(b_id))
                })
                .expect("artists is not empty")
                .0
        }
    };
    let mut fixes = Vec::new();
    for (id, row) in &artists {
        let is_default = row
            .field(rules, "artists", "is_default")
            .is_some_and(|(_, v)| truthy(v));
        let should_be = *id == keep;
        if is_default != should_be {
            fixes.push(Fix {
                row: (*id).clone(),
                column: "is_default".into(),
                value: Value::from(i64::from(should_be)),
                reason: if should_be {
                    "no artist was the default: the oldest artist becomes it"
                } else {
                    "another artist was made the default more recently"
                },
            });
        }
    }
    fixes
}

/// Tables an invariant looks across (all their rows at once).
pub const WHOLE_TABLES: [&str; 5] = ["artists", "cd_tracks", "genres", "lore_presets", "tags"];

fn unique_names(state: &MergeState, rules: &Rules, table: &str) -> Vec<Fix> {
    let mut by_name: BTreeMap<String, Vec<(bool, Option<Hlc>, RowId)>> = BTreeMap::new();
    for (id, row) in alive_rows(state, table) {
        let Some(name) = row
            .field(rules, table, "name")
            .and_then(|(_, v)| v.as_str().map(str::to_string))
        else {
            continue;
        };
        by_name.entry(name).or_default().push((
            row.created().is_none(),
            row.created().cloned(),
            id.clone(),
        ));
    }
    let mut taken: std::collections::BTreeSet<String> = by_name.keys().cloned().collect();
    let mut fixes = Vec::new();
    for (name, mut rows) in by_name {
        if rows.len() < 2 {
            continue;
        }
        rows.sort();
        for (_, _, id) in rows.into_iter().skip(1) {
            let renamed = (2..)
                .map(|n| format!("{name} ({n})"))
                .find(|c| !taken.contains(c))
                .expect("an unused name exists");
            taken.insert(renamed.clone());
            fixes.push(Fix {
                row: id,
                column: "name".into(),
                value: Value::from(renamed),
                reason: "two rows got the same unique name on different devices: the newer one is renamed",
            });
        }
    }
    fixes
}

fn track_numbers(state: &MergeState, rules: &Rules) -> Vec<Fix> {
    // project (its resolved value, as text so it can be a map key) → (sort key, track)
    type SortKey = (bool, i64, Option<Hlc>, RowId);
    let mut projects: BTreeMap<String, Vec<SortKey>> = BTreeMap::new();
    for (id, row) in alive_rows(state, "cd_tracks") {
        let project = row
            .field(rules, "cd_tracks", "project_id")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        let number = row.field(rules, "cd_tracks", "track_number");
        let (has_no_number, n, clock) = match number.and_then(|(c, v)| Some((c, v.as_i64()?))) {
            Some((clock, n)) => (false, n, Some(clock.clone())),
            None => (true, 0, number.map(|(c, _)| c.clone())),
        };
        projects
            .entry(project)
            .or_default()
            .push((has_no_number, n, clock, id.clone()));
    }
    let mut fixes = Vec::new();
    for (_, mut tracks) in projects {
        tracks.sort();
        for (position, (has_no_number, n, _, id)) in tracks.into_iter().enumerate() {
            let wanted = position as i64 + 1;
            if has_no_number || n != wanted {
                fixes.push(Fix {
                    row: id,
                    column: "track_number".into(),
                    value: Value::from(wanted),
                    reason: "the project's tracks are renumbered 1..n after a merge",
                });
            }
        }
    }
    fixes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::merge::{Change, Event};
    use serde_json::json;

    fn hlc(wall_ms: u64, device: &str) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            device: device.into(),
        }
    }

    fn create(state: &mut MergeState, row: &RowId, at: u64, fields: &[(&str, Value)]) {
        let clock = hlc(at, "a");
        state.apply(&Change {
            row: row.clone(),
            event: Event::Live {
                clock: clock.clone(),
            },
        });
        for (column, value) in fields {
            set(state, row, column, value.clone(), clock.clone());
        }
    }

    fn set(state: &mut MergeState, row: &RowId, column: &str, value: Value, clock: Hlc) {
        let replaces = state
            .rows
            .get(row)
            .map(|r| r.frontier(column))
            .unwrap_or_default();
        state.apply(&Change {
            row: row.clone(),
            event: Event::Set {
                column: column.into(),
                value,
                clock,
                replaces,
            },
        });
    }

    fn defaults(rows: &BTreeMap<RowId, Row>) -> Vec<&str> {
        rows.iter()
            .filter(|(id, row)| id.table == "artists" && truthy(&row["is_default"]))
            .map(|(id, _)| id.gid.as_str())
            .collect()
    }

    #[test]
    fn the_most_recently_made_default_artist_stays_the_only_default() {
        let rules = Rules::default();
        let mut state = MergeState::default();
        let (x, y, z) = (
            RowId::new("artists", "x"),
            RowId::new("artists", "y"),
            RowId::new("artists", "z"),
        );
        create(&mut state, &x, 1, &[("is_default", json!(1))]);
        create(&mut state, &y, 2, &[("is_default", json!(0))]);
        create(&mut state, &z, 3, &[("is_default", json!(0))]);
        // Two devices each made another artist the default without seeing each other.
        set(&mut state, &y, "is_default", json!(1), hlc(10, "b"));
        set(&mut state, &z, "is_default", json!(1), hlc(11, "c"));
        set(&mut state, &x, "is_default", json!(0), hlc(11, "c"));
        let rows = resolve_all(&state, &rules);
        assert_eq!(defaults(&rows), ["z"]);
        let fixes = corrections(&state, &rules);
        assert_eq!(fixes.len(), 1);
        assert_eq!(
            (fixes[0].row.gid.as_str(), &fixes[0].value),
            ("y", &json!(0))
        );
    }

    #[test]
    fn with_no_default_the_oldest_alive_artist_becomes_it() {
        let rules = Rules::default();
        let mut state = MergeState::default();
        let (x, y, z) = (
            RowId::new("artists", "x"),
            RowId::new("artists", "y"),
            RowId::new("artists", "z"),
        );
        create(&mut state, &y, 2, &[("is_default", json!(0))]);
        create(&mut state, &x, 1, &[("is_default", json!(1))]);
        create(&mut state, &z, 3, &[("is_default", json!(0))]);
        state.apply(&Change {
            row: x.clone(),
            event: Event::Delete {
                clock: hlc(5, "b"),
                cascade_of: None,
            },
        });
        assert_eq!(defaults(&resolve_all(&state, &rules)), ["y"]);
    }

    #[test]
    fn one_consistent_default_needs_no_fix() {
        let mut state = MergeState::default();
        create(
            &mut state,
            &RowId::new("artists", "x"),
            1,
            &[("is_default", json!(1))],
        );
        create(
            &mut state,
            &RowId::new("artists", "y"),
            2,
            &[("name", json!("Y"))],
        );
        assert!(corrections(&state, &Rules::default()).is_empty());
    }

    #[test]
    fn tracks_of_each_project_are_renumbered_one_to_n() {
        let rules = Rules::default();
        let mut state = MergeState::default();
        let p = json!({"$ref": "cd_projects/p"});
        let q = json!({"$ref": "cd_projects/q"});
        let track = |gid: &str| RowId::new("cd_tracks", gid);
        create(
            &mut state,
            &track("t1"),
            1,
            &[("project_id", p.clone()), ("track_number", json!(1))],
        );
        create(
            &mut state,
            &track("t2"),
            2,
            &[("project_id", p.clone()), ("track_number", json!(2))],
        );
        // Two devices each appended a track as number 3.
        create(
            &mut state,
            &track("t3"),
            5,
            &[("project_id", p.clone()), ("track_number", json!(3))],
        );
        create(
            &mut state,
            &track("t4"),
            4,
            &[("project_id", p.clone()), ("track_number", json!(3))],
        );
        // A deleted track leaves a gap; another project is numbered on its own.
        create(
            &mut state,
            &track("t0"),
            1,
            &[("project_id", p.clone()), ("track_number", json!(0))],
        );
        state.apply(&Change {
            row: track("t0"),
            event: Event::Delete {
                clock: hlc(6, "a"),
                cascade_of: None,
            },
        });
        create(
            &mut state,
            &track("u1"),
            1,
            &[("project_id", q.clone()), ("track_number", json!(7))],
        );
        let rows = resolve_all(&state, &rules);
        let number = |gid: &str| rows[&track(gid)]["track_number"].clone();
        assert_eq!(number("t1"), json!(1));
        assert_eq!(number("t2"), json!(2));
        assert_eq!(
            number("t4"),
            json!(3),
            "the earlier number 3 keeps its place"
        );
        assert_eq!(number("t3"), json!(4));
        assert_eq!(number("u1"), json!(1));
        assert!(!rows.contains_key(&track("t0")));
    }
}
