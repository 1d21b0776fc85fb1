//! What the scan decided for each non-zero output cluster, and where the data area puts it.
//!
//! [`Plan`] keeps one record per *allocated* output cluster, in guest order, as two LEB128
//! varints: the gap since the previous allocated cluster, and the compressed length (0 for a
//! cluster stored uncompressed). That is 2 bytes for a run of uncompressed clusters and 3 to 4
//! for compressed ones, so memory grows by a few bytes per allocated cluster and not at all for
//! unallocated ones: a 1 TB sparse disk costs nothing.
//!
//! [`Packer`] places the clusters in the data area, front to back in guest order:
//! - an uncompressed cluster takes the next cluster-aligned host cluster;
//! - compressed clusters are packed byte after byte, as QEMU's `qcow2_alloc_bytes` packs them,
//!   and may straddle a host cluster boundary;
//! - every compressed cluster adds one reference to each host cluster its descriptor's range
//!   (`offset .. offset + nb_csectors * 512 - (offset & 511)`, i.e. up to the end of its last
//!   sector) touches, which is what `qemu-img check` counts; a host cluster that already has
//!   [`MAX_REFCOUNT`] references is skipped, as QEMU does when a refcount would overflow.
//!
//! The packing depends only on offsets relative to the (cluster-aligned) start of the data
//! area, so the scan can run it before the metadata size is known, and the writer replays it.

use std::io;

use crate::format::qcow2::tables::COMPRESSED_SECTOR_SIZE;

/// Largest refcount with `refcount_bits = 16`.
pub const MAX_REFCOUNT: u64 = u16::MAX as u64;

/// How one allocated output cluster is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Uncompressed, re-read from the input when written.
    Raw,
    /// Compressed to this many bytes (1 ..= cluster size - 1), kept in the spill.
    Compressed(u32),
}

/// The allocated output clusters, in guest order.
#[derive(Debug)]
pub struct Plan {
    records: Vec<u8>,
    /// The cluster after the last recorded one.
    next_cluster: u64,
    count: u64,
    compressed: u64,
    /// Distinct L2 tables needed, and the L1 index of the last one.
    l2_tables: u64,
    last_l1: Option<u64>,
    l2_entries: u64,
    packer: Packer,
}

impl Plan {
    /// An empty plan for `cluster_size`-byte clusters and `l2_entries` entries per L2 table.
    pub fn new(cluster_size: u64, l2_entries: u64) -> Self {
        Self {
            records: Vec::new(),
            next_cluster: 0,
            count: 0,
            compressed: 0,
            l2_tables: 0,
            last_l1: None,
            l2_entries,
            packer: Packer::new(cluster_size),
        }
    }

    /// Records guest cluster `cluster` (strictly after the previous one).
    pub fn push(&mut self, cluster: u64, stored: Stored) -> io::Result<()> {
        let gap = cluster
            .checked_sub(self.next_cluster)
            .ok_or_else(|| io::Error::other("clusters recorded out of order"))?;
        put_varint(&mut self.records, gap);
        let len = match stored {
            Stored::Raw => 0,
            Stored::Compressed(n) => {
                self.compressed += 1;
                u64::from(n)
            }
        };
        put_varint(&mut self.records, len);
        self.next_cluster = cluster + 1;
        self.count += 1;
        let l1 = cluster / self.l2_entries;
        if self.last_l1 != Some(l1) {
            self.last_l1 = Some(l1);
            self.l2_tables += 1;
        }
        self.packer.place(stored);
        Ok(())
    }

    /// Allocated clusters recorded.
    pub fn allocated(&self) -> u64 {
        self.count
    }

    /// Of which compressed.
    pub fn compressed(&self) -> u64 {
        self.compressed
    }

    /// L2 tables the output needs.
    pub fn l2_tables(&self) -> u64 {
        self.l2_tables
    }

    /// Host clusters the data area takes.
    pub fn data_clusters(&self) -> u64 {
        self.packer.clusters()
    }

    /// Bytes of the plan's records (for the memory statement in the report).
    pub fn record_bytes(&self) -> usize {
        self.records.len()
    }

    /// The records, in guest order.
    pub fn iter(&self) -> PlanIter<'_> {
        PlanIter {
            rest: &self.records,
            next_cluster: 0,
        }
    }
}

/// Iterates `(guest cluster, how stored)`.
pub struct PlanIter<'a> {
    rest: &'a [u8],
    next_cluster: u64,
}

