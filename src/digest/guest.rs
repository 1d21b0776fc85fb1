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
//! into the outer digest in block order. Memory: one chunk buffer per thread and a few bytes
//! per block of one window.

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
            if self.pending.len() == b {
                let block = std::mem::take(&mut self.pending);
                self.full_block(&block);
                self.pending = block;
                self.pending.clear();
            }
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
            pool.install(|| {
                (0..chunks)
                    .into_par_iter()
                    .map(|c| {
                        let start = window_start + c * chunk;
                        let end = (start + chunk).min(window_end);
                        if has_data[c as usize] {
                            chunk_digests(reader, algorithm, start, end)
                        } else {
                            Ok(zero_chunk_digests(algorithm, end - start))
                        }
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

/// Reads guest bytes `[start, end)` and digests their blocks.
fn chunk_digests(
    reader: &dyn GuestReader,
    algorithm: Algorithm,
    start: u64,
    end: u64,
) -> Result<ChunkDigests, ReadFailure> {
    let mut buf = vec![0u8; (end - start) as usize];
    reader.read_at(start, &mut buf)?;
    Ok(buf
        .chunks(BLOCK_SIZE as usize)
        .map(|block| {
            if block.len() as u64 == BLOCK_SIZE && is_zero(block) {
                None
            } else {
                Some(digest_of(algorithm, block))
            }
        })
        .collect())
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
