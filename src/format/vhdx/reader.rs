//! VHDX input, fixed and dynamic: the guest content as QEMU's `block/vhdx.c` reads it, with
//! the headers, region table and metadata parsed by [`crate::format::vhdx`]'s one parser.
//!
//! [`describe`](super::describe)'s findings refuse the image (differencing disks included:
//! QEMU cannot read them either); the parse gives the current header, the file parameters,
//! the BAT region and the regions a payload block must not overlap (`Layout`).
//!
//! **Log.** A header naming a log (non-zero log GUID) is opened only when the log holds no
//! entry QEMU would replay (`vhdx_parse_log`: an image with one is refused read-only, "contains
//! a log that needs to be replayed"). An entry counts when its header is valid
//! (`vhdx_log_hdr_is_valid`: "loge", the header's log GUID, a non-zero sequence number, a
//! length in whole 4 KiB sectors within the log) and its CRC-32C matches; an entry that wraps
//! around the end of the log is counted without its checksum, so doubt refuses.
//!
//! **Mapping** (spec 2.5, `vhdx_block_translate`, `vhdx_co_readv`): payload block `b` is BAT
//! entry `b + b / chunk_ratio` (a sector bitmap entry follows every `chunk_ratio` payload
//! entries, `chunk_ratio = 2^23 * logical_sector_size / block_size`). The low three bits are
//! the state: not present (0), undefined (1), zero (2), unmapped (3 and QEMU's 5) read as
//! zeros; fully present (6) reads the block at the entry's offset (its top 44 bits, in MiB);
//! partially present (7, only meaningful in a differencing disk) and 4 are refused as QEMU
//! fails the read. A fully present block must lie inside the file, outside the header
//! section, log, BAT and metadata, and no two blocks may share file space (QEMU never writes
//! that; a file that does would describe more guest data than it holds).
//!
//! **4096-byte logical sectors.** QEMU refuses to open such a disk since 5.2 (before, it read
//! an eighth of it). The specification maps guest bytes to block bytes whatever the sector
//! size, and so do this reader, `info` (a `vhdx.logical-sector-4096` warning says QEMU cannot
//! read it) and libvhdi: the disk is `virtual_disk_size` bytes, whole.
//!
//! **Bounds.** The BAT is never held whole: [`GuestReader::extent_at`] reads a window of at
//! most [`BAT_WINDOW_ENTRIES`] entries at a time, reads look up one entry per block.

use std::sync::Mutex;

use super::{
    BAT_OFFSET_MASK, BAT_STATE_MASK, Header, PAYLOAD_BLOCK_FULLY_PRESENT, Params, Region,
    checksum_is_valid,
};
use crate::format::Probe;
use crate::format::bytes::{le32, le64};
use crate::format::guest::{
    Extent, GuestReader, ReadFailure, check_extent_offset, for_each_block_piece, read_stored,
};
use crate::safety::Severity;
use crate::source::{ImageFile, ReadAt, read_vec_at};

/// BAT entries read at once by `extent_at`: 64 KiB of table.
pub const BAT_WINDOW_ENTRIES: u64 = 8192;
/// The largest log scanned for entries to replay: 256 MiB (QEMU writes 1 MiB logs).
pub const MAX_LOG_SCAN: u64 = 256 << 20;
/// The log is written in 4 KiB sectors (spec 2.3).
const LOG_SECTOR: u64 = 4096;
/// The header section (file identifier, headers, region tables) is the first 1 MiB.
const HEADER_SECTION: u64 = 1 << 20;
const MIB: u64 = 1 << 20;

/// What the vhdx parser found, for this reader.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) header: Header,
    pub(super) params: Params,
    pub(super) bat: Region,
    pub(super) regions: Vec<(&'static str, Region)>,
}

/// How one payload block reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Zeros,
    /// Fully present at this file offset.
    At(u64),
}

