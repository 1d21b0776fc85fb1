//! The guest-content hash: a digest of what the guest sees, the same for every container
//! (raw, qcow2 compressed or not, VHD, ...) of one disk, byte-compatible with Red Hat's
//! `blksum` / `blkhash` (the construction of blkhash 0.10 and later).
//!
//! # The construction
//!
//! The message `M` of length `L` is cut into blocks `b_0 … b_{n-1}` of [`BLOCK_SIZE`] bytes
//! (the last may be shorter; `n = 0` for an empty message). With `H` the chosen algorithm
//! (SHA-256 by default):
//!
//! ```text
//! d_i    = H(b_i)
//! digest = H(d_0 ‖ d_1 ‖ … ‖ d_{n-1} ‖ le64(L))
//! ```
//!
//! This is blkhash's `lib/blkhash.c` (`hash_submission`, `hash_message_length`) and its
//! reference `test/blkhash.py`. A *full* all-zero block's digest `H(0^B)` is computed once and
//! reused, so ranges the image's metadata or the file system says hold nothing are never read;
//! a short last block is always hashed as data, zeros or not, as blkhash does
//! (`is_zero_block` only takes full blocks).
//!
//! # What `M` is
//!
//! The caller decides: for a raw file, the file's bytes exactly (as `blksum FILE` reads them,
//! a one-byte file is a one-byte message); for every other format, the guest disk of its
//! virtual size. See `crate::guest_hash`.
//!
//! # Speed and memory
//!
//! [`hash_guest`] walks the guest in windows of [`WINDOW_BYTES`]: the allocation map of the
//! window is read first ([`GuestReader::extent_at`], no data), then the chunks that may hold
//! data are read and their blocks digested on every thread of the pool (a compressed qcow2
//! cluster is decompressed by the thread that digests it), and the block digests are folded
//! into the outer digest in block order. A thread takes chunks in groups of at least
//! `GROUP_BYTES` (1 MiB), reads each run of data chunks of a group in one call, and digests
//! the group's blocks together, so SHA-256 hashes sixteen blocks at once on AVX-512, or two on
//! SHA-NI ([`super::sha256_multi`]), even where a chunk is one block (a qcow2 of 64 KiB
//! clusters). Memory: one group buffer per thread and a few bytes per block of one window.

use std::fmt;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::algorithm::Algorithm;
use super::backend::Hasher;
use crate::format::ImageFormat;
use crate::format::guest::{Extent, GuestReader, ReadFailure, is_zero};

/// blkhash's block size `B`: 64 KiB, fixed (blksum compiles it in; another size is another
/// digest).
pub const BLOCK_SIZE: u64 = 64 * 1024;

/// Guest bytes whose allocation is looked up and whose blocks are digested together before
/// their digests are folded: bounds the memory of the per-block digests.
pub const WINDOW_BYTES: u64 = 32 << 20;

/// The largest chunk read at once: a qcow2 cluster (at most 2 MiB) is read whole, so a
/// compressed cluster is decompressed once, not once per block.
const MAX_CHUNK: u64 = 2 << 20;

/// Guest bytes one worker thread digests at a time when the chunks are smaller: sixteen
/// 64 KiB blocks, one run of [`super::sha256_x16`] (or eight SHA-NI pairs).
const GROUP_BYTES: u64 = 16 * BLOCK_SIZE;

/// The prefix of [`GuestHash::algorithm_name`]: `blkhash-sha256`.
pub const ALGORITHM_PREFIX: &str = "blkhash-";

/// A finished guest hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestHash {
    /// The digest algorithm `H`.
    pub algorithm: Algorithm,
    /// The digest bytes.
    pub digest: Vec<u8>,
}

impl GuestHash {
    /// `blkhash-sha256` and so on: the construction and `H`, as JSON records name it.
    pub fn algorithm_name(&self) -> String {
        format!("{ALGORITHM_PREFIX}{}", self.algorithm.name())
    }

