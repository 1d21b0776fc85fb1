//! VMDK input: a hosted sparse extent with its descriptor embedded (monolithicSparse) or its
//! grains DEFLATE-compressed (streamOptimized), read as QEMU's `block/vmdk.c` reads it.
//!
//! The header and footer are [`crate::format::vmdk`]'s: [`describe`](super::describe) applies
//! `vmdk_open_vmdk4()`'s checks and OpenStack's (embedded descriptor at sector 1, allowed
//! create type, no extent naming a path, no parent), this reader refuses whatever it finds,
//! and [`SparseHeader`] and [`sparse::check_footer`] give the fields (the footer's when the
//! header's grain directory offset is -1, as in QEMU). Descriptor files are refused: their
//! data lives in the files they name, which are never opened.
//!
//! Mapping (`get_cluster_offset`): guest grain `g` is entry `g % gtes` of the grain table whose
//! sector the grain directory's entry `g / gtes` holds (0: the whole table is unallocated).
//! A grain table entry of 0 reads as zeros, as does 1 when the header's zeroed-grain flag
//! (bit 2) is set; any other entry is the grain's sector. Uncompressed grains are read as
//! stored (the part past the end of the file as zeros, as QEMU's file driver pads it).
//! Compressed grains (`vmdk_read_extent`): with the marker flag (bit 17) a 12-byte grain marker
//! (LBA, then the compressed length, at most two grains) precedes the zlib stream; without it
//! the stream is read from one grain's bytes. The stream must end within one grain; the last
//! grain of a disk may inflate to less (QEMU compresses only the bytes the disk holds), and a
//! read past what it inflated to is an error, as in QEMU.
//!
//! **No amplification.** QEMU never shares a grain table between two directory entries nor a
//! grain between two table entries; an image that does makes a small file describe far more
//! guest data than it holds. Shared grain tables are refused at open, shared grains as
//! [`GuestReader::extent_at`] maps them (one bit per sector of the file records the sectors
//! mapped so far: every sector of an uncompressed grain, the first of a compressed one).
//!
//! **Bounds.** The grain directory is read whole, at most [`MAX_DIRECTORY_BYTES`]; grain
//! tables (at most 512 entries, 2 KiB) are read as needed; compressed grains must be at most
//! [`MAX_COMPRESSED_GRAIN`] (QEMU writes 64 KiB grains, as does VMware).

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use flate2::{Decompress, FlushDecompress, Status};

use super::sparse::{self, FOOTER_AREA_LEN, GD_AT_END, SparseHeader};
use super::{SECTOR, VmdkDetection};
use crate::format::bytes::le32;
use crate::format::guest::{Extent, GuestReader, ReadFailure, check_extent_offset};
use crate::format::{Probe, read_zero_padded};
use crate::safety::Severity;
use crate::source::{ImageFile, ReadAt, ReadError, read_exact_at, read_vec_at};

/// Largest grain directory read into memory: 64 MiB, 16 Mi grain tables.
pub const MAX_DIRECTORY_BYTES: u64 = 64 << 20;
/// Largest compressed grain accepted: 2 MiB (each read inflates a whole grain).
pub const MAX_COMPRESSED_GRAIN: u64 = 2 << 20;
/// `VMDK4_FLAG_ZERO_GRAIN`: a grain table entry of 1 means a zeroed grain.
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// `VMDK4_FLAG_MARKER`: compressed grains start with a grain marker.
const FLAG_MARKER: u32 = 1 << 17;
/// `VMDK_GTE_ZEROED`.
const GTE_ZEROED: u32 = 1;
/// The grain marker: `u64` LBA, `u32` compressed length, then the data.
const MARKER_LEN: u64 = 12;
/// A compressed grain whose stream is longer than `1 / LONG_STREAM_DIVISOR` of the grain
/// (2 KiB of a 64 KiB grain) is taken for data without inflating it: deflate stores a grain
/// of zeros in about 100 bytes at every level but 0, so only such short streams can be worth
/// inflating to find zeros (and they inflate quickly).
const LONG_STREAM_DIVISOR: u64 = 32;

