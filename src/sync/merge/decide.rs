//! Which version of a field wins: the per-column rules (status ladders) and the decision among a
//! field's frontier (highest rung when every value is on the ladder, else highest clock).
//!
//! Must never depend on arrival order: the decision is a function of the frontier alone.

use super::field::FieldState;
use super::Hlc;
use super::Value;

/// `songs.status`, lowest rung first.
pub const SONG_STATUS_LADDER: &[&str] =
    &["draft", "queued", "processing", "submitted", "completed"];
/// `distributions.status`, lowest rung first.
pub const DISTRIBUTION_STATUS_LADDER: &[&str] =
    &["draft", "ready", "uploading", "submitted", "live"];

/// Per-column merge rules: which columns have a status ladder.
/// `Rules::default()` has the `songs.status` and `distributions.status` ladders.
#[derive(Clone, Debug)]
pub struct Rules {
    ladders: Vec<(&'static str, &'static str, &'static [&'static str])>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules::none()
            .with_ladder("songs", "status", SONG_STATUS_LADDER)
            .with_ladder("distributions", "status", DISTRIBUTION_STATUS_LADDER)
    }
}

impl Rules {
    /// No ladders: every column is plain last-writer-wins.
    pub fn none() -> Rules {
        Rules {
            ladders: Vec::new(),
        }
    }

    /// Adds (or replaces) the ladder of `table.column`, lowest rung first.
    pub fn with_ladder(
        mut self,
        table: &'static str,
        column: &'static str,
        rungs: &'static [&'static str],
    ) -> Rules {
        self.ladders
            .retain(|(t, c, _)| !(*t == table && *c == column));
        self.ladders.push((table, column, rungs));
        self
    }

    /// The ladder of `table.column`, lowest rung first, if it has one.
    pub fn ladder(&self, table: &str, column: &str) -> Option<&[&str]> {
        self.ladders
            .iter()
            .find(|(t, c, _)| *t == table && *c == column)
            .map(|(_, _, rungs)| *rungs)
    }
}

impl FieldState {
    /// The winning version: highest rung if every frontier value is on the ladder, else highest clock.
    pub(super) fn winner(&self, ladder: Option<&[&str]>) -> Option<(&Hlc, &Value)> {
        let frontier: Vec<(&Hlc, &Value)> = self.frontier().collect();
        if frontier.len() <= 1 {
            return frontier.into_iter().next();
        }
        if let Some(rungs) = ladder {
            let ranked: Option<Vec<(usize, &Hlc, &Value)>> = frontier
                .iter()
                .map(|(clock, value)| rung(rungs, value).map(|r| (r, *clock, *value)))
                .collect();
            if let Some(ranked) = ranked {
                return ranked
                    .into_iter()
                    .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
                    .map(|(_, clock, value)| (clock, value));
            }
        }
        frontier.into_iter().max_by(|a, b| a.0.cmp(b.0))
    }
}

/// Position of `value` on the ladder, if it is a rung.
fn rung(rungs: &[&str], value: &Value) -> Option<usize> {
    let text = value.as_str()?;
    rungs.iter().position(|r| *r == text)
}
