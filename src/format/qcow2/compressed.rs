//! Decompressing one qcow2 compressed cluster exactly as QEMU does
//! (`block/qcow2-threads.c`: `qcow2_decompress`, `qcow2_zstd_decompress`; spec "Compressed
//! Clusters Descriptor").
//!
//! - **zlib** ("deflate" in the spec) is *raw* deflate, no zlib header, window bits 12.
//! - **zstd** data may hold several frames; decompression goes on until the cluster is full.
//! - Decompression produces exactly one cluster into a caller-sized buffer: it never allocates
//!   by what the data claims, and a descriptor that inflates to less (or to garbage) is an
//!   error, not a panic.
//!
//! Reading a compressed cluster is part of reading the format; compressing one, which only
//! `convert` does, lives in `convert/compress.rs`. Contexts are kept per thread and reset
//! between clusters.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress};
use zstd::zstd_safe::{self, DCtx, DParameter, InBuffer, OutBuffer};

use super::header::CompressionType;

/// QEMU's deflate window: `deflateInit2(..., -12, ...)`, raw deflate with a 4 KiB window.
pub const DEFLATE_WINDOW_BITS: u8 = 12;
/// Largest zstd window accepted when decompressing: 2 MiB, the largest qcow2 cluster. A frame
/// for one cluster never needs more, and the cap keeps a hostile frame header from making the
/// decoder allocate zstd's default limit (128 MiB) per cluster.
pub const ZSTD_MAX_WINDOW_LOG: i32 = 21;

/// Why a compressed cluster could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// The stream is not valid deflate or zstd data.
    #[error("its {kind} data is invalid: {reason}")]
    Invalid {
        /// `zlib` or `zstd`.
        kind: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The stream ended before a whole cluster was produced.
    #[error("its {kind} data inflates to {produced} bytes, less than the {wanted}-byte cluster")]
    Short {
        /// `zlib` or `zstd`.
        kind: &'static str,
        /// Bytes produced.
        produced: usize,
        /// Cluster size.
        wanted: usize,
    },
}

thread_local! {
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// A way to decompress a cluster: [`decompress_cluster`] or [`decompress_prefix`].
pub type Decompressor = fn(CompressionType, &[u8], &mut [u8]) -> Result<(), DecompressError>;

/// Decompresses `data` into exactly `cluster.len()` bytes (`qcow2_decompress`: trailing input
/// is allowed, since descriptors give sizes rounded to sectors; short output is an error).
pub fn decompress_cluster(
    kind: CompressionType,
    data: &[u8],
    cluster: &mut [u8],
) -> Result<(), DecompressError> {
    decompress(kind, data, cluster, Extent::Whole)
}

/// Decompresses only the first `prefix.len()` bytes of the cluster in `data`: a read of part
/// of a compressed cluster (the convert scan's probe of its first sector) stops there. For
/// zlib that costs a fraction of the whole cluster (the Huffman tables of the first block and
/// the bytes asked for); a zstd block is decoded whole whatever is asked. What lies past the
/// prefix is not checked: a stream too short for the cluster, or one that expands past it,
/// fails the read of the whole cluster ([`decompress_cluster`]) that a conversion then makes.
pub fn decompress_prefix(
    kind: CompressionType,
    data: &[u8],
    prefix: &mut [u8],
) -> Result<(), DecompressError> {
    decompress(kind, data, prefix, Extent::Prefix)
}

/// How much of a cluster a call decompresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extent {
    /// All of it: the stream must fill the output, and (zstd) end there.
    Whole,
    /// The first bytes only: the stream must fill the output.
    Prefix,
}

