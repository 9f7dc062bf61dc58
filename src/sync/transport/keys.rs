//! The key layout of a log stream: `<prefix>logs/<device>/<seq>.json` and
//! `<prefix>snapshots/<device>/<seq>.json`, seq zero-padded to 12 digits so that listings
//! sort. Must never accept a key whose device part could leave its folder.

/// A log stream: the key prefix it lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    prefix: &'static str,
}

/// Which of a device's objects a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Log,
    Snapshot,
}

impl Stream {
    /// The database's change logs: `logs/…`, `snapshots/…`.
    pub const DATABASE: Stream = Stream { prefix: "" };
    /// The namespace's change logs: `ns/logs/…`, `ns/snapshots/…`.
    pub const NAMESPACE: Stream = Stream { prefix: "ns/" };

    pub const fn with_prefix(prefix: &'static str) -> Stream {
        Stream { prefix }
    }

    pub fn log_key(&self, device: &str, seq: u64) -> String {
        format!("{}logs/{device}/{seq:012}.json", self.prefix)
    }

    pub fn snapshot_key(&self, device: &str, seq: u64) -> String {
        format!("{}snapshots/{device}/{seq:012}.json", self.prefix)
    }

    /// The listing prefix of every device's logs (`kind`), or one device's.
    pub fn list_prefix(&self, kind: Kind, device: Option<&str>) -> String {
        let k = match kind {
            Kind::Log => "logs",
            Kind::Snapshot => "snapshots",
        };
        match device {
            Some(d) => format!("{}{k}/{d}/", self.prefix),
            None => format!("{}{k}/", self.prefix),
        }
    }

    /// `(kind, device, seq)` of a key of this stream; None for anything else.
    pub fn parse(&self, key: &str) -> Option<(Kind, String, u64)> {
        let rest = key.strip_prefix(self.prefix)?;
        let (kind, rest) = if let Some(r) = rest.strip_prefix("logs/") {
            (Kind::Log, r)
        } else if let Some(r) = rest.strip_prefix("snapshots/") {
            (Kind::Snapshot, r)
        } else {
            return None;
        };
        let (device, file) = rest.split_once('/')?;
        let seq = file.strip_suffix(".json")?.parse().ok()?;
        if device.is_empty() || !device.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        Some((kind, device.to_string(), seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_per_stream_and_odd_keys_are_refused() {
        for s in [Stream::DATABASE, Stream::NAMESPACE] {
            assert_eq!(
                s.parse(&s.log_key("ab12", 7)),
                Some((Kind::Log, "ab12".into(), 7))
            );
            assert_eq!(
                s.parse(&s.snapshot_key("ab12", 9)),
                Some((Kind::Snapshot, "ab12".into(), 9))
            );
        }
        assert_eq!(Stream::DATABASE.parse("ns/logs/ab/1.json"), None);
        assert_eq!(Stream::NAMESPACE.parse("logs/ab/1.json"), None);
        assert_eq!(Stream::DATABASE.parse("logs/../x/1.json"), None);
        assert_eq!(Stream::DATABASE.parse("logs/a/b/1.json"), None);
        assert_eq!(Stream::NAMESPACE.parse("ns/logs/../1.json"), None);
    }
}
