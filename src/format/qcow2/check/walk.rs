//! The table walkers: every L1 and L2 table, the snapshot table, the refcount structures, the
//! LUKS header and the bitmaps, each counted as QEMU's `calculate_refcounts` counts it
//! (`block/qcow2-refcount.c`), then `compare_refcounts` and `check_oflag_copied`.
//!
//! Each L2 table is read once, with one reused cluster-sized buffer (QEMU reads the active ones
//! twice); L1 and refcount tables are read in bounded chunks, and only their parts inside the
//! file (QEMU reads zeros past the end, which reference nothing). Data clusters are never read.

use super::super::tables::{
    L1E_OFFSET_MASK, L1E_RESERVED_MASK, L2E_OFFSET_MASK, L2E_STD_RESERVED_MASK, L2Entry,
    OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO, REFT_OFFSET_MASK, REFT_RESERVED_MASK, refcount_at,
};
use super::bitmaps::{self, BitmapEntry, TABLE_ENTRY_OFFSET};
use super::counters::CheckCounts;
use super::error::CheckError;
use super::open::{CheckLayout, qemu_can_read};
use super::read::{ReadFailure, read_zero_filled};
use super::rebuild::RebuiltRefcounts;
use super::report::{FindingSink, Phase, Severity, Table, c_alt_hex};
use super::snapshots::SnapshotTable;
use super::stored::StoredRefcounts;
use crate::format::bytes::be64;
use crate::source::ReadAt;

/// L1 entries read at a time (64 KiB).
const L1_CHUNK_ENTRIES: u64 = 8192;
/// QEMU's limit on an L1 table, in entries (`QCOW_MAX_L1_SIZE / L1E_SIZE`).
const MAX_L1_ENTRIES: u32 = (32 * 1024 * 1024) / 8;
/// All 32 subclusters allocated (`QCOW_L2_BITMAP_ALL_ALLOC`).
const L2_BITMAP_ALL_ALLOC: u64 = 0xffff_ffff;

/// QEMU's cluster types (`QCow2ClusterType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterType {
    Unallocated,
    ZeroPlain,
    ZeroAlloc,
    Normal,
    Compressed,
}

/// Whether a walk counts allocation and fragmentation (QEMU's `CHECK_FRAG_INFO`: the active
/// L1 only) and checks COPIED flags (the active L1 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L1Kind {
    Active,
    Snapshot,
}

/// The state of one check: the rebuilt and stored refcounts, the counters and the findings.
pub(super) struct Walker<'a, S: ReadAt + ?Sized> {
    src: &'a S,
    layout: &'a CheckLayout,
    pub(super) rebuilt: RebuiltRefcounts,
    stored: StoredRefcounts,
    pub(super) counts: CheckCounts,
    pub(super) sink: FindingSink,
    cluster_buf: Vec<u8>,
    refcount_max: u64,
    /// How many times the table being walked is referenced by the L1 table being walked: an L2
    /// table that several entries of one L1 table point at is walked once and its effects
    /// counted that many times (see [`Walker::check_l1`]).
    mult: u64,
}

impl<'a, S: ReadAt + ?Sized> Walker<'a, S> {
    pub(super) fn new(
        src: &'a S,
        layout: &'a CheckLayout,
        file_clusters: u64,
        stored: StoredRefcounts,
        counts: CheckCounts,
        sink: FindingSink,
    ) -> Self {
        Self {
            src,
            layout,
            rebuilt: RebuiltRefcounts::new(file_clusters),
            stored,
            counts,
            sink,
            cluster_buf: vec![0u8; layout.cluster_size() as usize],
            refcount_max: layout.refcount_max(),
            mult: 1,
        }
    }

    /// Counts a corruption, [`Self::mult`] times.
    fn corruption(
        &mut self,
        phase: Phase,
        table: Table,
        offset: u64,
        make: impl FnOnce() -> String,
    ) {
        self.counts.corruptions += self.mult;
        self.push_repeated(phase, Severity::Corruption, table, offset, make);
    }

    /// Records a finding [`Self::mult`] times (as many as the report has room for).
    fn push_repeated(
        &mut self,
        phase: Phase,
        severity: Severity,
        table: Table,
        offset: u64,
        make: impl FnOnce() -> String,
    ) {
        self.sink
            .push_n(phase, severity, table, offset, self.mult, make);
    }