thread_local! {
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    /// (compressed bytes, inflated grain) of this worker thread.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// How one guest grain reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grain {
    /// Unallocated or zeroed: zeros.
    Zeros,
    /// Stored at this byte offset, compressed or not as the image says.
    At(u64),
}

/// A sparse VMDK opened for reading its guest content, from a file or (in the fuzz targets)
/// any other [`ReadAt`] source.
#[derive(Debug)]
pub struct VmdkReader<S = ImageFile> {
    file: S,
    size: u64,
    grain_bytes: u64,
    gtes_per_gt: u64,
    compressed: bool,
    has_marker: bool,
    zero_grain: bool,
    /// The grain directory: the sector of each grain table, 0 when unallocated.
    directory: Vec<u32>,
    /// The last grain table `extent_at` read: (directory index, entries).
    scan_cache: Mutex<Option<(u64, Vec<u32>)>>,
    /// The last grain table `data_by_metadata` read: (directory index, entries).
    hint_cache: Mutex<Option<(u64, Vec<u32>)>>,
    /// One bit per sector of the file: the sectors mapped so far by `extent_at`.
    mapped: Mutex<Vec<u64>>,
    /// Whether `extent_at` has seen a compressed grain.
    saw_compressed: AtomicBool,
}

impl<S: ReadAt> VmdkReader<S> {
    /// Opens the sparse VMDK in `file`, refusing it with the inspector's sentence when
    /// [`describe`](super::describe) finds it invalid or unsafe.
    pub fn open(file: S) -> Result<Self, ReadFailure> {
        let probe = Probe::read(&file)?;
        match super::detect(&probe) {
            Some(VmdkDetection::Sparse) => {}
            Some(VmdkDetection::Descriptor) => {
                return Err(ReadFailure::Invalid(
                    "the VMDK is a descriptor file: its data lives in the extent files it names, which are never opened".into(),
                ));
            }
            _ => {
                return Err(ReadFailure::Invalid(
                    "the image is not a VMDK4 (KDMV) sparse extent".into(),
                ));
            }
        }
        let report = super::describe(&file, &probe)?;
        if let Some(f) = report
            .findings
            .iter()
            .find(|f| f.severity == Severity::Error)
        {
            return Err(ReadFailure::Invalid(f.detail.clone()));
        }
        let mut sector = [0u8; SECTOR as usize];
        let n = probe.head.len().min(sector.len());
        sector[..n].copy_from_slice(&probe.head[..n]);
        let mut h = SparseHeader::parse(&sector);
        if h.capacity == 0 && h.desc_offset != 0 {
            return Err(ReadFailure::Invalid(
                "the VMDK sparse header has no capacity and defers to its descriptor's extents, which are never opened".into(),
            ));
        }
        if h.gd_offset == GD_AT_END {
            // The footer wins (`vmdk_open_vmdk4`): the last three sectors of the
            // sector-rounded file.
            let area_offset = file
                .len()
                .next_multiple_of(SECTOR)
                .checked_sub(FOOTER_AREA_LEN as u64)
                .ok_or_else(|| {
                    ReadFailure::Invalid("the VMDK is too short for its footer".into())
                })?;
            let mut area = [0u8; FOOTER_AREA_LEN];
            read_zero_padded(&file, &mut area, area_offset)?;
            h = sparse::check_footer(&h, &area).map_err(|why| {
                ReadFailure::Invalid(format!(
                    "the streamOptimized footer is invalid: {}",
                    why.detail
                ))
            })?;
        }
        let invalid = |what: String| ReadFailure::Invalid(format!("the VMDK header's {what}"));
        let size = report
            .virtual_size
            .ok_or_else(|| invalid("capacity gives no disk size".into()))?;
        let grain_bytes = h
            .granularity
            .checked_mul(SECTOR)
            .filter(|&g| g > 0)
            .ok_or_else(|| {
                invalid(format!(
                    "grain size of {} sectors is invalid",
                    h.granularity
                ))
            })?;
        let gtes_per_gt = u64::from(h.num_gtes_per_gt);
        let span = gtes_per_gt
            .checked_mul(grain_bytes)
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                invalid(format!(
                    "grain tables of {gtes_per_gt} entries cover nothing"
                ))
            })?;
        let compressed = h.compressed();
        if compressed && (!grain_bytes.is_power_of_two() || grain_bytes > MAX_COMPRESSED_GRAIN) {
            return Err(invalid(format!(
                "compressed grains of {grain_bytes} bytes are not a power of two up to {MAX_COMPRESSED_GRAIN}"
            )));
        }
        let tables = size.div_ceil(span);
        let directory_bytes = tables * 4;
        if directory_bytes > MAX_DIRECTORY_BYTES {
            return Err(invalid(format!(
                "grain directory needs {directory_bytes} bytes, above the {MAX_DIRECTORY_BYTES}-byte limit"
            )));
        }
        let gd_at = h
            .gd_offset
            .checked_mul(SECTOR)
            .ok_or_else(|| invalid(format!("grain directory sector {} overflows", h.gd_offset)))?;
        let raw = read_vec_at(&file, gd_at, directory_bytes as usize)?;
        let directory: Vec<u32> = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        drop(raw);
        refuse_shared_tables(&directory)?;
        let mapped = vec![0u64; file.len().div_ceil(SECTOR).div_ceil(64) as usize];
        Ok(Self {
            file,
            size,
            grain_bytes,
            gtes_per_gt,
            compressed,
            has_marker: h.flags & FLAG_MARKER != 0,
            zero_grain: h.flags & FLAG_ZERO_GRAIN != 0,
            directory,
            scan_cache: Mutex::new(None),
            hint_cache: Mutex::new(None),
            mapped: Mutex::new(mapped),
            saw_compressed: AtomicBool::new(false),
        })
    }

    /// The byte offset of the grain table of directory entry `index`, checked to lie in the
    /// file, or `None` when the table is unallocated.
    fn table_offset(&self, index: u64) -> Result<Option<u64>, ReadFailure> {
        let Some(&sector) = usize::try_from(index)
            .ok()
            .and_then(|i| self.directory.get(i))
        else {
            return Ok(None);
        };
        if sector == 0 {
            return Ok(None);
        }
        let at = u64::from(sector) * SECTOR;
        if at + self.gtes_per_gt * 4 > self.file.len() {
            return Err(ReadFailure::Invalid(format!(
                "VMDK grain directory entry {index} puts a grain table at sector {sector}, past the end of the file ({} bytes)",
                self.file.len()
            )));
        }
        Ok(Some(at))
    }

    /// Reads `count` entries of the grain table of directory entry `index` from entry
    /// `first` (`None`: the table is unallocated).
    fn table_entries(
        &self,
        index: u64,
        first: u64,
        count: u64,
    ) -> Result<Option<Vec<u32>>, ReadFailure> {
        let Some(at) = self.table_offset(index)? else {
            return Ok(None);
        };
        let raw = read_vec_at(&self.file, at + first * 4, (count * 4) as usize)?;
        Ok(Some(raw.chunks_exact(4).map(|c| le32(c, 0)).collect()))
    }

    /// Decodes grain table entry `entry` of guest grain `grain`.
    fn decode(&self, grain: u64, entry: u32) -> Result<Grain, ReadFailure> {
        if entry == 0 || (self.zero_grain && entry == GTE_ZEROED) {
            return Ok(Grain::Zeros);
        }
        let at = u64::from(entry) * SECTOR;
        if at >= self.file.len() {
            return Err(ReadFailure::Invalid(format!(
                "the grain table entry of VMDK grain {grain} puts it at sector {entry}, past the end of the file ({} bytes)",
                self.file.len()
            )));
        }
        Ok(Grain::At(at))
    }

    /// Records the file sectors grain `grain` at byte `at` reads, refusing a sector already
    /// mapped by another grain.
    fn record(&self, grain: u64, at: u64) -> Result<(), ReadFailure> {
        let first = at / SECTOR;
        let sectors = if self.compressed {
            1
        } else {
            self.grain_bytes / SECTOR
        };
        let mut mapped = self.mapped.lock().unwrap_or_else(|p| p.into_inner());
        for s in first..first.saturating_add(sectors) {
            let Some(w) = mapped.get_mut((s / 64) as usize) else {
                // Past the end of the file: the tail QEMU reads as zeros.
                break;
            };
            if *w & (1 << (s % 64)) != 0 {
                return Err(ReadFailure::Invalid(format!(
                    "VMDK grain {grain} reads file sector {s}, which another grain already reads (QEMU never shares a grain)"
                )));
            }
            *w |= 1 << (s % 64);
        }
        Ok(())
    }

    /// The compressed length the grain marker at `at` gives, if it is a valid one (an
    /// invalid one is reported by the read of the grain).
    fn marker_length(&self, at: u64) -> Result<Option<u64>, ReadFailure> {
        let mut marker = [0u8; MARKER_LEN as usize];
        read_padded(&self.file, &mut marker, at)?;
        let len = u64::from(le32(&marker, 8));
        Ok((1..=2 * self.grain_bytes).contains(&len).then_some(len))
    }

    /// Whether any grain of the whole grains `first..end` is stored compressed with a long
    /// stream (see [`LONG_STREAM_DIVISOR`]).
    fn holds_long_stream(&self, first: u64, end: u64) -> Result<bool, ReadFailure> {
        let per_table = self.gtes_per_gt;
        let mut grain = first;
        while grain < end {
            let table = grain / per_table;
            let run_end = end.min((table + 1) * per_table);
            // The scan asks about each cluster of a table in turn: read the table once.
            let entries = {
                let mut cache = self.hint_cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.as_ref().is_none_or(|(i, _)| *i != table) {
                    let entries = self.table_entries(table, 0, per_table)?;
                    *cache = Some((table, entries.unwrap_or_default()));
                }
                let from = (grain % per_table) as usize;
                let to = from + (run_end - grain) as usize;
                cache
                    .as_ref()
                    .and_then(|(_, e)| e.get(from..to))
                    .map(<[u32]>::to_vec)
                    .unwrap_or_default()
            };
            for (g, &entry) in (grain..run_end).zip(&entries) {
                if let Grain::At(at) = self.decode(g, entry)?
                    && self
                        .marker_length(at)?
                        .is_some_and(|len| len > self.grain_bytes / LONG_STREAM_DIVISOR)
                {
                    return Ok(true);
                }
            }
            grain = run_end;
        }
        Ok(false)
    }

    /// Fills `out` with the bytes of guest grain `grain` stored at `at`, from `within` bytes
    /// into the grain.
    fn read_grain(
        &self,
        grain: u64,
        at: u64,
        within: u64,
        out: &mut [u8],
    ) -> Result<(), ReadFailure> {
        if !self.compressed {
            return read_padded(&self.file, out, at + within);
        }
        let out_len = out.len() as u64;
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let (input, inflated) = &mut *scratch;
            let (data_at, data_len) = if self.has_marker {
                let mut marker = [0u8; MARKER_LEN as usize];
                read_padded(&self.file, &mut marker, at)?;
                let len = u64::from(le32(&marker, 8));
                if len == 0 || len > 2 * self.grain_bytes {
                    return Err(ReadFailure::Invalid(format!(
                        "the grain marker of VMDK grain {grain} (at {at:#x}) gives a compressed length of {len} bytes, not 1 to {}",
                        2 * self.grain_bytes
                    )));
                }
                (at + MARKER_LEN, len)
            } else {
                (at, self.grain_bytes)
            };
            input.resize(data_len as usize, 0);
            read_padded(&self.file, input, data_at)?;
            // A whole grain is inflated straight into `out`, without a copy.
            let whole = within == 0 && out.len() as u64 == self.grain_bytes;
            let target: &mut [u8] = if whole {
                &mut *out
            } else {
                inflated.resize(self.grain_bytes as usize, 0);
                &mut inflated[..]
            };
            let produced = inflate(input, target).map_err(|why| {
                ReadFailure::Invalid(format!(
                    "compressed VMDK grain {grain} at {at:#x}: {why}"
                ))
            })?;
            let end = within + out_len;
            if end > produced as u64 {
                return Err(ReadFailure::Invalid(format!(
                    "compressed VMDK grain {grain} at {at:#x} inflates to {produced} bytes, but the disk reads {end} of it"
                )));
            }
            if !whole {
                out.copy_from_slice(&inflated[within as usize..end as usize]);
            }
            Ok(())
        })
    }
}

