//! qcow2 input (versions 2 and 3): the active layer's guest content.
//!
//! Cluster mapping follows `docs/interop/qcow2.rst` ("Cluster mapping") and QEMU's
//! `qcow2_get_host_offset` / `qcow2_get_subcluster_type`:
//! - unallocated clusters and zero clusters (v3 bit 0, with or without a preallocated host
//!   cluster) read as zeros; there is no backing file (the inspector refused those);
//! - normal clusters are read from their host cluster, which must be cluster-aligned and inside
//!   the file;
//! - with extended L2 entries, each of the 32 subclusters is allocated (read from the host
//!   cluster), zero, or unallocated (zeros); allocated *and* zero is invalid, as is an allocated
//!   subcluster without a host cluster, or a compressed cluster with a non-zero bitmap;
//! - compressed clusters are read with QEMU's size rule (`nb_csectors * 512 - (offset & 511)`,
//!   clamped to the end of the file as QEMU's reads past EOF are) and decompressed into exactly
//!   one cluster ([`super::compress::decompress_cluster`]).
//!
//! Internal snapshots are ignored: only the active L1 table is read, as `qemu-img convert` does
//! without `-l`. The L1 table is held in memory (QEMU caps it at 32 MiB, checked by
//! [`Qcow2Header::read`]); L2 entries are read with one positional read per L2 table touched by
//! a request, so worker threads need no shared cache. [`GuestReader::extent_at`], which only the
//! scanning thread calls, keeps the last L2 table it read.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::compress::{Compression, decompress_cluster};
use super::reader::{Extent, GuestReader, ReadFailure};
use crate::format::qcow2::Qcow2Header;
use crate::format::qcow2::header::TableKind;
use crate::format::qcow2::tables::{
    COMPRESSED_SECTOR_SIZE, L1Entry, L2E_OFFSET_MASK, L2Entry, OFLAG_COMPRESSED, OFLAG_ZERO,
    SUBCLUSTERS_PER_CLUSTER, l2_entry,
};
use crate::source::{ImageFile, ReadAt, read_exact_at, read_vec_at};

/// A qcow2 image opened for reading its guest content, from a file or (in the fuzz targets)
/// any other [`ReadAt`] source.
#[derive(Debug)]
pub struct Qcow2Reader<S = ImageFile> {
    file: S,
    header: Qcow2Header,
    /// The active L1 table, limited to the entries that map the virtual size.
    l1: Vec<L1Entry>,
    compression: Compression,
    /// The last L2 table `extent_at` read: (L1 index, table).
    scan_cache: Mutex<Option<(u64, Vec<u8>)>>,
    /// Whether a compressed cluster has been seen.
    saw_compressed: AtomicBool,
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
        let l1 = raw
            .chunks_exact(8)
            .map(|c| L1Entry(crate::format::bytes::be64(c, 0)))
            .collect();
        Ok(Self {
            compression: header.compression_type.into(),
            file,
            header,
            l1,
            scan_cache: Mutex::new(None),
            saw_compressed: AtomicBool::new(false),
        })
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
            if host.checked_add(cs).is_none_or(|end| end > file_len) {
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
        let esize = self.header.l2_entry_size();
        let start = (first % per_table) * esize;
        let mut raw = vec![0u8; (count * esize) as usize];
        read_exact_at(&self.file, &mut raw, table + start)?;
        let extended = self.header.extended_l2();
        (0..count)
            .map(|k| self.decode(first + k, l2_entry(&raw, k as usize, extended)))
            .collect()
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
            ClusterRead::Normal(host) => read_exact_at(&self.file, out, host)?,
            ClusterRead::Subclusters { host, alloc } => {
                let sub = out.len() / SUBCLUSTERS_PER_CLUSTER as usize;
                for (i, piece) in out.chunks_mut(sub).enumerate() {
                    if alloc & (1 << i) != 0 {
                        read_exact_at(&self.file, piece, host + (i * sub) as u64)?;
                    } else {
                        piece.fill(0);
                    }
                }
            }
            ClusterRead::Compressed { host, len } => {
                let data = read_vec_at(&self.file, host, len as usize)?;
                decompress_cluster(self.compression, &data, out).map_err(|e| {
                    ReadFailure::Invalid(format!(
                        "compressed guest cluster {cluster} at host offset {host:#x}: {e}"
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Whether guest cluster `how` may hold data.
    fn holds_data(how: ClusterRead) -> bool {
        !matches!(how, ClusterRead::Zeros)
    }
}

impl<S: ReadAt + Send + Sync> GuestReader for Qcow2Reader<S> {
    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn granularity(&self) -> u64 {
        self.cluster_size()
    }

    fn costly_reads(&self) -> bool {
        self.saw_compressed.load(Ordering::Relaxed)
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure> {
        let cs = self.cluster_size();
        let size = self.header.size;
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
            Ok(Self::holds_data(self.decode(c, entry)?))
        };
        let data = status(first_cluster)?;
        let mut c = first_cluster + 1;
        while c < table_end_cluster && status(c)? == data {
            c += 1;
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
        let size = self.header.size;
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
            for (k, how) in reads.into_iter().enumerate() {
                let c = cluster + k as u64;
                let c_start = c * cs;
                let from = offset.max(c_start);
                let to = end.min(c_start + cs);
                let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
                if from == c_start && to == c_start + cs {
                    self.read_cluster(c, how, dst)?;
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
    if offset < size {
        Ok(())
    } else {
        Err(ReadFailure::Invalid(format!(
            "extent requested at {offset:#x}, past the {size}-byte disk"
        )))
    }
}