    /// `calculate_refcounts`: counts every reference, checking each table on the way.
    pub(super) fn calculate(
        &mut self,
        snapshots: &SnapshotTable,
        bitmap_entries: &[BitmapEntry],
    ) -> Result<(), CheckError> {
        let layout = self.layout;
        let cs = layout.cluster_size();
        self.inc_refcounts(0, cs, Table::Header, 0)?;
        self.check_l1(layout.l1_table_offset, layout.l1_size, L1Kind::Active)?;

        if layout.has_data_file() && !snapshots.entries.is_empty() {
            let n = snapshots.entries.len();
            self.corruption(
                Phase::Calculate,
                Table::SnapshotTable,
                layout.snapshots_offset,
                || format!("ERROR {n} snapshots in image with data file"),
            );
        }
        for sn in &snapshots.entries {
            if sn.l1_table_offset % cs != 0 {
                self.corruption(Phase::Calculate, Table::SnapshotTable, layout.snapshots_offset, || {
                    format!(
                        "ERROR snapshot {} ({}) l1_offset={}: L1 table is not cluster aligned; snapshot table entry corrupted",
                        sn.id, sn.name, c_alt_hex(sn.l1_table_offset)
                    )
                });
                continue;
            }
            if sn.l1_size > MAX_L1_ENTRIES {
                self.corruption(Phase::Calculate, Table::SnapshotTable, layout.snapshots_offset, || {
                    format!(
                        "ERROR snapshot {} ({}) l1_size={}: L1 table is too large; snapshot table entry corrupted",
                        sn.id, sn.name, c_alt_hex(u64::from(sn.l1_size))
                    )
                });
                continue;
            }
            self.check_l1(sn.l1_table_offset, sn.l1_size, L1Kind::Snapshot)?;
        }
        self.inc_refcounts(
            layout.snapshots_offset,
            snapshots.size,
            Table::SnapshotTable,
            layout.snapshots_offset,
        )?;
        self.inc_refcounts(
            layout.refcount_table_offset,
            layout.refcount_table_entries * 8,
            Table::RefcountTable,
            layout.refcount_table_offset,
        )?;
        if let Some((offset, length)) = layout.crypto_header
            && length != 0
        {
            self.inc_refcounts(offset, length, Table::CryptoHeader, offset)?;
        }
        if let Some(loc) = layout.bitmaps {
            self.inc_refcounts(
                loc.directory_offset,
                loc.directory_size,
                Table::BitmapDirectory,
                loc.directory_offset,
            )?;
            for bm in bitmap_entries {
                self.inc_refcounts(
                    bm.table_offset,
                    u64::from(bm.table_size) * 8,
                    Table::BitmapTable,
                    bm.table_offset,
                )?;
                let mut data = Vec::new();
                let loaded = bitmaps::for_each_table_entry(self.src, layout, bm, |e| {
                    let offset = e & TABLE_ENTRY_OFFSET;
                    if offset != 0 {
                        data.push(offset);
                    }
                });
                match loaded {
                    Ok(()) => {}
                    Err(bitmaps::BitmapError::Io(e)) => return Err(CheckError::Io(e)),
                    Err(bitmaps::BitmapError::Invalid(m)) => {
                        // QEMU counts one corruption and stops the check.
                        self.counts.corruptions += 1;
                        return Err(CheckError::Aborted(format!("bitmap '{}': {m}", bm.name)));
                    }
                }
                for offset in data {
                    self.inc_refcounts(offset, cs, Table::BitmapTable, bm.table_offset)?;
                }
            }
        }
        self.check_refblocks()
    }

    /// `qcow2_inc_refcounts_imrt`: one more reference to each cluster of
    /// `[offset, offset + size)`. Offsets and sizes are QEMU's `int64_t`s, so the arithmetic
    /// wraps as it does there.
    fn inc_refcounts(
        &mut self,
        offset: u64,
        size: u64,
        table: Table,
        at: u64,
    ) -> Result<(), CheckError> {
        let size_i = size as i64;
        if size_i <= 0 {
            return Ok(());
        }
        let cs = self.layout.cluster_size();
        let offset_i = offset as i64;
        let file_len = self.layout.file_len as i64;
        if offset_i.wrapping_add(size_i).wrapping_sub(file_len) >= cs as i64 {
            self.corruption(Phase::Calculate, table, at, || {
                format!(
                    "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset {offset:#x} size {size:#x}"
                )
            });
            return Ok(());
        }
        let mask = !(cs as i64 - 1);
        let start = (offset_i & mask) as u64;
        let last = (offset_i.wrapping_add(size_i).wrapping_sub(1) & mask) as u64;
        let bits = self.layout.cluster_bits;
        let mut cluster_offset = start;
        loop {
            let k = cluster_offset >> bits;
            if k >= self.rebuilt.len() {
                // Only a wrapped (negative) offset gets here with more than one cluster to
                // add; QEMU's allocation of such a table fails.
                if k > self.rebuilt.len() {
                    self.counts.check_errors += 1;
                    return Err(CheckError::Aborted("Cannot allocate memory".into()));
                }
                self.rebuilt.grow_to(k);
            }
            let added = self.rebuilt.increment_by(k, self.mult, self.refcount_max);
            if added < self.mult {
                let mult = self.mult;
                self.mult = mult - added;
                self.corruption(Phase::Calculate, table, at, || {
                    format!("ERROR: overflow cluster offset={cluster_offset:#x}")
                });
                self.mult = mult;
            }
            if cluster_offset >= last {
                break;
            }
            cluster_offset += cs;
        }
        Ok(())
    }