/// Inflates one zlib stream (RFC 1950, as zlib's `uncompress`) into `out`: the bytes produced,
/// or why the stream is refused (invalid, cut short, or expanding past `out`). Bytes after the
/// end of the stream are ignored, as `uncompress` ignores them.
fn inflate(input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    INFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = cell.get_or_insert_with(|| Decompress::new(true));
        d.reset(true);
        match d.decompress(input, out, FlushDecompress::Finish) {
            Ok(Status::StreamEnd) => usize::try_from(d.total_out())
                .map_err(|_| "its zlib stream is too long".to_string()),
            Ok(_) if d.total_out() >= out.len() as u64 => {
                Err("its zlib stream inflates past the grain size".into())
            }
            Ok(_) => Err("its zlib stream ends early".into()),
            Err(e) => Err(format!("its zlib stream is invalid: {e}")),
        }
    })
}

/// Fills `buf` from `at`, zeros past the end of the file (QEMU's file driver pads short
/// reads); an offset inside the file was checked by the caller.
fn read_padded<S: ReadAt>(file: &S, buf: &mut [u8], at: u64) -> Result<(), ReadFailure> {
    let in_file = file.len().saturating_sub(at);
    let n = usize::try_from(in_file).map_or(buf.len(), |n| n.min(buf.len()));
    let (stored, past_end) = buf.split_at_mut(n);
    past_end.fill(0);
    if stored.is_empty() {
        return Ok(());
    }
    match read_exact_at(file, stored, at) {
        Ok(()) => Ok(()),
        Err(ReadError::Io(e)) => Err(ReadFailure::Io(e)),
        Err(ReadError::Truncated { .. }) => Err(ReadFailure::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file shrank while it was read",
        ))),
    }
}

