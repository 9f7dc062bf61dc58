//! The cache's in-memory picture: one `Entry` per local data file, the LRU order of
//! the evictable ones, and the byte counters the limit is checked against.
//!
//! Pure bookkeeping under the cache's `state` lock: no I/O here. Every change to an
//! entry goes through `State::update` so the counters and the LRU never drift.

use std::collections::{HashMap, HashSet};

use lru::LruCache;

use super::bitmap::Bitmap;
use crate::content::{chunk_count, CHUNK_SIZE};

pub struct Entry {
    pub size: u64,
    /// Chunks whose verified bytes are in the data file.
    pub present: Bitmap,
    /// The bitmap as last written to the index (a subset of what was synced to disk).
    pub synced: Bitmap,
    /// Local bytes (sum of present chunks).
    pub bytes: u64,
    /// Every chunk present AND the whole-file hash checked.
    pub complete: bool,
    /// A background whole-file check is running.
    pub verifying: bool,
    /// Written here, not uploaded yet: never evicted.
    pub dirty: bool,
    pub pinned: bool,
    /// Operations that need the blob to stay (materialize): never evicted meanwhile.
    pub holds: u32,
    /// Changes whenever bytes may disappear (a punched chunk, a new incarnation): a
    /// reader that read the file checks it did not change under it.
    pub gen: u64,
    /// Unix milliseconds of the last read (LRU order after a restart), persisted in batches.
    pub last_access: i64,
}

impl Entry {
    pub fn new(size: u64, gen: u64) -> Entry {
        let n = chunk_count(size);
        Entry {
            size,
            present: Bitmap::new(n),
            synced: Bitmap::new(n),
            bytes: 0,
            complete: false,
            verifying: false,
            dirty: false,
            pinned: false,
            holds: 0,
            gen,
            last_access: now(),
        }
    }

    pub fn chunk_len(&self, i: u64) -> u64 {
        let start = i * CHUNK_SIZE;
        (start + CHUNK_SIZE).min(self.size) - start
    }

    pub fn evictable(&self) -> bool {
        !self.dirty && !self.pinned && self.holds == 0
    }

    pub fn all_present(&self) -> bool {
        self.present.is_full()
    }

    pub fn set_present(&mut self, i: u64) {
        if !self.present.get(i) {
            self.present.set(i);
            self.bytes += self.chunk_len(i);
        }
    }

    pub fn clear_present(&mut self, i: u64) {
        if self.present.get(i) {
            self.present.clear(i);
            self.synced.clear(i);
            self.bytes -= self.chunk_len(i);
            self.complete = false;
        }
    }
}

pub struct State {
    pub entries: HashMap<String, Entry>,
    /// Evictable entries only; least recently used at the back.
    lru: LruCache<String, ()>,
    pub pins: HashSet<String>,
    /// Entries read since the last flush (their `last_access` goes to the index then).
    pub touched: HashSet<String>,
    next_gen: u64,
    pub evictable_bytes: u64,
}

impl State {
    pub fn new(pins: HashSet<String>) -> State {
        State {
            entries: HashMap::new(),
            lru: LruCache::unbounded(),
            pins,
            touched: HashSet::new(),
            next_gen: 1,
            evictable_bytes: 0,
        }
    }

    pub fn new_gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// Adds an entry as the most recently used.
    pub fn insert(&mut self, hash: &str, mut entry: Entry) {
        entry.pinned = self.pins.contains(hash);
        self.remove(hash);
        if entry.evictable() {
            self.evictable_bytes += entry.bytes;
            self.lru.push(hash.to_string(), ());
        }
        self.entries.insert(hash.to_string(), entry);
    }

    pub fn remove(&mut self, hash: &str) -> Option<Entry> {
        let entry = self.entries.remove(hash)?;
        if entry.evictable() {
            self.evictable_bytes -= entry.bytes;
        }
        self.lru.pop(hash);
        self.touched.remove(hash);
        Some(entry)
    }

    /// Changes an entry, keeping the evictable byte count and the LRU in step.
    pub fn update<R>(&mut self, hash: &str, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let entry = self.entries.get_mut(hash)?;
        let before = entry.evictable().then_some(entry.bytes);
        let out = f(entry);
        let after = entry.evictable().then_some(entry.bytes);
        self.evictable_bytes = self.evictable_bytes - before.unwrap_or(0) + after.unwrap_or(0);
        match (before.is_some(), after.is_some()) {
            (true, false) => {
                self.lru.pop(hash);
            }
            (false, true) => {
                self.lru.push(hash.to_string(), ());
            }
            _ => {}
        }
        Some(out)
    }

    /// Marks a read: most recently used, and remembered for the next flush.
    pub fn touch(&mut self, hash: &str) {
        if let Some(e) = self.entries.get_mut(hash) {
            e.last_access = now();
            self.lru.promote(hash);
            if !self.touched.contains(hash) {
                self.touched.insert(hash.to_string());
            }
        }
    }

    /// The least recently used evictable entry other than `except`.
    pub fn coldest_except(&self, except: Option<&str>) -> Option<String> {
        self.lru
            .iter()
            .rev()
            .map(|(k, _)| k)
            .find(|k| Some(k.as_str()) != except)
            .cloned()
    }

    pub fn set_pinned(&mut self, hash: &str, pinned: bool) {
        if pinned {
            self.pins.insert(hash.to_string());
        } else {
            self.pins.remove(hash);
        }
        self.update(hash, |e| e.pinned = pinned);
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
