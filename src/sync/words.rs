//! The sync's counts in Song Factory's own words: "5 songs updated, 2 new, 1 conflict",
//! "CD projects" rather than `cd_projects`, a song's tags rather than `song_tags`. Used
//! by `songfs sync` (its line and its `--json` summary) and the daemon's report.
//!
//! Pure: no I/O. Must never show a table name to the user (a table this build does not
//! know gets a readable word made from its name).

use std::collections::BTreeMap;

use serde::Serialize;

use super::capture::Counts;
use super::cycle::Summary;

/// What the app calls the rows of `table`: (one, many).
pub fn noun(table: &str) -> (String, String) {
    let known = match table {
        "songs" => Some(("song", "songs")),
        "lore" => Some(("lore entry", "lore entries")),
        "lore_presets" => Some(("lore preset", "lore presets")),
        "genres" => Some(("genre", "genres")),
        "tags" => Some(("tag", "tags")),
        "song_tags" => Some(("song tag", "song tags")),
        "cd_projects" => Some(("CD project", "CD projects")),
        "cd_tracks" => Some(("CD track", "CD tracks")),
        "artists" => Some(("artist", "artists")),
        "distributions" => Some(("distribution", "distributions")),
        "config" => Some(("setting", "settings")),
        _ => None,
    };
    match known {
        Some((one, many)) => (one.to_string(), many.to_string()),
        None => {
            let many = table.replace('_', " ");
            let one = many.strip_suffix('s').unwrap_or(&many).to_string();
            (one, many)
        }
    }
}

/// Counts keyed by the app's plural word ("songs", "CD projects"), tables with
/// nothing counted left out.
pub fn by_word(counts: &BTreeMap<String, Counts>) -> BTreeMap<String, WordCounts> {
    let mut out: BTreeMap<String, WordCounts> = BTreeMap::new();
    for (table, c) in counts.iter().filter(|(_, c)| c.total() > 0) {
        let e = out.entry(noun(table).1).or_default();
        e.new += c.new;
        e.updated += c.updated;
        e.deleted += c.deleted;
    }
    out
}

/// One kind of row's counts, in the JSON summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WordCounts {
    pub new: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// The order the app's users think in: songs first, settings last.
fn rank(table: &str) -> usize {
    const ORDER: [&str; 11] = [
        "songs",
        "lore",
        "genres",
        "tags",
        "song_tags",
        "cd_projects",
        "cd_tracks",
        "artists",
        "distributions",
        "lore_presets",
        "config",
    ];
    ORDER
        .iter()
        .position(|t| *t == table)
        .unwrap_or(ORDER.len())
}

/// "5 songs updated, 2 new, 1 deleted, 1 genre new": per kind of row, the first count
/// names it, the counts after it are of the same kind. Empty when nothing changed.
pub fn received_parts(received: &BTreeMap<String, Counts>) -> Vec<String> {
    let mut tables: Vec<(&String, &Counts)> =
        received.iter().filter(|(_, c)| c.total() > 0).collect();
    tables.sort_by_key(|(t, _)| (rank(t), t.as_str()));
    let mut parts = Vec::new();
    for (table, c) in tables {
        let (one, many) = noun(table);
        let mut named = false;
        for (n, what) in [
            (c.updated, "updated"),
            (c.new, "new"),
            (c.deleted, "deleted"),
        ] {
            if n == 0 {
                continue;
            }
            if named {
                parts.push(format!("{n} {what}"));
            } else {
                let word = if n == 1 { &one } else { &many };
                parts.push(format!("{n} {word} {what}"));
                named = true;
            }
        }
    }
    parts
}

/// "1 conflict" / "3 conflicts".
pub fn conflicts_part(n: usize) -> String {
    format!("{n} conflict{}", if n == 1 { "" } else { "s" })
}

/// What a cycle did, in one line: "5 songs updated, 2 new, 3 local changes sent,
/// 1 conflict (see `songfs conflicts`)", or "nothing new".
pub fn message(s: &Summary) -> String {
    let mut parts = received_parts(&s.received);
    let sent: u64 = s.sent.values().map(Counts::total).sum();
    if sent > 0 {
        parts.push(format!(
            "{sent} local change{} sent",
            if sent == 1 { "" } else { "s" }
        ));
    }
    if s.conflicts > 0 {
        parts.push(format!(
            "{} (see `songfs conflicts`)",
            conflicts_part(s.conflicts)
        ));
    }
    if !s.errors.is_empty() {
        parts.push(format!(
            "{} error{}: {}",
            s.errors.len(),
            if s.errors.len() == 1 { "" } else { "s" },
            s.errors.join("; ")
        ));
    }
    if parts.is_empty() {
        "nothing new".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(rows: &[(&str, u64, u64, u64)]) -> BTreeMap<String, Counts> {
        rows.iter()
            .map(|(t, new, updated, deleted)| {
                (
                    t.to_string(),
                    Counts {
                        new: *new,
                        updated: *updated,
                        deleted: *deleted,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_line_speaks_of_songs_and_cd_projects_not_tables() {
        let r = counts(&[
            ("cd_projects", 1, 0, 0),
            ("songs", 2, 5, 0),
            ("song_tags", 0, 0, 0),
            ("lore", 0, 1, 0),
        ]);
        assert_eq!(
            received_parts(&r),
            [
                "5 songs updated",
                "2 new",
                "1 lore entry updated",
                "1 CD project new"
            ]
        );
    }

    #[test]
    fn json_counts_are_keyed_by_the_apps_words_and_skip_empty_tables() {
        let r = counts(&[
            ("cd_tracks", 0, 3, 1),
            ("config", 0, 0, 0),
            ("tags", 1, 0, 0),
        ]);
        let w = by_word(&r);
        assert_eq!(w.keys().collect::<Vec<_>>(), ["CD tracks", "tags"]);
        assert_eq!(
            w["CD tracks"],
            WordCounts {
                new: 0,
                updated: 3,
                deleted: 1
            }
        );
    }

    #[test]
    fn an_unknown_table_gets_a_readable_word() {
        assert_eq!(
            noun("playlist_items"),
            ("playlist item".into(), "playlist items".into())
        );
        assert_eq!(conflicts_part(1), "1 conflict");
        assert_eq!(conflicts_part(2), "2 conflicts");
    }
}
