//! The reference counts rebuilt from what references each host cluster: QEMU's in-memory
//! refcount table (IMRT, `qcow2_inc_refcounts_imrt` in `block/qcow2-refcount.c`).
//!
//! QEMU stores the IMRT at the image's refcount width, so a count saturates at `refcount_max`
//! (an "overflow" corruption). Here each cluster takes one byte, with counts of 255 and more
//! kept in a side map: the semantics are QEMU's for every width (the caller passes
//! `refcount_max`), and the memory is one byte per host cluster of the file (plus one),
//! whatever the refcount width. Counts above 254 only occur with hundreds of snapshots.

use std::collections::HashMap;

/// Marks a count kept in the side map.
const SPILLED: u8 = u8::MAX;

/// Rebuilt reference counts, indexed by host cluster.
#[derive(Debug, Default)]
pub(super) struct RebuiltRefcounts {
    counts: Vec<u8>,
    spill: HashMap<u64, u64>,
}

impl RebuiltRefcounts {
    /// Counts for `clusters` host clusters, all zero.
    pub(super) fn new(clusters: u64) -> Self {
        Self {
            counts: vec![0; clusters as usize],
            spill: HashMap::new(),
        }
    }

    /// Clusters covered (QEMU's `nb_clusters`, which references may grow by one).
    pub(super) fn len(&self) -> u64 {
        self.counts.len() as u64
    }

    /// Grows the table to cover cluster `index` (QEMU's `realloc_refcount_array`).
    pub(super) fn grow_to(&mut self, index: u64) {
        if index >= self.len() {
            self.counts.resize(index as usize + 1, 0);
        }
    }

    /// The count of cluster `index`; 0 outside the table.
    pub(super) fn get(&self, index: u64) -> u64 {
        match self.counts.get(index as usize) {
            None => 0,
            Some(&SPILLED) => self.spill.get(&index).copied().unwrap_or(0),
            Some(&c) => u64::from(c),
        }
    }

    /// Adds one reference to cluster `index`, which must be covered; returns `false`, leaving
    /// the count alone, when it is already `max` (QEMU: "overflow cluster").
    pub(super) fn increment(&mut self, index: u64, max: u64) -> bool {
        let Some(slot) = self.counts.get_mut(index as usize) else {
            return false;
        };
        match *slot {
            SPILLED => {
                let c = self.spill.entry(index).or_insert(0);
                if *c >= max {
                    return false;
                }
                *c += 1;
            }
            c if u64::from(c) >= max => return false,
            c if c == SPILLED - 1 => {
                *slot = SPILLED;
                self.spill.insert(index, u64::from(SPILLED));
            }
            c => *slot = c + 1,
        }
        true
    }

    /// Adds up to `n` references to cluster `index` without passing `max`; returns how many
    /// were added (the rest are QEMU's "overflow cluster" corruptions, one each).
    pub(super) fn increment_by(&mut self, index: u64, n: u64, max: u64) -> u64 {
        if n == 1 {
            return u64::from(self.increment(index, max));
        }
        if index >= self.len() {
            return 0;
        }
        let current = self.get(index);
        let added = n.min(max.saturating_sub(current));
        let total = current + added;
        if let Some(slot) = self.counts.get_mut(index as usize) {
            if total >= u64::from(SPILLED) {
                *slot = SPILLED;
                self.spill.insert(index, total);
            } else {
                *slot = total as u8;
            }
        }
        added
    }

    /// The byte counts of clusters `start..start + n` (for the comparison loop): values below
    /// 255 are the counts; 255 means "ask [`Self::get`]".
    pub(super) fn raw(&self, start: u64, n: u64) -> &[u8] {
        let s = (start as usize).min(self.counts.len());
        let e = (start.saturating_add(n) as usize).min(self.counts.len());
        &self.counts[s..e]
    }

    /// Whether a raw byte stands for a count kept in the side map.
    pub(super) fn is_spilled(raw: u8) -> bool {
        raw == SPILLED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact_past_one_byte() {
        let mut r = RebuiltRefcounts::new(2);
        for _ in 0..1000 {
            assert!(r.increment(1, u64::from(u16::MAX)));
        }
        assert_eq!(r.get(1), 1000);
        assert_eq!(r.get(0), 0);
        assert!(RebuiltRefcounts::is_spilled(r.raw(1, 1)[0]));
    }

    #[test]
    fn increments_stop_at_the_refcount_maximum() {
        let mut r = RebuiltRefcounts::new(1);
        assert!(r.increment(0, 1));
        assert!(!r.increment(0, 1));
        assert_eq!(r.get(0), 1);
        let mut r = RebuiltRefcounts::new(1);
        for _ in 0..255 {
            assert!(r.increment(0, 255));
        }
        assert!(!r.increment(0, 255));
        assert_eq!(r.get(0), 255);
    }

    #[test]
    fn bulk_increments_match_single_ones() {
        let mut r = RebuiltRefcounts::new(1);
        assert_eq!(r.increment_by(0, 300, 1000), 300);
        assert_eq!(r.get(0), 300);
        assert_eq!(r.increment_by(0, 800, 1000), 700);
        assert_eq!(r.get(0), 1000);
        let mut r = RebuiltRefcounts::new(1);
        assert_eq!(r.increment_by(0, 3, 1), 1);
        assert_eq!(r.get(0), 1);
    }

    #[test]
    fn the_table_grows_on_demand() {
        let mut r = RebuiltRefcounts::new(1);
        assert!(!r.increment(3, 10));
        r.grow_to(3);
        assert_eq!(r.len(), 4);
        assert!(r.increment(3, 10));
        assert_eq!(r.get(3), 1);
    }
}