/// Refuses a grain directory in which two entries name the same grain table.
fn refuse_shared_tables(directory: &[u32]) -> Result<(), ReadFailure> {
    let mut sectors: Vec<u32> = directory.iter().copied().filter(|&s| s != 0).collect();
    sectors.sort_unstable();
    let Some(shared) = sectors.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) else {
        return Ok(());
    };
    drop(sectors);
    let mut users = directory
        .iter()
        .enumerate()
        .filter(|&(_, &s)| s == shared)
        .map(|(i, _)| i);
    let (a, b) = (users.next().unwrap_or(0), users.next().unwrap_or(0));
    Err(ReadFailure::Invalid(format!(
        "VMDK grain directory entries {a} and {b} both name the grain table at sector {shared} (QEMU never shares a grain table)"
    )))
}

impl<S: ReadAt + Send + Sync> GuestReader for VmdkReader<S> {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn granularity(&self) -> u64 {
        if self.grain_bytes.is_power_of_two() && self.grain_bytes <= MAX_COMPRESSED_GRAIN {
            self.grain_bytes
        } else {
            SECTOR
        }
    }

    fn costly_reads(&self) -> bool {
        self.compressed && self.saw_compressed.load(Ordering::Relaxed)
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure> {
        check_extent_offset(offset, self.size)?;
        let span = self.gtes_per_gt * self.grain_bytes;
        let tables = self.size.div_ceil(span);
        let first_table = offset / span;
        // Unallocated grain tables map zeros: skip them in one step.
        let mut t = first_table;
        while t < tables && self.table_offset(t)?.is_none() {
            t += 1;
        }
        if t > first_table {
            let end = t.saturating_mul(span).min(self.size);
            return Ok(Extent {
                start: offset,
                len: end - offset,
                data: false,
            });
        }
        let mut cache = self.scan_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.as_ref().is_none_or(|(i, _)| *i != t) {
            let entries = self
                .table_entries(t, 0, self.gtes_per_gt)?
                .unwrap_or_default();
            *cache = Some((t, entries));
        }
        let Some((_, entries)) = cache.as_ref() else {
            return Err(ReadFailure::Invalid(
                "the grain table cache is empty".into(),
            ));
        };
        let first_grain = offset / self.grain_bytes;
        let table_end = ((t + 1) * self.gtes_per_gt).min(self.size.div_ceil(self.grain_bytes));
        let status = |g: u64| -> Result<Grain, ReadFailure> {
            let entry = entries
                .get((g % self.gtes_per_gt) as usize)
                .copied()
                .unwrap_or(0);
            self.decode(g, entry)
        };
        let data = status(first_grain)? != Grain::Zeros;
        let mut g = first_grain + 1;
        while g < table_end && (status(g)? != Grain::Zeros) == data {
            g += 1;
        }
        if data {
            if self.compressed {
                self.saw_compressed.store(true, Ordering::Relaxed);
            }
            for k in first_grain..g {
                // A grain that `offset` cuts was recorded with the previous extent.
                if k * self.grain_bytes >= offset
                    && let Grain::At(at) = status(k)?
                {
                    self.record(k, at)?;
                }
            }
        }
        let end = g.saturating_mul(self.grain_bytes).min(self.size);
        Ok(Extent {
            start: offset,
            len: end - offset,
            data,
        })
    }

    /// Compressed grains with markers: `true` when the range is whole grains and one of them
    /// has a long stream. Anything else (uncompressed grains are cheap to read, a part of a
    /// grain cannot be judged without inflating it) is read.
    fn data_by_metadata(&self, offset: u64, len: u64) -> Result<bool, ReadFailure> {
        let gb = self.grain_bytes;
        let Some(end) = offset.checked_add(len).filter(|&e| e <= self.size) else {
            return Ok(false);
        };
        if !self.compressed
            || !self.has_marker
            || len == 0
            || !offset.is_multiple_of(gb)
            || (!end.is_multiple_of(gb) && end != self.size)
        {
            return Ok(false);
        }
        self.holds_long_stream(offset / gb, end.div_ceil(gb))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailure> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| {
                ReadFailure::Invalid(format!(
                    "read of {} bytes at {offset:#x} past the {}-byte disk",
                    buf.len(),
                    self.size
                ))
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        let gb = self.grain_bytes;
        let per_table = self.gtes_per_gt;
        let mut grain = offset / gb;
        let last = (end - 1) / gb;
        while grain <= last {
            let table = grain / per_table;
            let run_last = last.min((table + 1) * per_table - 1);
            let entries = self.table_entries(table, grain % per_table, run_last - grain + 1)?;
            for g in grain..=run_last {
                let g_start = g * gb;
                let from = offset.max(g_start);
                let to = end.min(g_start + gb);
                let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
                let entry = entries
                    .as_ref()
                    .and_then(|e| e.get((g - grain) as usize).copied())
                    .unwrap_or(0);
                match self.decode(g, entry)? {
                    Grain::Zeros => dst.fill(0),
                    Grain::At(at) => self.read_grain(g, at, from - g_start, dst)?,
                }
            }
            grain = run_last + 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_sharing_a_grain_table_is_refused() {
        let e = refuse_shared_tables(&[0, 40, 44, 40])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("entries 1 and 3") && e.contains("sector 40"),
            "{e}"
        );
        assert!(refuse_shared_tables(&[0, 0, 40, 44]).is_ok());
    }

    #[test]
    fn zlib_streams_must_end_within_the_grain() {
        use flate2::Compression;
        use flate2::write::ZlibEncoder;
        use std::io::Write;
        let z = |data: &[u8]| {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let mut out = vec![0u8; 4096];
        assert_eq!(inflate(&z(&[7u8; 4096]), &mut out), Ok(4096));
        assert!(out.iter().all(|&b| b == 7));
        // A short last grain, with trailing bytes after the stream.
        let mut short = z(&[9u8; 1000]);
        short.extend([0xff; 20]);
        assert_eq!(inflate(&short, &mut out), Ok(1000));
        assert!(
            inflate(&z(&[1u8; 5000]), &mut out)
                .unwrap_err()
                .contains("past the grain")
        );
        let cut = z(&(0..4000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>());
        assert!(
            inflate(&cut[..cut.len() / 2], &mut out)
                .unwrap_err()
                .contains("early")
        );
        assert!(
            inflate(&[0xff; 64], &mut out)
                .unwrap_err()
                .contains("invalid")
        );
    }
}