/// A VHDX opened for reading its guest content, from a file or (in the fuzz targets) any
/// other [`ReadAt`] source.
#[derive(Debug)]
pub struct VhdxReader<S = ImageFile> {
    file: S,
    size: u64,
    block_size: u64,
    chunk_ratio: u64,
    bat: Region,
    regions: Vec<(&'static str, Region)>,
    /// The BAT window `extent_at` read last: (first payload block, states).
    window: Mutex<Option<(u64, Vec<Block>)>>,
    /// One bit per MiB of the file: the payload space `extent_at` mapped so far.
    mapped: Mutex<Vec<u64>>,
    /// The last host run the file system described: (start, end, holds data).
    host_run: Mutex<Option<(u64, u64, bool)>>,
}

impl<S: ReadAt> VhdxReader<S> {
    /// Opens the VHDX in `file`, refusing it with the inspector's sentence when
    /// [`describe`](super::describe) finds it invalid or differencing, or when its log needs
    /// replaying.
    pub fn open(file: S) -> Result<Self, ReadFailure> {
        let probe = Probe::read(&file)?;
        let (report, layout) = super::describe_layout(&file, &probe)?;
        if let Some(f) = report
            .findings
            .iter()
            .find(|f| f.severity == Severity::Error)
        {
            return Err(ReadFailure::Invalid(f.detail.clone()));
        }
        let Some(layout) = layout else {
            return Err(ReadFailure::Invalid(
                "the VHDX headers, regions or metadata could not be parsed".into(),
            ));
        };
        refuse_log_to_replay(&file, &layout.header)?;
        let params = layout.params;
        let block_size = u64::from(params.block_size);
        let sector = u64::from(params.logical_sector_size);
        let chunk_ratio = params.chunk_ratio();
        if block_size == 0 || sector == 0 || chunk_ratio == 0 {
            return Err(ReadFailure::Invalid(
                "the VHDX block or sector size is zero".into(),
            ));
        }
        let size = params.virtual_size();
        let blocks = size.div_ceil(block_size);
        let entries = blocks + blocks.saturating_sub(1) / chunk_ratio;
        if entries.saturating_mul(8) > layout.bat.length {
            return Err(ReadFailure::Invalid(format!(
                "the VHDX BAT region ({} bytes) is too small for the {entries} entries the disk needs",
                layout.bat.length
            )));
        }
        let mapped = vec![0u64; file.len().div_ceil(MIB).div_ceil(64) as usize];
        Ok(Self {
            file,
            size,
            block_size,
            chunk_ratio,
            bat: layout.bat,
            regions: layout.regions,
            window: Mutex::new(None),
            mapped: Mutex::new(mapped),
            host_run: Mutex::new(None),
        })
    }

    /// The BAT index of payload block `block`.
    fn bat_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    /// Decodes and validates the BAT entry of payload block `block`.
    fn decode(&self, block: u64, entry: u64) -> Result<Block, ReadFailure> {
        let bad = |what: String| {
            ReadFailure::Invalid(format!(
                "the VHDX BAT entry of block {block} ({entry:#018x}) {what}"
            ))
        };
        match entry & BAT_STATE_MASK {
            0 | 1 | 2 | 3 | 5 => Ok(Block::Zeros),
            PAYLOAD_BLOCK_FULLY_PRESENT => {
                let at = entry & BAT_OFFSET_MASK;
                if at < HEADER_SECTION {
                    return Err(bad(format!(
                        "puts the block at {at:#x}, inside the header section"
                    )));
                }
                if let Some(name) = super::overlaps(&self.regions, at, self.block_size) {
                    return Err(bad(format!(
                        "puts the block at {at:#x}, inside the {name} region"
                    )));
                }
                if at
                    .checked_add(self.block_size)
                    .is_none_or(|end| end > self.file.len())
                {
                    return Err(bad(format!(
                        "puts a {}-byte block at {at:#x}, past the end of the file ({} bytes)",
                        self.block_size,
                        self.file.len()
                    )));
                }
                Ok(Block::At(at))
            }
            7 => Err(bad(
                "says partially present, which only a differencing disk may say".into(),
            )),
            state => Err(bad(format!("has the undefined state {state}"))),
        }
    }

    /// The states of payload blocks `first..first + count`, with one BAT read.
    fn blocks(&self, first: u64, count: u64) -> Result<Vec<Block>, ReadFailure> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let first_index = self.bat_index(first);
        let last_index = self.bat_index(first + count - 1);
        let len = (last_index - first_index + 1) * 8;
        let raw = read_vec_at(&self.file, self.bat.offset + first_index * 8, len as usize)?;
        (first..first + count)
            .map(|b| {
                let i = (self.bat_index(b) - first_index) as usize * 8;
                self.decode(b, le64(&raw, i))
            })
            .collect()
    }

    /// Records the file space of block `block` at `at`, refusing space already mapped.
    fn record(&self, block: u64, at: u64) -> Result<(), ReadFailure> {
        let mut mapped = self.mapped.lock().unwrap_or_else(|p| p.into_inner());
        for mib in at / MIB..(at + self.block_size) / MIB {
            let Some(w) = mapped.get_mut((mib / 64) as usize) else {
                break;
            };
            if *w & (1 << (mib % 64)) != 0 {
                return Err(ReadFailure::Invalid(format!(
                    "VHDX block {block} at {at:#x} shares file space with another block (QEMU never shares a block)"
                )));
            }
            *w |= 1 << (mib % 64);
        }
        Ok(())
    }

