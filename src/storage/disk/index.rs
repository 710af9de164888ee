//! Which objects the disk tier holds and what they weigh, so that it stays within
//! `cache.disk.size`: quick_cache's S3-FIFO-like policy, as in memory, where an eviction
//! unlinks the object's file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pingora_cache::key::HashBinary;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

/// Filesystem block: a file takes whole blocks, so that is what it is charged.
const BLOCK: u64 = 4096;
/// Average object size assumed to size the ghost queue.
const TYPICAL_OBJECT: u64 = 64 * 1024;
/// Objects the index's ghost queue (keys recently evicted) is sized for at most; its
/// tables grow as they fill, whatever this says.
const MAX_ESTIMATED_OBJECTS: u64 = 1 << 20;

/// One object on disk: its charged size, which write put it there, and whether this
/// process knows its contents match its checksum.
#[derive(Clone, Copy, Debug)]
struct Slot {
    charged: u64,
    write: u64,
    verified: bool,
}

#[derive(Clone, Copy, Default)]
struct SlotWeighter;

impl Weighter<HashBinary, Slot> for SlotWeighter {
    fn weight(&self, _key: &HashBinary, slot: &Slot) -> u64 {
        slot.charged
    }
}

/// Counts evictions and collects the keys whose files must go.
#[derive(Clone, Default)]
struct Evictions(Arc<AtomicU64>);

/// What one insert displaced.
#[derive(Default)]
struct Displaced {
    writing: Option<(HashBinary, u64)>,
    unlink: Vec<HashBinary>,
}

impl Lifecycle<HashBinary, Slot> for Evictions {
    type RequestState = Displaced;

    fn on_evict(&self, state: &mut Displaced, key: HashBinary, slot: Slot) {
        match state.writing {
            // The same key: either the file this write replaced (already overwritten by
            // the rename), or this write itself turned away, whose file must go.
            Some((writing, write)) if writing == key => {
                if slot.write == write {
                    state.unlink.push(key);
                }
            }
            _ => {
                self.0.fetch_add(1, Ordering::Relaxed);
                state.unlink.push(key);
            }
        }
    }
}

pub(super) struct Index {
    slots: Cache<HashBinary, Slot, SlotWeighter, DefaultHashBuilder, Evictions>,
    evictions: Evictions,
    writes: AtomicU64,
    capacity: u64,
}

impl Index {
    pub(super) fn new(size: u64, max_object: usize) -> Index {
        let size_usize = usize::try_from(size).unwrap_or(usize::MAX);
        let shards = crate::storage::shard_count(size_usize, max_object);
        let capacity = size / shards as u64 * shards as u64;
        let options = OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(
                usize::try_from((capacity / TYPICAL_OBJECT).clamp(1, MAX_ESTIMATED_OBJECTS))
                    .unwrap_or(1),
            )
            .weight_capacity(capacity)
            .build()
            .expect("both required options (weight and item capacity) are set");
        let evictions = Evictions::default();
        Index {
            slots: Cache::with_options(
                options,
                SlotWeighter,
                DefaultHashBuilder::default(),
                evictions.clone(),
            ),
            evictions,
            writes: AtomicU64::new(0),
            capacity,
        }
    }

    /// Record a file of `size` bytes written for `key`, evicting (unlinking) others to
    /// make room; a file too large for the tier is unlinked at once.
    pub(super) fn insert(&self, key: HashBinary, size: u64, verified: bool, objects: &Path) {
        let write = self.writes.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            charged: size.div_ceil(BLOCK).max(1) * BLOCK,
            write,
            verified,
        };
        let mut displaced = Displaced {
            writing: Some((key, write)),
            unlink: Vec::new(),
        };
        self.slots.insert_with_lifecycle(key, slot, &mut displaced);
        unlink_all(objects, &displaced.unlink);
    }

    /// [`Index::insert`], unless `key` is already known (a write of this process won).
    pub(super) fn insert_if_absent(&self, key: HashBinary, size: u64, objects: &Path) {
        if !self.slots.contains_key(&key) {
            self.insert(key, size, false, objects);
        }
    }

    pub(super) fn contains(&self, key: &HashBinary) -> bool {
        self.slots.contains_key(key)
    }

    /// This process wrote `key`'s file (its block sums come from the bytes written).
    pub(super) fn verified(&self, key: &HashBinary) -> bool {
        self.slots.peek(key).is_some_and(|slot| slot.verified)
    }

    /// Count a read of `key`'s file, for eviction.
    pub(super) fn touch(&self, key: &HashBinary) {
        let _ = self.slots.get(key);
    }

    /// Drop `key` from the index (its file is gone or going).
    pub(super) fn forget(&self, key: &HashBinary) {
        self.slots.remove(key);
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes charged for the files held.
    pub(super) fn weight(&self) -> u64 {
        self.slots.weight()
    }

    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(super) fn evictions(&self) -> u64 {
        self.evictions.0.load(Ordering::Relaxed)
    }
}

fn unlink_all(objects: &Path, keys: &[HashBinary]) {
    for key in keys {
        let path: PathBuf = super::object_path(objects, key);
        super::remove_file(&path);
    }
}