    /// Lower-case hex, as `blksum` prints it.
    pub fn hex(&self) -> String {
        super::digests::Digest {
            algorithm: self.algorithm,
            bytes: self.digest.clone(),
        }
        .hex()
    }

    /// Parses `ALGO:HEX` (`sha256:…` or `blkhash-sha256:…`), as `verify --guest-hash` takes
    /// it; the hex must have the algorithm's length.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (algo, hex) = text
            .split_once(':')
            .ok_or_else(|| format!("'{text}' is not ALGO:HEX (for example sha256:…)"))?;
        Self::from_parts(algo, hex)
    }

    /// The hash named `algo` (`sha256` or `blkhash-sha256`) with the digest `hex`.
    pub fn from_parts(algo: &str, hex: &str) -> Result<Self, String> {
        let name = algo.strip_prefix(ALGORITHM_PREFIX).unwrap_or(algo);
        let algorithm = Algorithm::from_name(name).ok_or_else(|| {
            format!(
                "unknown guest hash algorithm '{algo}' (known: {})",
                Algorithm::ALL.map(Algorithm::name).join(", ")
            )
        })?;
        let digest = decode_hex(hex)
            .filter(|d| d.len() == algorithm.output_len())
            .ok_or_else(|| {
                format!(
                    "'{hex}' is not a {} digest ({} hex digits)",
                    algorithm.name(),
                    algorithm.output_len() * 2
                )
            })?;
        Ok(Self { algorithm, digest })
    }
}

impl fmt::Display for GuestHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm_name(), self.hex())
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// The JSON form: `{"algorithm": "blkhash-sha256", "block_size": 65536, "value": "…"}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuestHashRecord {
    algorithm: String,
    block_size: u64,
    value: String,
}

impl Serialize for GuestHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        GuestHashRecord {
            algorithm: self.algorithm_name(),
            block_size: BLOCK_SIZE,
            value: self.hex(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for GuestHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let r = GuestHashRecord::deserialize(d)?;
        if !r.algorithm.starts_with(ALGORITHM_PREFIX) {
            return Err(D::Error::custom(format!(
                "guest hash algorithm '{}' is not blkhash-…",
                r.algorithm
            )));
        }
        if r.block_size != BLOCK_SIZE {
            return Err(D::Error::custom(format!(
                "guest hash block size {} is not blkhash's {BLOCK_SIZE}",
                r.block_size
            )));
        }
        GuestHash::from_parts(&r.algorithm, &r.value).map_err(D::Error::custom)
    }
}

/// The length of the message of an image whose guest is `reader`: the file's length for raw
/// (and ISO, read as raw), as `blksum FILE` reads it, the virtual size for every other
/// format (a raw file is exposed rounded up to 512 bytes by QEMU and by `reader`).
pub fn message_length(format: ImageFormat, reader: &dyn GuestReader, file_len: u64) -> u64 {
    match format {
        ImageFormat::Raw | ImageFormat::Iso => file_len.min(reader.virtual_size()),
        _ => reader.virtual_size(),
    }
}

/// `H(data)`.
fn digest_of(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
    let mut h = Hasher::new(algorithm);
    h.update(data);
    h.finish()
}

/// Block digests gathered in guest order, those of data blocks computed together in
/// [`BlockDigests::finish`]: SHA-256 block digests several at a time where the CPU allows
/// ([`super::sha256_multi`]), since the blocks are independent and one SHA-NI chain leaves
/// most of the core idle.
#[derive(Default)]
struct BlockDigests<'a> {
    /// `None` for a full all-zero block (whose digest the fold knows), until `finish`
    /// also for the blocks in `data`.
    out: ChunkDigests,
    /// Where in `out` each block of `data` goes.
    slots: Vec<usize>,
    data: Vec<&'a [u8]>,
}