    /// `check_refcounts_l1`, and for the active table the L1 half of `check_oflag_copied`.
    fn check_l1(&mut self, l1_offset: u64, l1_size: u32, kind: L1Kind) -> Result<(), CheckError> {
        if l1_size == 0 {
            return Ok(());
        }
        let (l1_table, l2_table) = match kind {
            L1Kind::Active => (Table::ActiveL1, Table::ActiveL2),
            L1Kind::Snapshot => (Table::SnapshotL1, Table::SnapshotL2),
        };
        let bytes = u64::from(l1_size) * 8;
        self.inc_refcounts(l1_offset, bytes, l1_table, l1_offset)?;
        if !qemu_can_read(l1_offset, bytes) {
            self.counts.check_errors += 1;
            return Err(CheckError::Aborted(
                "I/O error in check_refcounts_l1: Input/output error".into(),
            ));
        }
        // Past the end of the file the table reads as zeros: nothing to walk there.
        let in_file = self
            .layout
            .file_len
            .saturating_sub(l1_offset)
            .div_ceil(8)
            .min(u64::from(l1_size));
        let mut chunk = vec![0u8; (in_file.min(L1_CHUNK_ENTRIES) * 8) as usize];
        let mut shared = self.shared_l2_tables(l1_offset, in_file, &mut chunk)?;
        let mut first = 0u64;
        while first < in_file {
            let n = (in_file - first).min(L1_CHUNK_ENTRIES);
            let buf = &mut chunk[..(n * 8) as usize];
            self.read(buf, l1_offset + first * 8)?;
            for (j, raw) in buf.chunks_exact(8).enumerate() {
                let entry = be64(raw, 0);
                if entry == 0 {
                    continue;
                }
                let index = first + j as u64;
                let entry_offset = l1_offset + index * 8;
                // An L2 table several entries share is walked once, at its first entry, with
                // its effects counted once per entry.
                let walks = match shared.as_mut() {
                    None => 1,
                    Some(shared) => shared.take(entry & L1E_OFFSET_MASK),
                };
                self.check_l1_entry(entry, index, entry_offset, kind, l1_table, l2_table, walks)?;
            }
            first += n;
        }
        Ok(())
    }

    /// Finds the L2 offsets that several entries of one L1 table share (never in a valid
    /// image). QEMU walks such a table once per entry, so a hostile L1 table of 4 million
    /// entries pointing at one 2 MiB L2 table would cost 10^12 entry visits; walking it once
    /// and counting its effects per entry gives the same counters in time linear in the file.
    /// `None` when no offset repeats (the usual case).
    fn shared_l2_tables(
        &mut self,
        l1_offset: u64,
        in_file: u64,
        chunk: &mut [u8],
    ) -> Result<Option<SharedTables>, CheckError> {
        let mut offsets = Vec::new();
        let mut first = 0u64;
        while first < in_file {
            let n = (in_file - first).min(L1_CHUNK_ENTRIES);
            let buf = &mut chunk[..(n * 8) as usize];
            self.read(buf, l1_offset + first * 8)?;
            offsets.extend(
                buf.chunks_exact(8)
                    .map(|raw| be64(raw, 0))
                    .filter(|&e| e != 0)
                    .map(|e| e & L1E_OFFSET_MASK),
            );
            first += n;
        }
        offsets.sort_unstable();
        let mut distinct: Vec<(u64, u64)> = Vec::new();
        for o in offsets {
            match distinct.last_mut() {
                Some((last, count)) if *last == o => *count += 1,
                _ => distinct.push((o, 1)),
            }
        }
        if distinct.iter().all(|&(_, c)| c == 1) {
            return Ok(None);
        }
        Ok(Some(SharedTables { distinct }))
    }