#[cfg(test)]
thread_local! {
    /// Bytes this thread has decompressed, for the tests that count them.
    pub static DECOMPRESSED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn decompress(
    kind: CompressionType,
    data: &[u8],
    out: &mut [u8],
    extent: Extent,
) -> Result<(), DecompressError> {
    #[cfg(test)]
    DECOMPRESSED.with(|d| d.set(d.get() + out.len() as u64));
    match kind {
        CompressionType::Zlib => INFLATER.with(|cell| {
            let mut cell = cell.borrow_mut();
            let d = cell.get_or_insert_with(|| {
                Decompress::new_with_window_bits(false, DEFLATE_WINDOW_BITS)
            });
            d.reset(false);
            // QEMU inflates with Z_FINISH into the cluster and accepts a full output whether
            // or not the stream ended there (`Z_STREAM_END` or `Z_BUF_ERROR` with
            // `avail_out == 0`); a prefix is the same call with a shorter output.
            let flush = match extent {
                Extent::Whole => FlushDecompress::Finish,
                Extent::Prefix => FlushDecompress::None,
            };
            match d.decompress(data, out, flush) {
                Ok(_) => {
                    let produced = usize::try_from(d.total_out()).unwrap_or(usize::MAX);
                    if produced == out.len() {
                        Ok(())
                    } else {
                        Err(DecompressError::Short {
                            kind: "zlib",
                            produced,
                            wanted: out.len(),
                        })
                    }
                }
                Err(e) => Err(DecompressError::Invalid {
                    kind: "zlib",
                    reason: e.to_string(),
                }),
            }
        }),
        CompressionType::Zstd => ZSTD_DECOMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            let d = cell.get_or_insert_with(|| {
                let mut d = DCtx::create();
                let _ = d.set_parameter(DParameter::WindowLogMax(ZSTD_MAX_WINDOW_LOG as u32));
                d
            });
            let invalid = |code: usize| DecompressError::Invalid {
                kind: "zstd",
                reason: zstd_safe::get_error_name(code).to_string(),
            };
            d.reset(zstd_safe::ResetDirective::SessionOnly)
                .map_err(invalid)?;
            let wanted = out.len();
            let mut input = InBuffer::around(data);
            let mut output = OutBuffer::around(out);
            // Several frames may follow each other (QEMU loops the same way); stop when the
            // output is full, or fail when a call makes no progress (input exhausted).
            let mut unfinished = 0;
            while output.pos() < wanted {
                let before = (input.pos(), output.pos());
                unfinished = d
                    .decompress_stream(&mut output, &mut input)
                    .map_err(invalid)?;
                if (input.pos(), output.pos()) == before {
                    return Err(DecompressError::Short {
                        kind: "zstd",
                        produced: output.pos(),
                        wanted,
                    });
                }
            }
            // A frame that still has bytes to give once the cluster is full expands past the
            // cluster (a decompression bomb, or damage): QEMU's `qcow2_zstd_decompress` fails
            // the read then, and so does this.
            if unfinished > 0 && extent == Extent::Whole {
                return Err(DecompressError::Invalid {
                    kind: "zstd",
                    reason: "the frame expands past the cluster size".into(),
                });
            }
            Ok(())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    fn compress(kind: CompressionType, data: &[u8]) -> Vec<u8> {
        match kind {
            CompressionType::Zstd => zstd::bulk::compress(data, 3).unwrap(),
            CompressionType::Zlib => {
                let mut c = flate2::Compress::new_with_window_bits(
                    flate2::Compression::new(6),
                    false,
                    DEFLATE_WINDOW_BITS,
                );
                let mut out = vec![0u8; data.len() + 1024];
                c.compress(data, &mut out, flate2::FlushCompress::Finish)
                    .unwrap();
                out.truncate(c.total_out() as usize);
                out
            }
        }
    }

    #[test]
    fn a_zstd_frame_larger_than_the_cluster_is_refused_as_qemu_refuses_it() {
        // 1 MiB of zeros in one frame (RLE blocks, a few hundred bytes): the first 64 KiB fill
        // the cluster, the rest makes the frame unfinished.
        let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
        let mut cluster = vec![1u8; 65536];
        let e = decompress_cluster(CompressionType::Zstd, &bomb, &mut cluster).unwrap_err();
        assert!(e.to_string().contains("expands past the cluster"), "{e}");
        // Exactly one cluster's worth is fine.
        let exact = zstd::bulk::compress(&vec![7u8; 65536], 3).unwrap();
        decompress_cluster(CompressionType::Zstd, &exact, &mut cluster).unwrap();
        assert!(cluster.iter().all(|&b| b == 7));
    }

    #[test]
    fn a_prefix_is_the_start_of_the_whole_cluster_and_checks_only_itself() {
        let cluster = sample(65536);
        for kind in [CompressionType::Zlib, CompressionType::Zstd] {
            let stream = compress(kind, &cluster);
            for n in [1, 511, 512, 4096, 65535, 65536] {
                let mut prefix = vec![0u8; n];
                decompress_prefix(kind, &stream, &mut prefix).unwrap();
                assert_eq!(prefix[..], cluster[..n], "{kind:?} {n}");
            }
            // A stream for the first 4 KiB only gives its 4 KiB, not more.
            let short = compress(kind, &cluster[..4096]);
            let mut head = vec![0u8; 4096];
            decompress_prefix(kind, &short, &mut head).unwrap();
            assert_eq!(head[..], cluster[..4096]);
            let mut more = vec![0u8; 4097];
            assert!(
                decompress_prefix(kind, &short, &mut more).is_err(),
                "{kind:?}"
            );
            let mut whole = vec![0u8; 65536];
            assert!(
                decompress_cluster(kind, &short, &mut whole).is_err(),
                "{kind:?}"
            );
        }
        // A zstd frame that expands past the cluster is refused whole, but its first bytes
        // are what they are.
        let bomb = zstd::bulk::compress(&[3u8; 1 << 17], 3).unwrap();
        let mut head = vec![0u8; 512];
        decompress_prefix(CompressionType::Zstd, &bomb, &mut head).unwrap();
        assert!(head.iter().all(|&b| b == 3));
        let mut whole = vec![0u8; 65536];
        assert!(decompress_cluster(CompressionType::Zstd, &bomb, &mut whole).is_err());
    }

    #[test]
    fn garbage_and_short_streams_are_errors_not_panics() {
        let mut cluster = vec![0u8; 65536];
        for kind in [CompressionType::Zlib, CompressionType::Zstd] {
            assert!(decompress_cluster(kind, &[0xff; 64], &mut cluster).is_err());
            assert!(decompress_cluster(kind, &[], &mut cluster).is_err());
            let small = compress(kind, &sample(4096));
            // A whole stream for 4 KiB cannot fill 64 KiB.
            assert!(decompress_cluster(kind, &small, &mut cluster).is_err());
            // A truncated stream fails too.
            let half = &small[..small.len() / 2];
            let mut four_k = vec![0u8; 4096];
            assert!(decompress_cluster(kind, half, &mut four_k).is_err());
        }
    }
}