impl<'a> BlockDigests<'a> {
    /// The blocks of `bytes`, cut every [`BLOCK_SIZE`] bytes (only the last may be short).
    fn blocks(&mut self, bytes: &'a [u8]) {
        for block in bytes.chunks(BLOCK_SIZE as usize) {
            if block.len() as u64 != BLOCK_SIZE || !is_zero(block) {
                self.slots.push(self.out.len());
                self.data.push(block);
            }
            self.out.push(None);
        }
    }

    /// Digests already known.
    fn known(&mut self, digests: ChunkDigests) {
        self.out.extend(digests);
    }

    /// Every digest, in order.
    fn finish(mut self, algorithm: Algorithm) -> ChunkDigests {
        let digests: Vec<Vec<u8>> = if algorithm == Algorithm::Sha256 {
            super::sha256_multi::digest_all(&self.data)
                .into_iter()
                .map(|d| d.to_vec())
                .collect()
        } else {
            self.data
                .iter()
                .map(|block| digest_of(algorithm, block))
                .collect()
        };
        for (&slot, digest) in self.slots.iter().zip(digests) {
            self.out[slot] = Some(digest);
        }
        self.out
    }
}

/// The outer digest, fed block digests in block order.
struct BlockFold {
    algorithm: Algorithm,
    outer: Hasher,
    zero_block: Vec<u8>,
    length: u64,
}

impl BlockFold {
    fn new(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            outer: Hasher::new(algorithm),
            zero_block: digest_of(algorithm, &[0u8; BLOCK_SIZE as usize]),
            length: 0,
        }
    }

    /// `count` full all-zero blocks.
    fn zero_blocks(&mut self, count: u64) {
        for _ in 0..count {
            self.outer.update(&self.zero_block);
        }
        self.length = self.length.saturating_add(count.saturating_mul(BLOCK_SIZE));
    }

    /// The digest of the next block, `len` bytes long.
    fn block(&mut self, digest: &[u8], len: u64) {
        self.outer.update(digest);
        self.length = self.length.saturating_add(len);
    }

    fn finish(mut self) -> GuestHash {
        self.outer.update(&self.length.to_le_bytes());
        GuestHash {
            algorithm: self.algorithm,
            digest: self.outer.finish(),
        }
    }
}

/// A guest hash fed the message front to back in pieces of any size, on the caller's thread:
/// for callers that already read the guest in order. `zeros` adds a run of zeros without
/// bytes, as `blkhash_zero` does.
pub struct GuestHasher {
    fold: BlockFold,
    pending: Vec<u8>,
}

impl GuestHasher {
    /// A hash with the algorithm `H`.
    pub fn new(algorithm: Algorithm) -> Self {
        Self {
            fold: BlockFold::new(algorithm),
            pending: Vec::with_capacity(BLOCK_SIZE as usize),
        }
    }