    #[allow(clippy::too_many_arguments)]
    fn check_l1_entry(
        &mut self,
        entry: u64,
        index: u64,
        entry_offset: u64,
        kind: L1Kind,
        l1_table: Table,
        l2_table: Table,
        walks: u64,
    ) -> Result<(), CheckError> {
        if entry & L1E_RESERVED_MASK != 0 {
            self.corruption(Phase::Calculate, l1_table, entry_offset, || {
                format!("ERROR found L1 entry with reserved bits set: {entry:x}")
            });
        }
        let l2_offset = entry & L1E_OFFSET_MASK;
        let cs = self.layout.cluster_size();
        self.inc_refcounts(l2_offset, cs, l2_table, entry_offset)?;
        if !l2_offset.is_multiple_of(cs) {
            self.corruption(Phase::Calculate, l1_table, entry_offset, || {
                format!(
                    "ERROR l2_offset={l2_offset:x}: Table is not cluster aligned; L1 entry corrupted"
                )
            });
        }
        // check_oflag_copied() visits the active entries whose L2 offset is not 0.
        let copied_check = kind == L1Kind::Active && l2_offset != 0;
        if copied_check
            && let Ok(refcount) = self
                .stored
                .get(self.src, l2_offset >> self.layout.cluster_bits)?
            && (refcount == 1) != (entry & OFLAG_COPIED != 0)
        {
            self.counts.corruptions += 1;
            self.sink.push(Phase::Copied, Severity::Corruption, l1_table, entry_offset, || {
                format!(
                    "ERROR OFLAG_COPIED L2 cluster: l1_index={index} l1_entry={entry:x} refcount={refcount}"
                )
            });
        }
        if walks == 0 {
            return Ok(());
        }
        self.mult = walks;
        let walked = self.check_l2(l2_offset, kind, copied_check, l2_table);
        self.mult = 1;
        walked
    }