    /// Whether `block` may hold data: fully present and not a hole of the image file (a fixed
    /// VHDX is created with its blocks unwritten).
    fn has_data(&self, block: Block) -> bool {
        let Block::At(host) = block else {
            return false;
        };
        let mut run = self.host_run.lock().unwrap_or_else(|p| p.into_inner());
        let known = run.filter(|&(start, end, _)| start <= host && host < end);
        let (end, data) = match known {
            Some((_, end, data)) => (end, data),
            None => match self.file.allocation_at(host) {
                Some((data, end)) => {
                    *run = Some((host, end, data));
                    (end, data)
                }
                None => return true,
            },
        };
        data || host.saturating_add(self.block_size) > end
    }
}

/// Refuses a log holding an entry QEMU would replay.
fn refuse_log_to_replay<S: ReadAt>(file: &S, header: &Header) -> Result<(), ReadFailure> {
    if header.log_guid == [0; 16] {
        return Ok(());
    }
    let refuse = |why: String| {
        Err(ReadFailure::Invalid(format!(
            "the VHDX log needs replaying ({why}); QEMU refuses to open it read-only too: replay it with `qemu-img check -r all` first"
        )))
    };
    let length = u64::from(header.log_length);
    if length > MAX_LOG_SCAN {
        return refuse(format!(
            "its {length}-byte log is active and too large to check"
        ));
    }
    for pos in (0..length).step_by(LOG_SECTOR as usize) {
        let Some(at) = header.log_offset.checked_add(pos) else {
            break;
        };
        let Ok(hdr) = read_vec_at(file, at, 64) else {
            break;
        };
        let entry_length = u64::from(le32(&hdr, 8));
        let valid_header = hdr.starts_with(b"loge")
            && hdr[32..48] == header.log_guid
            && le64(&hdr, 16) != 0
            && entry_length != 0
            && entry_length.is_multiple_of(LOG_SECTOR)
            && entry_length <= length;
        if !valid_header {
            continue;
        }
        let sequence = le64(&hdr, 16);
        if pos + entry_length > length {
            return refuse(format!(
                "entry {sequence} at log offset {pos:#x} wraps around the end of the log"
            ));
        }
        if let Ok(mut entry) = read_vec_at(file, at, entry_length as usize)
            && checksum_is_valid(&mut entry)
        {
            return refuse(format!("it holds entry {sequence} at log offset {pos:#x}"));
        }
    }
    Ok(())
}

impl<S: ReadAt + Send + Sync> GuestReader for VhdxReader<S> {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn granularity(&self) -> u64 {
        512
    }

    fn small_reads_are_cheap(&self) -> bool {
        // Blocks are stored uncompressed, found through one 8-byte read of the BAT.
        self.file.small_reads_are_cheap()
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure> {
        check_extent_offset(offset, self.size)?;
        let blocks = self.size.div_ceil(self.block_size);
        let first = offset / self.block_size;
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let covers = |w: &Option<(u64, Vec<Block>)>, b: u64| {
            w.as_ref()
                .is_some_and(|(start, v)| *start <= b && b < *start + v.len() as u64)
        };
        if !covers(&window, first) {
            let count = BAT_WINDOW_ENTRIES.min(blocks - first);
            *window = Some((first, self.blocks(first, count)?));
        }
        let Some((start, states)) = window.as_ref() else {
            return Err(ReadFailure::Invalid("the BAT window is empty".into()));
        };
        let state = |b: u64| states[(b - start) as usize];
        let window_end = start + states.len() as u64;
        let data = self.has_data(state(first));
        let mut b = first + 1;
        while b < window_end && self.has_data(state(b)) == data {
            b += 1;
        }
        if data {
            for k in first..b {
                if k * self.block_size >= offset
                    && let Block::At(at) = state(k)
                {
                    self.record(k, at)?;
                }
            }
        }
        let end = b.saturating_mul(self.block_size).min(self.size);
        Ok(Extent {
            start: offset,
            len: end - offset,
            data,
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailure> {
        for_each_block_piece(
            offset,
            buf,
            self.size,
            self.block_size,
            |block, within, dst| {
                match self
                    .blocks(block, 1)?
                    .first()
                    .copied()
                    .unwrap_or(Block::Zeros)
                {
                    Block::Zeros => dst.fill(0),
                    Block::At(at) => read_stored(&self.file, dst, at + within)?,
                }
                Ok(())
            },
        )
    }
}
