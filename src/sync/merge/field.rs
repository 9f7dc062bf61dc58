//! One field's versions as a version vector: per device its newest version and the greatest of its
//! clocks known to be superseded, so the state stays bounded by the number of devices and an old
//! version arriving late stays superseded.
//!
//! Must never drop a version that could still be on the frontier.

use super::Hlc;
use super::Value;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The newest version of a field from one device. `value` is `None` once the version is superseded
/// (only its clock is still needed, to know later arrivals from that device are older).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Version {
    pub(super) clock: Hlc,
    /// Absent once superseded; a present `null` is SQL NULL (serde alone would read it as absent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub(super) value: Option<Value>,
}

fn present_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Everything known about one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct FieldState {
    /// Per device: its newest version of this field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) newest: BTreeMap<String, Version>,
    /// Per device: the greatest of its clocks known to be superseded (all its older ones are too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) superseded: BTreeMap<String, Hlc>,
}

/// A value a device held before its first sync, with no known history.
fn is_base(clock: &Hlc) -> bool {
    clock.wall_ms == 0 && clock.counter == 0
}

impl FieldState {
    fn is_superseded(&self, clock: &Hlc) -> bool {
        self.superseded
            .get(&clock.device)
            .is_some_and(|upto| clock <= upto)
    }

    /// Marks `clock` (and so every older clock of its device) superseded.
    pub(super) fn supersede(&mut self, clock: &Hlc) -> bool {
        match self.superseded.get_mut(&clock.device) {
            Some(upto) if *upto >= *clock => return false,
            Some(upto) => *upto = clock.clone(),
            None => {
                self.superseded.insert(clock.device.clone(), clock.clone());
            }
        }
        if let Some(version) = self.newest.get_mut(&clock.device) {
            if version.clock <= *clock {
                version.value = None;
            }
        }
        true
    }

    /// Offers a version; kept if it is its device's newest.
    pub(super) fn offer(&mut self, clock: &Hlc, value: &Value) -> bool {
        let value = if self.is_superseded(clock) {
            None
        } else {
            Some(value)
        };
        match self.newest.get_mut(&clock.device) {
            Some(version) => match clock.cmp(&version.clock) {
                Ordering::Less => false,
                Ordering::Greater => {
                    *version = Version {
                        clock: clock.clone(),
                        value: value.cloned(),
                    };
                    true
                }
                // The same clock twice: a duplicate, normally. Should two events ever share a clock
                // with different values, keep the greater value so every device picks the same one.
                Ordering::Equal => match (&version.value, value) {
                    (Some(held), Some(offered))
                        if value_order(offered, held) == Ordering::Greater =>
                    {
                        version.value = Some(offered.clone());
                        true
                    }
                    _ => false,
                },
            },
            None => {
                self.newest.insert(
                    clock.device.clone(),
                    Version {
                        clock: clock.clone(),
                        value: value.cloned(),
                    },
                );
                true
            }
        }
    }

    /// The non-superseded versions, in clock order. Values held before any sync (the zero
    /// clock: each device's copy of a seeded row) are the common base, not rival edits: once
    /// any real edit of the field is known, they leave the frontier.
    pub(super) fn frontier(&self) -> impl Iterator<Item = (&Hlc, &Value)> {
        let mut versions: Vec<(&Hlc, &Value)> = self
            .newest
            .values()
            .filter_map(|v| v.value.as_ref().map(|value| (&v.clock, value)))
            .collect();
        if versions.iter().any(|(clock, _)| !is_base(clock)) {
            versions.retain(|(clock, _)| !is_base(clock));
        }
        versions.sort_by(|a, b| a.0.cmp(b.0));
        versions.into_iter()
    }
}

/// A total order on values, only to break the tie of two events that (wrongly) share a clock.
fn value_order(a: &Value, b: &Value) -> Ordering {
    a.to_string().cmp(&b.to_string())
}
