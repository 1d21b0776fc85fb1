//! qcow2 input (versions 2 and 3): the active layer's guest content.
//!
//! Cluster mapping follows `docs/interop/qcow2.rst` ("Cluster mapping") and QEMU's
//! `qcow2_get_host_offset` / `qcow2_get_subcluster_type`:
//! - unallocated clusters and zero clusters (v3 bit 0, with or without a preallocated host
//!   cluster) read as zeros; there is no backing file (the inspector refused those);
//! - normal clusters are read from their host cluster, which must be cluster-aligned and start
//!   inside the file; the part of the last host cluster past the end of the file reads as
//!   zeros (QEMU writes only what a cluster holds, with extended L2 only the written
//!   subclusters, so a valid file may end inside its last cluster);
//! - with extended L2 entries, each of the 32 subclusters is allocated (read from the host
//!   cluster), zero, or unallocated (zeros); allocated *and* zero is invalid, as is an allocated
//!   subcluster without a host cluster, or a compressed cluster with a non-zero bitmap;
//! - compressed clusters are read with QEMU's size rule (`nb_csectors * 512 - (offset & 511)`,
//!   clamped to the end of the file as QEMU's reads past EOF are) and decompressed into exactly
//!   one cluster ([`super::compressed::decompress_cluster`]); a read of part of one inflates
//!   only up to the end of the part ([`super::compressed::decompress_prefix`]), so that the
//!   convert scan's probe of a cluster's first sector does not inflate it whole.
//!
//! Internal snapshots are ignored: only the active L1 table is read, as `qemu-img convert` does
//! without `-l`.
//!
//! **No amplification.** QEMU never lets two entries of one L1 table share an L2 table, nor two
//! guest clusters of one layer share a host cluster (a write to a shared cluster copies it
//! first). A hostile image that does either makes a small file describe an unbounded amount of
//! guest data (4096 L1 entries naming one L2 table whose 8192 entries name one data cluster:
//! 64 KiB of metadata, 2 TiB of guest data), which `qemu-img convert` would faithfully write
//! out. This reader refuses both as invalid: shared L2 tables when it opens the image, shared
//! data clusters (uncompressed host clusters, or compressed clusters at the same offset) as
//! [`GuestReader::extent_at`] maps them, so the work of a conversion follows what the file
//! holds. The record costs one bit per host cluster of the file plus one set entry per
//! compressed cluster. The L1 table is held in memory (QEMU caps it at 32 MiB, checked by
//! [`Qcow2Header::read`]); L2 entries are read with one positional read per L2 table touched by
//! a request, so worker threads need no shared cache. [`GuestReader::extent_at`], which only the
//! scanning thread calls, keeps the last L2 table it read.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::format::guest::{Extent, GuestReader, ReadFailure, check_extent_offset};
use crate::format::qcow2::compressed::{Decompressor, decompress_cluster, decompress_prefix};
use crate::format::qcow2::header::TableKind;
use crate::format::qcow2::tables::{
    COMPRESSED_SECTOR_SIZE, L1Entry, L2E_OFFSET_MASK, L2Entry, OFLAG_COMPRESSED, OFLAG_ZERO,
    SUBCLUSTERS_PER_CLUSTER, l2_entry,
};
use crate::format::qcow2::{CompressionType, Qcow2Header};
use crate::source::{ImageFile, ReadAt, read_exact_at, read_vec_at};

/// A qcow2 image opened for reading its guest content, from a file or (in the fuzz targets)
/// any other [`ReadAt`] source.
#[derive(Debug)]
pub struct Qcow2Reader<S = ImageFile> {
    file: S,
    header: Qcow2Header,
    /// The active L1 table, limited to the entries that map the virtual size.
    l1: Vec<L1Entry>,
    compression: CompressionType,
    /// The last L2 table `extent_at` read: (L1 index, table).
    scan_cache: Mutex<Option<(u64, Vec<u8>)>>,
    /// Whether a compressed cluster has been seen.
    saw_compressed: AtomicBool,
    /// Host clusters and compressed clusters already mapped by `extent_at`.
    mapped: Mutex<Mapped>,
    /// The last host run the file system described: (start, end, holds data).
    host_run: Mutex<Option<(u64, u64, bool)>>,
}