    /// `check_refcounts_l2`, and for the active tables the L2 half of `check_oflag_copied`.
    fn check_l2(
        &mut self,
        l2_offset: u64,
        kind: L1Kind,
        copied_check: bool,
        table: Table,
    ) -> Result<(), CheckError> {
        let layout = self.layout;
        let cs = layout.cluster_size();
        let cluster_bits = layout.cluster_bits;
        let extended = layout.extended_l2();
        let data_file = layout.has_data_file();
        let entry_size = layout.l2_entry_size();
        let frag = kind == L1Kind::Active;
        let mut buf = std::mem::take(&mut self.cluster_buf);
        let read = self.read(&mut buf, l2_offset);
        let result = read.and_then(|()| {
            let mut next_contiguous = 0u64;
            for (i, raw) in buf.chunks_exact(entry_size as usize).enumerate() {
                let word = be64(raw, 0);
                let bitmap = if extended { be64(raw, 8) } else { 0 };
                if word == 0 && bitmap == 0 {
                    continue;
                }
                let at = l2_offset + i as u64 * entry_size;
                let kind = cluster_type(word, extended, data_file);
                if kind != ClusterType::Compressed && word & L2E_STD_RESERVED_MASK != 0 {
                    self.corruption(Phase::Calculate, table, at, || {
                        format!("ERROR found l2 entry with reserved bits set: {word:x}")
                    });
                }
                match kind {
                    ClusterType::Compressed => {
                        let d = L2Entry { word, bitmap: None }.compressed(cluster_bits);
                        if word & OFLAG_COPIED != 0 {
                            let coffset = d.host_offset;
                            self.corruption(Phase::Calculate, table, at, || {
                                format!(
                                    "ERROR: coffset={coffset:#x}: copied flag must never be set for compressed clusters"
                                )
                            });
                        }
                        if data_file {
                            self.corruption(Phase::Calculate, table, at, || {
                                format!("ERROR compressed cluster {i} with data file, entry={word:#x}")
                            });
                            continue;
                        }
                        if bitmap != 0 {
                            self.corruption(Phase::Calculate, table, at, || {
                                format!(
                                    "ERROR compressed cluster {i} with non-zero subcluster allocation bitmap, entry={word:#x}"
                                )
                            });
                            continue;
                        }
                        self.inc_refcounts(d.host_offset, d.compressed_len(), table, at)?;
                        if frag {
                            self.counts.allocated_clusters += self.mult;
                            self.counts.compressed_clusters += self.mult;
                            self.counts.fragmented_clusters += self.mult;
                        }
                    }
                    ClusterType::ZeroAlloc | ClusterType::Normal => {
                        let offset = word & L2E_OFFSET_MASK;
                        if (bitmap >> 32) & bitmap != 0 {
                            self.corruption(Phase::Calculate, table, at, || {
                                format!(
                                    "ERROR offset={offset:x}: Allocated cluster has corrupted subcluster allocation bitmap"
                                )
                            });
                        }
                        if !offset.is_multiple_of(cs) {
                            let contains_data = if extended {
                                bitmap & L2_BITMAP_ALL_ALLOC != 0
                            } else {
                                word & OFLAG_ZERO == 0
                            };
                            self.corruption(Phase::Calculate, table, at, || {
                                if contains_data {
                                    format!(
                                        "ERROR offset={offset:x}: Data cluster is not properly aligned; L2 entry corrupted."
                                    )
                                } else {
                                    format!(
                                        "ERROR offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted."
                                    )
                                }
                            });
                        }
                        if frag {
                            self.counts.allocated_clusters += self.mult;
                            if next_contiguous != 0 && offset != next_contiguous {
                                self.counts.fragmented_clusters += self.mult;
                            }
                            next_contiguous = offset + cs;
                        }
                        if !data_file {
                            self.inc_refcounts(offset, cs, table, at)?;
                        }
                        if copied_check {
                            let refcount = if data_file {
                                Ok(1)
                            } else {
                                self.stored.get(self.src, offset >> cluster_bits)?
                            };
                            if let Ok(refcount) = refcount
                                && (refcount == 1) != (word & OFLAG_COPIED != 0)
                            {
                                self.counts.corruptions += self.mult;
                                self.push_repeated(Phase::Copied, Severity::Corruption, table, at, || {
                                    format!(
                                        "ERROR OFLAG_COPIED data cluster: l2_entry={word:x} refcount={refcount}"
                                    )
                                });
                            }
                        }
                    }
                    ClusterType::ZeroPlain => {}
                    ClusterType::Unallocated => {
                        if bitmap & L2_BITMAP_ALL_ALLOC != 0 {
                            self.corruption(Phase::Calculate, table, at, || {
                                "ERROR: Unallocated cluster has non-zero subcluster allocation map"
                                    .to_string()
                            });
                        }
                    }
                }
            }
            Ok(())
        });
        self.cluster_buf = buf;
        result
    }

    /// `check_refblocks`: every refcount table entry must point at an aligned block inside the
    /// image that nothing else uses.
    fn check_refblocks(&mut self) -> Result<(), CheckError> {
        let cs = self.layout.cluster_size();
        let bits = self.layout.cluster_bits;
        let table_offset = self.layout.refcount_table_offset;
        // Entries past the end of the file read as zero and pass every test.
        let entries: Vec<(u64, u64)> = self
            .stored
            .reftable()
            .iter()
            .enumerate()
            .filter(|(_, e)| **e != 0)
            .map(|(i, e)| (i as u64, *e))
            .collect();
        for (i, raw) in entries {
            let at = table_offset + i * 8;
            let offset = raw & REFT_OFFSET_MASK;
            let cluster = offset >> bits;
            if raw & REFT_RESERVED_MASK != 0 {
                self.corruption(Phase::Calculate, Table::RefcountTable, at, || {
                    format!("ERROR refcount table entry {i} has reserved bits set")
                });
                continue;
            }
            if !offset.is_multiple_of(cs) {
                self.corruption(Phase::Calculate, Table::RefcountTable, at, || {
                    format!(
                        "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
                    )
                });
                continue;
            }
            if cluster >= self.rebuilt.len() {
                self.corruption(Phase::Calculate, Table::RefcountTable, at, || {
                    format!("ERROR refcount block {i} is outside image")
                });
                continue;
            }
            if offset != 0 {
                self.inc_refcounts(offset, cs, Table::RefcountTable, at)?;
                let refcount = self.rebuilt.get(cluster);
                if refcount != 1 {
                    self.corruption(Phase::Calculate, Table::RefcountTable, at, || {
                        format!("ERROR refcount block {i} refcount={refcount}")
                    });
                }
            }
        }
        Ok(())
    }

