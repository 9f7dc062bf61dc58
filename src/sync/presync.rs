//! The clock of a row found at a device's first capture: when was it last edited?
//!
//! Rows that existed before the first sync have no recorded history. Two databases used
//! apart before they first met (two installs, or a copy of one database taken to a second
//! machine) must still merge their shared rows sensibly, so the row's own timestamps are the
//! hint: a row whose `updated_at` lies after its `created_at` was edited then, and its values
//! carry that time; a row never edited (the seeded rows as the app left them) carries the zero
//! clock and loses to any edit made anywhere. Where both sides edited one row before their
//! first sync, the later edit wins the fields where they differ and the merge logs the other
//! values as a conflict; a table without `updated_at` has no hint and keeps the zero clock.
//!
//! Pure: no I/O, no system time (the caller passes `now_ms`).

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};

use super::clock::Hlc;
use super::merge::Value;

/// An edit less than this long after the row's creation is the creation itself (the app
/// writes both stamps in separate statements).
const SAME_MOMENT_MS: u64 = 2_000;

/// The clock for a pre-existing row's values: its `updated_at` (never after `now_ms`) when
/// the row was edited after it was created, else the zero clock.
pub fn row_clock(
    row: &std::collections::BTreeMap<String, Value>,
    device: &str,
    now_ms: u64,
) -> Hlc {
    let stamp = |col: &str| row.get(col).and_then(|v| v.as_str()).and_then(parse_ms);
    match (stamp("created_at"), stamp("updated_at")) {
        (Some(created), Some(updated)) if updated > created + SAME_MOMENT_MS => Hlc {
            wall_ms: updated.min(now_ms),
            counter: 0,
            device: device.to_string(),
        },
        _ => Hlc::zero(device),
    }
}

/// Milliseconds since the epoch of one of the app's timestamps: SQLite's
/// `CURRENT_TIMESTAMP` (`2026-02-10 04:00:00`, UTC) or Python's `isoformat()` of local time
/// (`2026-02-10T04:00:00.123456`, what the app writes into `artists.updated_at`), or an
/// RFC 3339 time with an offset.
fn parse_ms(text: &str) -> Option<u64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return u64::try_from(t.timestamp_millis()).ok();
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        return u64::try_from(Utc.from_utc_datetime(&t).timestamp_millis()).ok();
    }
    let t = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    // Local time, read on the machine that wrote it (capture runs beside the app).
    let local = Local.from_local_datetime(&t).earliest()?;
    u64::try_from(local.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(created: &str, updated: Option<&str>) -> BTreeMap<String, Value> {
        let mut r = BTreeMap::new();
        r.insert("created_at".to_string(), Value::from(created));
        if let Some(u) = updated {
            r.insert("updated_at".to_string(), Value::from(u));
        }
        r
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn an_edited_row_carries_its_edit_time() {
        let c = row_clock(
            &row("2026-01-01 10:00:00", Some("2026-02-10 04:00:00")),
            "a",
            NOW,
        );
        assert_eq!(c.wall_ms, parse_ms("2026-02-10 04:00:00").unwrap());
        assert_eq!(c.wall_ms, 1_770_696_000_000);
        assert_eq!(c.device, "a");
    }

    #[test]
    fn a_row_never_edited_or_without_updated_at_has_the_zero_clock() {
        let same = row("2026-01-01 10:00:00", Some("2026-01-01 10:00:01"));
        assert_eq!(row_clock(&same, "a", NOW), Hlc::zero("a"));
        let genre = row("2026-01-01 10:00:00", None);
        assert_eq!(row_clock(&genre, "a", NOW), Hlc::zero("a"));
        let garbage = row("yesterday", Some("today"));
        assert_eq!(row_clock(&garbage, "a", NOW), Hlc::zero("a"));
    }

    #[test]
    fn a_stamp_in_the_future_is_clamped_to_now() {
        let c = row_clock(
            &row("2026-01-01 10:00:00", Some("2099-01-01 00:00:00")),
            "a",
            NOW,
        );
        assert_eq!(c.wall_ms, NOW);
    }

    #[test]
    fn the_apps_local_isoformat_is_read_as_local_time() {
        let iso = parse_ms("2026-02-10T04:00:00.123456").unwrap();
        let expected = Local
            .from_local_datetime(
                &NaiveDateTime::parse_from_str("2026-02-10 04:00:00.123", "%Y-%m-%d %H:%M:%S%.f")
                    .unwrap(),
            )
            .earliest()
            .unwrap()
            .timestamp_millis() as u64;
        assert_eq!(iso, expected);
    }
}