    /// Feeds the next bytes of the message.
    pub fn update(&mut self, mut data: &[u8]) {
        let b = BLOCK_SIZE as usize;
        if !self.pending.is_empty() {
            let take = (b - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == b {
                let block = std::mem::take(&mut self.pending);
                self.full_block(&block);
                self.pending = block;
                self.pending.clear();
            }
        }
        let mut blocks = data.chunks_exact(b);
        for block in blocks.by_ref() {
            self.full_block(block);
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    /// Feeds `len` zero bytes.
    pub fn zeros(&mut self, mut len: u64) {
        let b = BLOCK_SIZE as usize;
        if !self.pending.is_empty() {
            let take = (b - self.pending.len()).min(usize::try_from(len).unwrap_or(usize::MAX));
            self.pending.resize(self.pending.len() + take, 0);
            len -= take as u64;
            if self.pending.len() < b {
                // The run ended inside the pending block.
                return;
            }
            let block = std::mem::take(&mut self.pending);
            self.full_block(&block);
            self.pending = block;
            self.pending.clear();
        }
        self.fold.zero_blocks(len / BLOCK_SIZE);
        self.pending.resize((len % BLOCK_SIZE) as usize, 0);
    }

    fn full_block(&mut self, block: &[u8]) {
        if is_zero(block) {
            self.fold.zero_blocks(1);
        } else {
            let d = digest_of(self.fold.algorithm, block);
            self.fold.block(&d, BLOCK_SIZE);
        }
    }

    /// The digest of everything fed.
    pub fn finish(mut self) -> GuestHash {
        if !self.pending.is_empty() {
            let d = digest_of(self.fold.algorithm, &self.pending);
            self.fold.block(&d, self.pending.len() as u64);
        }
        self.fold.finish()
    }
}

impl GuestHasher {
    /// Bytes of the message fed so far.
    pub fn position(&self) -> u64 {
        self.fold.length.saturating_add(self.pending.len() as u64)
    }

    /// Feeds a piece whose blocks a worker thread digested ([`BlockDigester::piece`]): zeros
    /// from the current position up to the piece, then the piece. Pieces come in guest order
    /// and never overlap.
    pub fn add_piece(&mut self, piece: GuestPiece) -> Result<(), PieceOutOfOrder> {
        let at = self.position();
        if piece.start < at {
            return Err(PieceOutOfOrder {
                start: piece.start,
                position: at,
            });
        }
        self.zeros(piece.start - at);
        self.update(&piece.head);
        if !piece.blocks.is_empty() || piece.last.is_some() {
            // The head ended on a block boundary (the piece's blocks start there).
            if !self.pending.is_empty() {
                return Err(PieceOutOfOrder {
                    start: piece.start,
                    position: self.position(),
                });
            }
            for d in piece.blocks {
                match d {
                    None => self.fold.zero_blocks(1),
                    Some(d) => self.fold.block(&d, BLOCK_SIZE),
                }
            }
            if let Some((d, len)) = piece.last {
                self.fold.block(&d, len);
            }
        }
        self.update(&piece.tail);
        Ok(())
    }

    /// The digest of everything fed, followed by zeros up to `length` bytes.
    pub fn finish_at(mut self, length: u64) -> GuestHash {
        let at = self.position();
        self.zeros(length.saturating_sub(at));
        self.finish()
    }
}

/// A piece of the guest came to [`GuestHasher::add_piece`] before the message's position:
/// the caller's pieces overlap or are out of order (a bug, never the input's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a guest piece at {start:#x} came after the guest hash reached {position:#x}")]
pub struct PieceOutOfOrder {
    /// Where the piece starts in the guest.
    pub start: u64,
    /// Where the hash had got to.
    pub position: u64,
}

/// Digests the blocks of guest pieces on any thread, for a [`GuestHasher`] that folds them in
/// guest order: how a conversion hashes the guest it reads, without a read of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDigester {
    algorithm: Algorithm,
    length: u64,
}

/// One piece of the guest, its whole blocks digested: the bytes before its first block
/// boundary (`head`), the digests of the whole blocks (`None` for an all-zero block; `last` a
/// short last block of the message) and the bytes after its last boundary (`tail`). The
/// partial blocks are completed by the neighbouring pieces, or by zeros where none is given.
#[derive(Debug, Clone, Default)]
pub struct GuestPiece {
    start: u64,
    head: Vec<u8>,
    blocks: ChunkDigests,
    last: Option<(Vec<u8>, u64)>,
    tail: Vec<u8>,
}

impl BlockDigester {
    /// Blocks of a message of `length` bytes, digested with `algorithm`.
    pub fn new(algorithm: Algorithm, length: u64) -> Self {
        Self { algorithm, length }
    }

    /// The algorithm `H`.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The message length.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// A hash to fold this digester's pieces into.
    pub fn hasher(&self) -> GuestHasher {
        GuestHasher::new(self.algorithm)
    }

    /// The piece of guest bytes `data` at guest offset `start`; bytes past the message (a
    /// buffer padded to a cluster) are left out.
    pub fn piece(&self, start: u64, data: &[u8]) -> GuestPiece {
        let in_message = self.length.saturating_sub(start);
        let data = &data[..data
            .len()
            .min(usize::try_from(in_message).unwrap_or(usize::MAX))];
        let b = BLOCK_SIZE as usize;
        let to_boundary = ((BLOCK_SIZE - start % BLOCK_SIZE) % BLOCK_SIZE) as usize;
        let (head, rest) = data.split_at(to_boundary.min(data.len()));
        let mut piece = GuestPiece {
            start,
            head: head.to_vec(),
            ..GuestPiece::default()
        };
        let (whole, remainder) = rest.split_at(rest.len() - rest.len() % b);
        let mut digests = BlockDigests::default();
        digests.blocks(whole);
        piece.blocks = digests.finish(self.algorithm);
        if !remainder.is_empty() {
            let remainder_start = start + (data.len() - remainder.len()) as u64;
            if remainder_start + remainder.len() as u64 == self.length {
                // The message's short last block: hashed as data, zeros or not.
                piece.last = Some((digest_of(self.algorithm, remainder), remainder.len() as u64));
            } else {
                piece.tail = remainder.to_vec();
            }
        }
        piece
    }
}

/// The digests of one chunk's blocks: `None` for a full all-zero block.
type ChunkDigests = Vec<Option<Vec<u8>>>;

/// The guest hash of the first `length` bytes of `reader`'s guest disk, `H` = `algorithm`,
/// block digests computed on the threads of `pool` (see the module documentation).
///
/// `length` is at most the virtual size. Only ranges that may hold data are read.
pub fn hash_guest(
    reader: &dyn GuestReader,
    length: u64,
    algorithm: Algorithm,
    pool: &rayon::ThreadPool,
) -> Result<GuestHash, ReadFailure> {
    hash_guest_when_ready(reader, length, algorithm, pool, &|_| Ok(()))
}

/// [`hash_guest`] of a disk still being written front to back: `ready(end)` is called before
/// anything of the guest bytes up to `end` is looked up or read, and returns once they are
/// written (or an error). The windows are read in guest order, so `end` only grows.
pub fn hash_guest_when_ready(
    reader: &dyn GuestReader,
    length: u64,
    algorithm: Algorithm,
    pool: &rayon::ThreadPool,
    ready: &dyn Fn(u64) -> Result<(), ReadFailure>,
) -> Result<GuestHash, ReadFailure> {
    if length > reader.virtual_size() {
        return Err(ReadFailure::Invalid(format!(
            "a {length}-byte message is longer than the {}-byte disk",
            reader.virtual_size()
        )));
    }
    // A power of two from 64 KiB to 2 MiB: chunks hold whole blocks and whole clusters.
    let chunk = reader
        .granularity()
        .clamp(BLOCK_SIZE, MAX_CHUNK)
        .next_power_of_two();
    let mut fold = BlockFold::new(algorithm);
    let mut extent: Option<Extent> = None;
    let mut window_start = 0u64;
    while window_start < length {
        let window_end = window_start.saturating_add(WINDOW_BYTES).min(length);
        ready(window_end)?;
        let chunks = (window_end - window_start).div_ceil(chunk);
        let mut has_data = vec![false; usize::try_from(chunks).unwrap_or(usize::MAX)];
        let mut pos = window_start;
        while pos < window_end {
            let e = match extent {
                Some(e) if e.start <= pos && pos < e.end() => e,
                _ => {
                    let e = reader.extent_at(pos)?;
                    if e.start > pos || e.end() <= pos {
                        return Err(ReadFailure::Invalid(format!(
                            "the allocation map gives no run at guest offset {pos:#x}"
                        )));
                    }
                    extent = Some(e);
                    e
                }
            };
            let end = e.end().min(window_end);
            if e.data {
                let first = (pos - window_start) / chunk;
                let last = (end - 1 - window_start) / chunk;
                for c in first..=last {
                    has_data[c as usize] = true;
                }
            }
            pos = end;
        }
        let digests: Vec<Result<ChunkDigests, ReadFailure>> = if has_data.iter().any(|&d| d) {
            // A thread takes a group of chunks, so that small chunks (64 KiB clusters) still
            // give it several blocks to digest at once.
            let per_group = (GROUP_BYTES / chunk).max(1);
            let window = Window {
                start: window_start,
                end: window_end,
                chunk,
                has_data: &has_data,
            };
            pool.install(|| {
                (0..chunks.div_ceil(per_group))
                    .into_par_iter()
                    .map(|g| {
                        let first = g * per_group;
                        window.digests(reader, algorithm, first..(first + per_group).min(chunks))
                    })
                    .collect()
            })
        } else {
            // A window of holes: nothing to read or to spread over threads.
            vec![Ok(zero_chunk_digests(algorithm, window_end - window_start))]
        };
        for chunk_digests in digests {
            for d in chunk_digests? {
                match d {
                    None => fold.zero_blocks(1),
                    Some(d) => {
                        let len = BLOCK_SIZE.min(length - fold.length);
                        fold.block(&d, len);
                    }
                }
            }
        }
        window_start = window_end;
    }
    Ok(fold.finish())
}

/// The block digests of `len` bytes of zeros (only the last block of the message is short).
fn zero_chunk_digests(algorithm: Algorithm, len: u64) -> ChunkDigests {
    let full = len / BLOCK_SIZE;
    let mut out: ChunkDigests = vec![None; full as usize];
    let tail = (len % BLOCK_SIZE) as usize;
    if tail != 0 {
        out.push(Some(digest_of(algorithm, &vec![0u8; tail])));
    }
    out
}

thread_local! {
    /// The group buffer of each worker thread, reused: a fresh one per group costs a `memset`
    /// as large as the read that overwrites it (and page faults for a 2 MiB one).
    static CHUNK_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One window of [`hash_guest_when_ready`]: its guest range, cut in chunks of `chunk` bytes,
/// and which chunks may hold data.
struct Window<'a> {
    start: u64,
    end: u64,
    chunk: u64,
    has_data: &'a [bool],
}

impl Window<'_> {
    /// Guest range of chunk `c`.
    fn chunk_range(&self, c: u64) -> (u64, u64) {
        let start = self.start + c * self.chunk;
        (start, (start + self.chunk).min(self.end))
    }

    /// Reads the chunks `chunks` that may hold data (each run of them in one read) and
    /// digests their blocks, all at once; the others are zeros.
    fn digests(
        &self,
        reader: &dyn GuestReader,
        algorithm: Algorithm,
        chunks: std::ops::Range<u64>,
    ) -> Result<ChunkDigests, ReadFailure> {
        let has_data = |c: u64| self.has_data.get(c as usize).copied().unwrap_or(false);
        let (group_start, _) = self.chunk_range(chunks.start);
        let (_, group_end) = self.chunk_range(chunks.end.saturating_sub(1));
        CHUNK_BUFFER.with(|cell| {
            let mut buf = cell.borrow_mut();
            buf.resize((group_end - group_start) as usize, 0);
            // `read_at` writes every byte asked for (zeros where nothing is stored), and only
            // the ranges read are digested, so what the last group left in it is never used.
            let mut c = chunks.start;
            while c < chunks.end {
                if !has_data(c) {
                    c += 1;
                    continue;
                }
                let (run_start, _) = self.chunk_range(c);
                while c < chunks.end && has_data(c) {
                    c += 1;
                }
                let (_, run_end) = self.chunk_range(c - 1);
                reader.read_at(
                    run_start,
                    &mut buf[(run_start - group_start) as usize..(run_end - group_start) as usize],
                )?;
            }
            // Every data chunk's blocks digested in one call, several at a time.
            let mut digests = BlockDigests::default();
            for c in chunks {
                let (start, end) = self.chunk_range(c);
                if has_data(c) {
                    digests
                        .blocks(&buf[(start - group_start) as usize..(end - group_start) as usize]);
                } else {
                    digests.known(zero_chunk_digests(algorithm, end - start));
                }
            }
            Ok(digests.finish(algorithm))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The construction spelled out, block by block, with no shortcut.
    fn reference(algorithm: Algorithm, message: &[u8]) -> Vec<u8> {
        let mut outer = Hasher::new(algorithm);
        for block in message.chunks(BLOCK_SIZE as usize) {
            outer.update(&digest_of(algorithm, block));
        }
        outer.update(&(message.len() as u64).to_le_bytes());
        outer.finish()
    }

    /// A reader of a message held in memory, with holes where `holes` says.
    struct Memory {
        data: Vec<u8>,
        holes: Vec<(u64, u64)>,
        granularity: u64,
    }

    impl GuestReader for Memory {
        fn virtual_size(&self) -> u64 {
            self.data.len() as u64
        }
        fn granularity(&self) -> u64 {
            self.granularity
        }
        fn extent_at(&self, offset: u64) -> Result<Extent, ReadFailure> {
            for &(s, e) in &self.holes {
                if (s..e).contains(&offset) {
                    return Ok(Extent {
                        start: offset,
                        len: e - offset,
                        data: false,
                    });
                }
            }
            let next = self
                .holes
                .iter()
                .map(|h| h.0)
                .filter(|&s| s > offset)
                .min()
                .unwrap_or(self.data.len() as u64);
            Ok(Extent {
                start: offset,
                len: next - offset,
                data: true,
            })
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailure> {
            // Chunks of one block never touch the block-aligned holes; larger chunks (whole
            // clusters) are read whole and the reader gives their holes' zeros.
            let chunks_are_blocks = self.granularity <= BLOCK_SIZE;
            for &(s, e) in self.holes.iter().filter(|_| chunks_are_blocks) {
                let (lo, hi) = (s.max(offset), e.min(offset + buf.len() as u64));
                assert!(lo >= hi, "read of a hole at {lo:#x}");
            }
            buf.copy_from_slice(&self.data[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
    }

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
    }

    #[test]
    fn known_values() {
        // An empty message: hashlib.sha256(struct.pack("<Q", 0)).hexdigest().
        let empty = GuestHasher::new(Algorithm::Sha256).finish();
        assert_eq!(
            empty.hex(),
            "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"
        );
    }

    #[test]
    fn parallel_streaming_and_reference_agree() {
        let b = BLOCK_SIZE as usize;
        let mut data = vec![0u8; 5 * b + 1234];
        data[7] = 1;
        data[3 * b + 9] = 0xff;
        data[5 * b + 1000] = 2;
        let pool = pool();
        for algorithm in Algorithm::ALL {
            for len in [0, 1, 511, b - 1, b, b + 1, 2 * b, 3 * b + 17, data.len()] {
                let message = &data[..len];
                let want = reference(algorithm, message);
                let mut s = GuestHasher::new(algorithm);
                for piece in message.chunks(1000) {
                    s.update(piece);
                }
                assert_eq!(s.finish().digest, want, "{algorithm} streamed, {len}");
                for granularity in [512, BLOCK_SIZE, 4 * BLOCK_SIZE] {
                    let reader = Memory {
                        data: data.clone(),
                        holes: vec![(b as u64, 3 * b as u64), (4 * b as u64, 5 * b as u64)],
                        granularity,
                    };
                    let got = hash_guest(&reader, len as u64, algorithm, &pool).unwrap();
                    assert_eq!(
                        got.digest, want,
                        "{algorithm} parallel, {len}, {granularity}"
                    );
                }
            }
        }
    }

    /// Pieces of any alignment, with gaps between them that hold zeros, give the digest of
    /// the whole message: straddling blocks are assembled, gaps are zeros, the short last
    /// block is data.
    #[test]
    fn pieces_in_order_with_gaps_give_the_whole_messages_digest() {
        let b = BLOCK_SIZE as usize;
        let mut data = vec![0u8; 6 * b + 777];
        for (i, byte) in data.iter_mut().enumerate() {
            if (i / 1000) % 3 != 0 {
                *byte = (i % 251) as u8 + 1;
            }
        }
        // (start, end) pieces fed; everything between them must read as zeros.
        let layouts: &[&[(usize, usize)]] = &[
            &[(0, 6 * b + 777)],
            &[(0, b), (2 * b, 4 * b), (5 * b, 6 * b + 777)],
            &[
                (100, b - 7),
                (b + 3, 3 * b + 1),
                (3 * b + 1, 3 * b + 2),
                (4 * b, 6 * b + 10),
            ],
            &[(b / 2, b + b / 2), (6 * b + 100, 6 * b + 777)],
            &[(6 * b, 6 * b + 777)],
            &[],
        ];
        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
            for length in [data.len(), 6 * b, 5 * b + 1] {
                for &pieces in layouts {
                    let mut message = vec![0u8; length];
                    let digester = BlockDigester::new(algorithm, length as u64);
                    let mut hasher = digester.hasher();
                    for &(s, e) in pieces {
                        if s >= length {
                            continue;
                        }
                        let e2 = e.min(length);
                        message[s..e2].copy_from_slice(&data[s..e2]);
                        // Bytes past the message (a padded buffer) are left out.
                        hasher
                            .add_piece(digester.piece(s as u64, &data[s..e]))
                            .unwrap();
                    }
                    assert_eq!(
                        hasher.finish_at(length as u64).digest,
                        reference(algorithm, &message),
                        "{algorithm} {length} {pieces:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_piece_before_the_position_is_refused() {
        let digester = BlockDigester::new(Algorithm::Sha256, 4 * BLOCK_SIZE);
        let mut hasher = digester.hasher();
        hasher
            .add_piece(digester.piece(BLOCK_SIZE, &[1u8; 100]))
            .unwrap();
        let e = hasher.add_piece(digester.piece(0, &[1u8; 10])).unwrap_err();
        assert_eq!(e.position, BLOCK_SIZE + 100);
    }

    #[test]
    fn zeros_without_bytes_equal_zeros_as_bytes() {
        let mut a = GuestHasher::new(Algorithm::Sha256);
        a.update(b"abc");
        a.zeros(3 * BLOCK_SIZE + 5);
        a.update(b"d");
        let mut message = b"abc".to_vec();
        message.resize(message.len() + 3 * BLOCK_SIZE as usize + 5, 0);
        message.push(b'd');
        assert_eq!(a.finish().digest, reference(Algorithm::Sha256, &message));
        // A run that ends inside the pending block keeps the bytes before it.
        let mut a = GuestHasher::new(Algorithm::Sha256);
        a.update(b"abc");
        a.zeros(5);
        a.zeros(0);
        a.update(b"d");
        assert_eq!(
            a.finish().digest,
            reference(Algorithm::Sha256, b"abc\0\0\0\0\0d")
        );
    }

    #[test]
    fn text_and_json_forms_round_trip() {
        let h = GuestHasher::new(Algorithm::Sha256).finish();
        assert_eq!(GuestHash::parse(&h.to_string()).unwrap(), h);
        assert_eq!(GuestHash::parse(&format!("sha256:{}", h.hex())).unwrap(), h);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["algorithm"], "blkhash-sha256");
        assert_eq!(json["block_size"], 65536);
        assert_eq!(serde_json::from_value::<GuestHash>(json).unwrap(), h);
        assert!(GuestHash::parse("sha256:abcd").is_err());
        assert!(GuestHash::parse("crc:00").is_err());
        assert!(GuestHash::parse("sha256").is_err());
    }
}