impl Iterator for PlanIter<'_> {
    type Item = (u64, Stored);

    fn next(&mut self) -> Option<Self::Item> {
        let gap = get_varint(&mut self.rest)?;
        let len = get_varint(&mut self.rest)?;
        let cluster = self.next_cluster + gap;
        self.next_cluster = cluster + 1;
        let stored = if len == 0 {
            Stored::Raw
        } else {
            Stored::Compressed(u32::try_from(len).ok()?)
        };
        Some((cluster, stored))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Where one cluster goes in the data area, relative to its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Zero bytes to write before the cluster's data (alignment or a full host cluster).
    pub padding: u64,
    /// Byte offset of the data, relative to the start of the data area.
    pub offset: u64,
    /// Bytes of data.
    pub len: u64,
    /// Host clusters (relative) whose refcount the cluster adds one to: `first..=last`.
    pub first_cluster: u64,
    /// See `first_cluster`.
    pub last_cluster: u64,
}

/// Places clusters in the data area (see the module documentation).
#[derive(Debug, Clone)]
pub struct Packer {
    cluster_size: u64,
    pos: u64,
    /// The last host cluster compressed data touched, and how many descriptors touch it.
    touched: Option<(u64, u64)>,
}

impl Packer {
    /// An empty data area.
    pub fn new(cluster_size: u64) -> Self {
        Self {
            cluster_size,
            pos: 0,
            touched: None,
        }
    }

    /// Places the next cluster.
    pub fn place(&mut self, stored: Stored) -> Placement {
        let cs = self.cluster_size;
        let start = self.pos;
        match stored {
            Stored::Raw => {
                let offset = self.pos.next_multiple_of(cs);
                self.pos = offset + cs;
                Placement {
                    padding: offset - start,
                    offset,
                    len: cs,
                    first_cluster: offset / cs,
                    last_cluster: offset / cs,
                }
            }
            Stored::Compressed(len) => {
                let len = u64::from(len);
                let mut offset = self.pos;
                if let Some((c, n)) = self.touched
                    && c == offset / cs
                    && n >= MAX_REFCOUNT
                {
                    offset = offset.next_multiple_of(cs).max((c + 1) * cs);
                }
                let range_end = (offset + len).next_multiple_of(COMPRESSED_SECTOR_SIZE);
                let first = offset / cs;
                let last = (range_end - 1) / cs;
                let first_count = match self.touched {
                    Some((c, n)) if c == first => n + 1,
                    _ => 1,
                };
                self.touched = Some(if last == first {
                    (first, first_count)
                } else {
                    (last, 1)
                });
                self.pos = offset + len;
                Placement {
                    padding: offset - start,
                    offset,
                    len,
                    first_cluster: first,
                    last_cluster: last,
                }
            }
        }
    }

    /// Host clusters used so far (the last one may be partly filled).
    pub fn clusters(&self) -> u64 {
        self.pos.div_ceil(self.cluster_size)
    }

    /// Bytes used so far.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_a_few_bytes_each() {
        let mut p = Plan::new(65536, 8192);
        let input = [
            (0, Stored::Raw),
            (1, Stored::Compressed(300)),
            (1000, Stored::Raw),
            (1 << 40, Stored::Compressed(65535)),
        ];
        for (c, s) in input {
            p.push(c, s).unwrap();
        }
        assert_eq!(p.iter().collect::<Vec<_>>(), input);
        assert!(p.record_bytes() <= 2 + 3 + 3 + 9);
        assert_eq!(p.l2_tables(), 2);
        assert!(p.push(5, Stored::Raw).is_err(), "out of order");
    }

    #[test]
    fn compressed_clusters_pack_and_raw_clusters_align() {
        let mut k = Packer::new(65536);
        let a = k.place(Stored::Compressed(1000));
        assert_eq!(
            (a.offset, a.padding, a.first_cluster, a.last_cluster),
            (0, 0, 0, 0)
        );
        let b = k.place(Stored::Compressed(65000));
        assert_eq!((b.offset, b.first_cluster, b.last_cluster), (1000, 0, 1));
        let r = k.place(Stored::Raw);
        assert_eq!((r.offset, r.padding), (131072, 131072 - 66000));
        assert_eq!(k.clusters(), 3);
    }

    #[test]
    fn a_host_cluster_never_gets_more_references_than_a_refcount_holds() {
        let mut k = Packer::new(2 * 1024 * 1024);
        let mut counts = std::collections::BTreeMap::<u64, u64>::new();
        for _ in 0..70_000 {
            let p = k.place(Stored::Compressed(20));
            for c in p.first_cluster..=p.last_cluster {
                *counts.entry(c).or_default() += 1;
            }
        }
        assert!(counts.values().all(|&n| n <= MAX_REFCOUNT), "{counts:?}");
        assert!(counts.len() >= 2);
    }
}