    /// `compare_refcounts`, then `image_end_offset`.
    pub(super) fn compare(&mut self) {
        let n = self.rebuilt.len();
        let block_bits = self.stored.block_bits();
        let per_block = 1u64 << block_bits;
        let order = self.layout.refcount_order;
        let cs = self.layout.cluster_size();
        let mut highest = 0u64;
        let mut block_index = 0u64;
        while block_index << block_bits < n {
            let first = block_index << block_bits;
            let count = per_block.min(n - first);
            let raw = self.rebuilt.raw(first, count);
            match self.stored.loaded_block(block_index) {
                Err(_) => {
                    for i in first..first + count {
                        self.counts.check_errors += 1;
                        self.sink.push(
                            Phase::Compare,
                            Severity::CheckError,
                            Table::Refcounts,
                            i << self.layout.cluster_bits,
                            || format!("Can't get refcount for cluster {i}: Input/output error"),
                        );
                    }
                }
                Ok(block) => {
                    for (w, &r) in raw.iter().enumerate() {
                        let stored = block.map_or(0, |b| refcount_at(b, w as u64, order));
                        if stored == 0 && r == 0 {
                            continue;
                        }
                        let i = first + w as u64;
                        highest = i;
                        let rebuilt = if RebuiltRefcounts::is_spilled(r) {
                            self.rebuilt.get(i)
                        } else {
                            u64::from(r)
                        };
                        if stored != rebuilt {
                            let severity = if stored < rebuilt {
                                self.counts.corruptions += 1;
                                Severity::Corruption
                            } else {
                                self.counts.leaks += 1;
                                Severity::Leak
                            };
                            self.sink.push(
                                Phase::Compare,
                                severity,
                                Table::Refcounts,
                                i * cs,
                                || {
                                    format!(
                                        "{} cluster {i} refcount={stored} reference={rebuilt}",
                                        if severity == Severity::Corruption {
                                            "ERROR"
                                        } else {
                                            "Leaked"
                                        }
                                    )
                                },
                            );
                        }
                    }
                }
            }
            block_index += 1;
        }
        self.counts.image_end_offset = (highest + 1) * cs;
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<(), CheckError> {
        match read_zero_filled(self.src, buf, offset) {
            Ok(()) => Ok(()),
            Err(ReadFailure::OutOfRange) => Err(CheckError::Aborted(
                "I/O error while reading a table: Input/output error".into(),
            )),
            Err(ReadFailure::Io(e)) => Err(CheckError::Io(e)),
        }
    }
}

/// The L2 offsets an L1 table shares between entries, with how many entries point at each;
/// the count is handed out once, to the first entry, and 0 to the others.
struct SharedTables {
    distinct: Vec<(u64, u64)>,
}

impl SharedTables {
    fn take(&mut self, l2_offset: u64) -> u64 {
        match self.distinct.binary_search_by_key(&l2_offset, |&(o, _)| o) {
            Ok(i) => std::mem::take(&mut self.distinct[i].1),
            Err(_) => 1,
        }
    }
}

/// `qcow2_get_cluster_type`.
fn cluster_type(word: u64, extended: bool, data_file: bool) -> ClusterType {
    if word & OFLAG_COMPRESSED != 0 {
        ClusterType::Compressed
    } else if word & OFLAG_ZERO != 0 && !extended {
        if word & L2E_OFFSET_MASK != 0 {
            ClusterType::ZeroAlloc
        } else {
            ClusterType::ZeroPlain
        }
    } else if word & L2E_OFFSET_MASK == 0 {
        // Offset 0 is a valid data file offset; COPIED tells it apart from "unallocated".
        if data_file && word & OFLAG_COPIED != 0 {
            ClusterType::Normal
        } else {
            ClusterType::Unallocated
        }
    } else {
        ClusterType::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_types_follow_qemu() {
        assert_eq!(cluster_type(0, false, false), ClusterType::Unallocated);
        assert_eq!(cluster_type(1, false, false), ClusterType::ZeroPlain);
        assert_eq!(cluster_type(0x10001, false, false), ClusterType::ZeroAlloc);
        assert_eq!(cluster_type(1, true, false), ClusterType::Unallocated);
        assert_eq!(cluster_type(OFLAG_COPIED, false, true), ClusterType::Normal);
        assert_eq!(
            cluster_type(OFLAG_COPIED, false, false),
            ClusterType::Unallocated
        );
        assert_eq!(
            cluster_type(OFLAG_COMPRESSED | 1, false, false),
            ClusterType::Compressed
        );
        assert_eq!(cluster_type(0x10000, false, false), ClusterType::Normal);
    }
}