/// What `extent_at` has mapped so far, to refuse a host cluster mapped twice.
#[derive(Debug, Default)]
struct Mapped {
    /// One bit per host cluster of the file (allocated as zeros: pages are only touched when
    /// a cluster is mapped).
    clusters: Vec<u64>,
    /// Host offsets of the compressed clusters (which may share host clusters legitimately:
    /// QEMU packs them byte by byte).
    compressed: HashSet<u64>,
}

impl Mapped {
    /// Records a read of host cluster number `host_cluster`; `false` when it was already
    /// mapped.
    fn map_cluster(&mut self, host_cluster: u64) -> bool {
        let (word, bit) = ((host_cluster / 64) as usize, host_cluster % 64);
        match self.clusters.get_mut(word) {
            Some(w) if *w & (1 << bit) != 0 => false,
            Some(w) => {
                *w |= 1 << bit;
                true
            }
            // Outside the file: `decode` refuses those before they get here.
            None => true,
        }
    }
}

/// How one guest cluster reads, decoded and validated from its L2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterRead {
    /// Every byte is zero.
    Zeros,
    /// Stored uncompressed at this cluster-aligned host offset.
    Normal(u64),
    /// Extended L2: per-subcluster allocation at this host offset (`alloc` bit i set: read
    /// subcluster i from the host; clear: zeros).
    Subclusters { host: u64, alloc: u32 },
    /// Compressed: `len` bytes at `host`.
    Compressed { host: u64, len: u64 },
}

impl<S: ReadAt> Qcow2Reader<S> {
    /// Opens the image in `file`, whose header has already been read and validated.
    pub fn open(file: S, header: Qcow2Header) -> Result<Self, ReadFailure> {
        let needed = header.l1_entries_needed();
        let bytes = needed
            .checked_mul(8)
            .filter(|b| *b <= crate::format::qcow2::header::MAX_L1_SIZE_BYTES)
            .ok_or_else(|| {
                ReadFailure::Invalid(format!(
                    "the virtual size {} needs an L1 table larger than QEMU's limit",
                    header.size
                ))
            })?;
        header
            .validate_table(
                TableKind::ActiveL1,
                header.l1_table_offset,
                bytes,
                crate::format::qcow2::header::MAX_L1_SIZE_BYTES,
                file.len(),
            )
            .or_else(|e| if needed == 0 { Ok(()) } else { Err(e) })
            .map_err(|e| ReadFailure::Invalid(e.to_string()))?;
        let raw = if needed == 0 {
            Vec::new()
        } else {
            read_vec_at(&file, header.l1_table_offset, bytes as usize)?
        };
        let l1: Vec<L1Entry> = raw
            .chunks_exact(8)
            .map(|c| L1Entry(crate::format::bytes::be64(c, 0)))
            .collect();
        drop(raw);
        refuse_shared_l2_tables(&l1)?;
        let file_clusters = file.len().div_ceil(header.cluster_size());
        let mapped = Mapped {
            clusters: vec![0; file_clusters.div_ceil(64) as usize],
            compressed: HashSet::new(),
        };
        Ok(Self {
            compression: header.compression_type,
            file,
            header,
            l1,
            scan_cache: Mutex::new(None),
            saw_compressed: AtomicBool::new(false),
            mapped: Mutex::new(mapped),
            host_run: Mutex::new(None),
        })
    }

    /// Records the host cluster guest cluster `cluster` reads, refusing one already mapped.
    fn record_mapping(&self, cluster: u64, how: ClusterRead) -> Result<(), ReadFailure> {
        let mut mapped = self.mapped.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = match how {
            ClusterRead::Zeros => true,
            ClusterRead::Normal(host) | ClusterRead::Subclusters { host, .. } => {
                mapped.map_cluster(host / self.cluster_size())
            }
            ClusterRead::Compressed { host, .. } => mapped.compressed.insert(host),
        };
        if fresh {
            return Ok(());
        }
        let host = match how {
            ClusterRead::Normal(h)
            | ClusterRead::Subclusters { host: h, .. }
            | ClusterRead::Compressed { host: h, .. } => h,
            ClusterRead::Zeros => 0,
        };
        Err(ReadFailure::Invalid(format!(
            "guest cluster {cluster} reads the host cluster at {host:#x}, which another guest cluster already reads (QEMU never shares a cluster within one layer)"
        )))
    }

    fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// The L2 table offset for L1 index `i`, validated, or `None` when unallocated.
    fn l2_offset(&self, i: u64) -> Result<Option<u64>, ReadFailure> {
        let Some(entry) = usize::try_from(i).ok().and_then(|i| self.l1.get(i)) else {
            return Ok(None);
        };
        let off = entry.l2_offset();
        if off == 0 {
            return Ok(None);
        }
        let cs = self.cluster_size();
        if !off.is_multiple_of(cs) {
            return Err(ReadFailure::Invalid(format!(
                "L1 entry {i} points at an L2 table at {off:#x}, not aligned to the {cs}-byte cluster"
            )));
        }
        if off.checked_add(cs).is_none_or(|end| end > self.file.len()) {
            return Err(ReadFailure::Invalid(format!(
                "L1 entry {i} points at an L2 table at {off:#x}, past the end of the file ({} bytes)",
                self.file.len()
            )));
        }
        Ok(Some(off))
    }

    /// Decodes and validates the L2 entry of guest cluster `cluster`.
    fn decode(&self, cluster: u64, entry: L2Entry) -> Result<ClusterRead, ReadFailure> {
        let cs = self.cluster_size();
        let file_len = self.file.len();
        let bad = |what: String| {
            ReadFailure::Invalid(format!(
                "the L2 entry of guest cluster {cluster} ({:#018x}) {what}",
                entry.word
            ))
        };
        if entry.word & OFLAG_COMPRESSED != 0 {
            if entry.bitmap.is_some_and(|b| b != 0) {
                return Err(bad(
                    "is compressed but has a non-zero subcluster bitmap".into()
                ));
            }
            self.saw_compressed.store(true, Ordering::Relaxed);
            let d = entry.compressed(self.header.cluster_bits);
            if d.host_offset == 0 || d.host_offset >= file_len {
                return Err(bad(format!(
                    "points at compressed data at {:#x}, outside the file ({file_len} bytes)",
                    d.host_offset
                )));
            }
            // QEMU reads `csize` bytes; the tail past EOF reads as zeros there and is never
            // needed by a valid stream, so read what the file has.
            let len = d.compressed_len().min(file_len - d.host_offset);
            debug_assert!(d.sectors * COMPRESSED_SECTOR_SIZE <= 2 * cs + COMPRESSED_SECTOR_SIZE);
            return Ok(ClusterRead::Compressed {
                host: d.host_offset,
                len,
            });
        }
        let host = entry.word & L2E_OFFSET_MASK;
        let check_host = |host: u64| -> Result<(), ReadFailure> {
            if !host.is_multiple_of(cs) {
                return Err(bad(format!(
                    "points at host offset {host:#x}, not aligned to the {cs}-byte cluster"
                )));
            }
            // A host cluster may end past the end of the file (QEMU allocates the cluster but
            // writes only what it holds: with extended L2, only the written subclusters), and
            // the missing tail reads as zeros, as in QEMU. One that starts at or past the end
            // holds nothing at all, which `qemu-img check` calls a corruption ("exceeding the
            // end of the file by one cluster or more").
            if host >= file_len {
                return Err(bad(format!(
                    "points at host cluster {host:#x}, past the end of the file ({file_len} bytes)"
                )));
            }
            Ok(())
        };
        match entry.bitmap {
            None => {
                if entry.word & OFLAG_ZERO != 0 || host == 0 {
                    Ok(ClusterRead::Zeros)
                } else {
                    check_host(host)?;
                    Ok(ClusterRead::Normal(host))
                }
            }
            Some(bitmap) => {
                let alloc = bitmap as u32;
                let zero = (bitmap >> 32) as u32;
                if alloc & zero != 0 {
                    return Err(bad(format!(
                        "marks subclusters both allocated and zero (bitmap {bitmap:#018x})"
                    )));
                }
                if alloc == 0 {
                    return Ok(ClusterRead::Zeros);
                }
                if host == 0 {
                    return Err(bad(
                        "marks subclusters allocated but has no host cluster".into()
                    ));
                }
                check_host(host)?;
                if alloc == u32::MAX {
                    Ok(ClusterRead::Normal(host))
                } else {
                    Ok(ClusterRead::Subclusters { host, alloc })
                }
            }
        }
    }

    /// Reads the L2 entries of guest clusters `first..first + count` (all under one L1 entry)
    /// with one read, decoded.
    fn cluster_reads(&self, first: u64, count: u64) -> Result<Vec<ClusterRead>, ReadFailure> {
        let per_table = self.header.l2_entries();
        let l1_index = first / per_table;
        let Some(table) = self.l2_offset(l1_index)? else {
            return Ok(vec![ClusterRead::Zeros; count as usize]);
        };
        let extended = self.header.extended_l2();
        let within = first % per_table;
        {
            // The table `extent_at` read last (the convert scan probes the clusters it just
            // mapped, one small read each): no read of the entries again.
            let cache = self
                .scan_cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((_, cached)) = cache.as_ref().filter(|(i, _)| *i == l1_index) {
                return (0..count)
                    .map(|k| {
                        let entry = l2_entry(cached, (within + k) as usize, extended);
                        self.decode(first + k, entry)
                    })
                    .collect();
            }
        }
        let esize = self.header.l2_entry_size();
        let start = within * esize;
        let mut raw = vec![0u8; (count * esize) as usize];
        read_exact_at(&self.file, &mut raw, table + start)?;
        (0..count)
            .map(|k| self.decode(first + k, l2_entry(&raw, k as usize, extended)))
            .collect()
    }

    /// Fills `buf` with the host bytes at `host`, zeros past the end of the file: the last host
    /// cluster may end there, and QEMU's file driver reads the missing bytes as zeros
    /// (`qcow2_co_preadv_part` reads the cluster; `raw_co_preadv` pads a short read).
    fn read_host(&self, buf: &mut [u8], host: u64) -> Result<(), ReadFailure> {
        let in_file = self.file.len().saturating_sub(host);
        let n = usize::try_from(in_file).map_or(buf.len(), |n| n.min(buf.len()));
        let (stored, past_end) = buf.split_at_mut(n);
        past_end.fill(0);
        if !stored.is_empty() {
            read_exact_at(&self.file, stored, host)?;
        }
        Ok(())
    }

    /// Fills `out` (one whole cluster) with guest cluster `cluster`'s bytes.
    fn read_cluster(
        &self,
        cluster: u64,
        how: ClusterRead,
        out: &mut [u8],
    ) -> Result<(), ReadFailure> {
        match how {
            ClusterRead::Zeros => out.fill(0),
            ClusterRead::Normal(host) => self.read_host(out, host)?,
            ClusterRead::Subclusters { host, alloc } => {
                let sub = out.len() / SUBCLUSTERS_PER_CLUSTER as usize;
                for (i, piece) in out.chunks_mut(sub).enumerate() {
                    if alloc & (1 << i) != 0 {
                        self.read_host(piece, host + (i * sub) as u64)?;
                    } else {
                        piece.fill(0);
                    }
                }
            }
            ClusterRead::Compressed { host, len } => {
                self.decompress(cluster, host, len, out, decompress_cluster)?;
            }
        }
        Ok(())
    }

    /// Decompresses compressed guest cluster `cluster` (`len` bytes at `host`) into `out`
    /// with `how`: [`decompress_cluster`] for the whole cluster, [`decompress_prefix`] for
    /// its first `out.len()` bytes.
    fn decompress(
        &self,
        cluster: u64,
        host: u64,
        len: u64,
        out: &mut [u8],
        how: Decompressor,
    ) -> Result<(), ReadFailure> {
        let data = read_vec_at(&self.file, host, len as usize)?;
        how(self.compression, &data, out).map_err(|e| {
            ReadFailure::Invalid(format!(
                "compressed guest cluster {cluster} at host offset {host:#x}: {e}"
            ))
        })
    }

    /// Whether guest cluster `how` may hold data.
    /// Whether the host cluster at `host` is a hole in the image file: allocated in the qcow2
    /// metadata (preallocation=metadata) but never written, so it reads as zeros. One or two
    /// `lseek`s per run of holes or data, cached, so a 1 TiB preallocated image is scanned
    /// without reading its clusters.
    fn host_is_hole(&self, host: u64) -> bool {
        let cs = self.cluster_size();
        let mut run = self.host_run.lock().unwrap_or_else(|p| p.into_inner());
        let known = run.filter(|&(start, end, _)| start <= host && host < end);
        let (end, data) = match known {
            Some((_, end, data)) => (end, data),
            None => match self.file.allocation_at(host) {
                Some((data, end)) => {
                    *run = Some((host, end, data));
                    (end, data)
                }
                None => return false,
            },
        };
        !data && host.saturating_add(cs) <= end
    }

    /// Whether guest cluster `cluster` holds data to read: not zeros, and not a host hole.
    fn reads_data(&self, how: ClusterRead) -> bool {
        match how {
            ClusterRead::Zeros => false,
            ClusterRead::Normal(host) | ClusterRead::Subclusters { host, .. } => {
                !self.host_is_hole(host)
            }
            ClusterRead::Compressed { .. } => true,
        }
    }
}

impl<S: ReadAt + Send + Sync> GuestReader for Qcow2Reader<S> {
    fn virtual_size(&self) -> u64 {
        self.header.virtual_size()
    }

    fn granularity(&self) -> u64 {
        self.cluster_size()
    }

    fn costly_reads(&self) -> bool {
        self.saw_compressed.load(Ordering::Relaxed)
    }

    fn small_reads_are_cheap(&self) -> bool {
        // Uncompressed clusters are read in part (`read_at`), after one small read of their
        // L2 entries; a zlib-compressed one is inflated only up to the end of the read
        // (`decompress_prefix`). A zstd block is decoded whole for any read of it.
        let zstd = self.compression == CompressionType::Zstd;
        !(zstd && self.costly_reads()) && self.file.small_reads_are_cheap()
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure> {
        let cs = self.cluster_size();
        let size = self.header.virtual_size();
        let per_table = self.header.l2_entries();
        let span = self.header.bytes_per_l1_entry();
        let first_l1 = offset / span;
        // Skip unallocated L1 entries in one step (they map zeros).
        let mut l1 = first_l1;
        while l1 * span < size && self.l2_offset(l1)?.is_none() {
            l1 += 1;
        }
        if l1 > first_l1 {
            let end = (l1 * span).min(size);
            return Ok(Extent {
                start: offset,
                len: end - offset,
                data: false,
            });
        }
        let Some(table_offset) = self.l2_offset(l1)? else {
            unreachable_zero_extent(offset, size)?;
            return Ok(Extent {
                start: offset,
                len: size - offset,
                data: false,
            });
        };
        let mut cache = self
            .scan_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.as_ref().is_none_or(|(i, _)| *i != l1) {
            let table = read_vec_at(&self.file, table_offset, cs as usize)?;
            *cache = Some((l1, table));
        }
        let Some((_, table)) = cache.as_ref() else {
            return Err(ReadFailure::Invalid("L2 cache is empty".into()));
        };
        let extended = self.header.extended_l2();
        let first_cluster = offset / cs;
        let table_end_cluster = ((l1 + 1) * per_table).min(size.div_ceil(cs));
        let status = |c: u64| -> Result<bool, ReadFailure> {
            let entry = l2_entry(table, (c % per_table) as usize, extended);
            Ok(self.reads_data(self.decode(c, entry)?))
        };
        let data = status(first_cluster)?;
        let mut c = first_cluster + 1;
        while c < table_end_cluster && status(c)? == data {
            c += 1;
        }
        // Record the host clusters of the run (only those starting inside it: a cluster that
        // `offset` cuts was part of the previous extent).
        if data {
            for k in first_cluster..c {
                if k * cs >= offset {
                    let entry = l2_entry(table, (k % per_table) as usize, extended);
                    self.record_mapping(k, self.decode(k, entry)?)?;
                }
            }
        }
        let end = (c * cs).min(size);
        Ok(Extent {
            start: offset,
            len: end - offset,
            data,
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailure> {
        let cs = self.cluster_size();
        let size = self.header.virtual_size();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= size)
            .ok_or_else(|| {
                ReadFailure::Invalid(format!(
                    "read of {} bytes at {offset:#x} past the {size}-byte disk",
                    buf.len()
                ))
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        let per_table = self.header.l2_entries();
        let first = offset / cs;
        let last = (end - 1) / cs;
        let mut scratch: Vec<u8> = Vec::new();
        let mut cluster = first;
        while cluster <= last {
            let table_last = (cluster / per_table + 1) * per_table - 1;
            let run_last = last.min(table_last);
            let reads = self.cluster_reads(cluster, run_last - cluster + 1)?;
            let mut k = 0;
            while k < reads.len() {
                let how = reads[k];
                let c = cluster + k as u64;
                let c_start = c * cs;
                let from = offset.max(c_start);
                let to = end.min(c_start + cs);
                k += 1;
                if from == c_start
                    && to == c_start + cs
                    && let ClusterRead::Normal(host) = how
                {
                    // Whole plain clusters stored one after the other (as qemu-img and
                    // vmimage lay them out) are one read, not one per cluster.
                    let mut run_end = to;
                    while let Some(&ClusterRead::Normal(next)) = reads.get(k)
                        && next == host + (run_end - c_start)
                        && run_end + cs <= end
                    {
                        run_end += cs;
                        k += 1;
                    }
                    let dst = &mut buf[(from - offset) as usize..(run_end - offset) as usize];
                    self.read_host(dst, host)?;
                    continue;
                }
                let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
                if from == c_start && to == c_start + cs {
                    self.read_cluster(c, how, dst)?;
                } else if let ClusterRead::Normal(host) = how {
                    // Part of a plain cluster: only the bytes asked for (the convert scan
                    // reads a cluster's first sector to tell data from zeros).
                    self.read_host(dst, host + (from - c_start))?;
                } else if how == ClusterRead::Zeros {
                    dst.fill(0);
                } else if let ClusterRead::Compressed { host, len } = how {
                    // Only as far as the request goes: the convert scan reads a cluster's
                    // first sector to tell data from zeros, and inflating that much costs a
                    // fraction of the cluster, which the write pass then inflates once. A
                    // read that reaches the cluster's end (or the disk's, inside its last
                    // cluster) checks the whole stream, as QEMU's every read does, so a pass
                    // over the disk in pieces refuses what QEMU refuses.
                    let whole = to == c_start + cs || to == size;
                    let upto = if whole { cs } else { to - c_start } as usize;
                    scratch.resize(upto, 0);
                    let how: Decompressor = if whole {
                        decompress_cluster
                    } else {
                        decompress_prefix
                    };
                    self.decompress(c, host, len, &mut scratch, how)?;
                    let s = (from - c_start) as usize;
                    dst.copy_from_slice(&scratch[s..s + dst.len()]);
                } else {
                    // A partial cluster (the start or end of the request, or the last
                    // cluster of a disk whose size is not a multiple of the cluster size).
                    scratch.resize(cs as usize, 0);
                    self.read_cluster(c, how, &mut scratch)?;
                    let s = (from - c_start) as usize;
                    dst.copy_from_slice(&scratch[s..s + dst.len()]);
                }
            }
            cluster = run_last + 1;
        }
        Ok(())
    }
}

/// `extent_at` found an allocated L1 entry and then none: cannot happen, but is reported as an
/// error rather than a panic.
fn unreachable_zero_extent(offset: u64, size: u64) -> Result<(), ReadFailure> {
    check_extent_offset(offset, size)
}

/// Refuses an L1 table in which two entries name the same L2 table.
fn refuse_shared_l2_tables(l1: &[L1Entry]) -> Result<(), ReadFailure> {
    let mut offsets: Vec<u64> = l1
        .iter()
        .map(|e| e.l2_offset())
        .filter(|&o| o != 0)
        .collect();
    offsets.sort_unstable();
    let Some(shared) = offsets.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) else {
        return Ok(());
    };
    drop(offsets);
    let mut users = l1
        .iter()
        .enumerate()
        .filter(|(_, e)| e.l2_offset() == shared)
        .map(|(i, _)| i);
    let (a, b) = (users.next().unwrap_or(0), users.next().unwrap_or(0));
    Err(ReadFailure::Invalid(format!(
        "L1 entries {a} and {b} both name the L2 table at {shared:#x} (QEMU never shares an L2 table within one L1 table)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_l1_table_sharing_an_l2_table_is_refused() {
        let l1 = [
            L1Entry(0),
            L1Entry(0x10000),
            L1Entry(0x20000),
            L1Entry(0x10000),
        ];
        let e = refuse_shared_l2_tables(&l1).unwrap_err().to_string();
        assert!(
            e.contains("entries 1 and 3") && e.contains("0x10000"),
            "{e}"
        );
        assert!(refuse_shared_l2_tables(&l1[..3]).is_ok());
        assert!(refuse_shared_l2_tables(&[L1Entry(0), L1Entry(0)]).is_ok());
    }

    #[test]
    fn a_host_cluster_is_mapped_once() {
        let mut m = Mapped {
            clusters: vec![0; 2],
            compressed: HashSet::new(),
        };
        assert!(m.map_cluster(70));
        assert!(!m.map_cluster(70));
        assert!(m.map_cluster(71));
        assert!(
            m.map_cluster(1 << 40),
            "outside the file: refused elsewhere"
        );
    }
}
