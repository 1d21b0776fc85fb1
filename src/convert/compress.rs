//! Compressing and decompressing one qcow2 cluster, exactly as QEMU does it
//! (`block/qcow2-threads.c`: `qcow2_compress`, `qcow2_decompress`, `qcow2_zstd_compress`,
//! `qcow2_zstd_decompress`).
//!
//! - **zlib** ("deflate" in the spec) is *raw* deflate, no zlib header, window bits 12, level
//!   `Z_DEFAULT_COMPRESSION` (6).
//! - **zstd** is one frame at the library's default level (3) when writing; when reading, the
//!   data may hold several frames and decompression goes on until the cluster is full.
//! - Compression writes into a buffer of `cluster_size - 1` bytes; when the result does not fit
//!   the cluster is stored uncompressed, which is how `qemu-img convert -c` decides.
//! - Decompression produces exactly one cluster into a caller-sized buffer: it never allocates
//!   by what the data claims, and a descriptor that inflates to less (or to garbage) is an
//!   error, not a panic.
//!
//! Compression contexts are kept per thread and reset between clusters, so the output depends
//! only on the input cluster: the same bytes whatever the thread count.

use std::cell::RefCell;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer};

/// QEMU's deflate level: `Z_DEFAULT_COMPRESSION`, which zlib maps to 6.
pub const ZLIB_LEVEL: u32 = 6;
/// QEMU's deflate window: `deflateInit2(..., -12, ...)`, raw deflate with a 4 KiB window.
pub const DEFLATE_WINDOW_BITS: u8 = 12;
/// QEMU's zstd level: it compresses with a fresh context, so zstd's `ZSTD_CLEVEL_DEFAULT`.
pub const ZSTD_LEVEL: i32 = 3;
/// Largest zstd window accepted when decompressing: 2 MiB, the largest qcow2 cluster. A frame
/// for one cluster never needs more, and the cap keeps a hostile frame header from making the
/// decoder allocate zstd's default limit (128 MiB) per cluster.
pub const ZSTD_MAX_WINDOW_LOG: i32 = 21;

/// How compressed clusters are compressed (the qcow2 `compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Raw deflate (QEMU's `zlib`).
    Zlib,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The name `qemu-img` uses (`-o compression_type=`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }

    /// Parses `zlib` or `zstd`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "zlib" | "deflate" => Some(Compression::Zlib),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl From<crate::format::qcow2::CompressionType> for Compression {
    fn from(t: crate::format::qcow2::CompressionType) -> Self {
        match t {
            crate::format::qcow2::CompressionType::Zlib => Compression::Zlib,
            crate::format::qcow2::CompressionType::Zstd => Compression::Zstd,
        }
    }
}

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
    static DEFLATER: RefCell<Option<Compress>> = const { RefCell::new(None) };
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    static ZSTD_COMPRESSOR: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static COMPRESS_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Compresses one cluster into `out`, as `qcow2_co_compress` with a `cluster_size - 1`
/// destination. Returns `false` (and leaves `out` unspecified) when the result does not fit,
/// in which case the cluster is to be stored uncompressed.
pub fn compress_cluster(kind: Compression, cluster: &[u8], out: &mut Vec<u8>) -> bool {
    let limit = cluster.len().saturating_sub(1);
    // The compressor writes into a per-thread buffer that keeps its length, so it is zeroed
    // once per thread rather than once per cluster; `out` receives only the bytes produced.
    COMPRESS_SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < limit {
            scratch.resize(limit, 0);
        }
        let produced = compress_into(kind, cluster, &mut scratch[..limit]);
        out.clear();
        match produced {
            Some(n) if n <= limit => {
                out.extend_from_slice(&scratch[..n]);
                true
            }
            _ => false,
        }
    })
}

/// Compresses `cluster` into `out`: the compressed length, or `None` when it does not fit.
fn compress_into(kind: Compression, cluster: &[u8], out: &mut [u8]) -> Option<usize> {
    match kind {
        Compression::Zlib => DEFLATER.with(|cell| {
            let mut cell = cell.borrow_mut();
            let c = cell.get_or_insert_with(|| {
                Compress::new_with_window_bits(
                    flate2::Compression::new(ZLIB_LEVEL),
                    false,
                    DEFLATE_WINDOW_BITS,
                )
            });
            c.reset();
            match c.compress(cluster, out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => usize::try_from(c.total_out()).ok(),
                _ => None,
            }
        }),
        Compression::Zstd => ZSTD_COMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            let c = cell.get_or_insert_with(CCtx::create);
            // A fresh session with the default parameters, then QEMU's level.
            let ok = c
                .reset(zstd_safe::ResetDirective::SessionAndParameters)
                .is_ok()
                && c.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL))
                    .is_ok();
            if !ok {
                return None;
            }
            c.compress2(out, cluster).ok()
        }),
    }
}

/// Decompresses `data` into exactly `cluster.len()` bytes (`qcow2_decompress`: trailing input
/// is allowed, since descriptors give sizes rounded to sectors; short output is an error).
pub fn decompress_cluster(
    kind: Compression,
    data: &[u8],
    cluster: &mut [u8],
) -> Result<(), DecompressError> {
    match kind {
        Compression::Zlib => INFLATER.with(|cell| {
            let mut cell = cell.borrow_mut();
            let d = cell.get_or_insert_with(|| {
                Decompress::new_with_window_bits(false, DEFLATE_WINDOW_BITS)
            });
            d.reset(false);
            match d.decompress(data, cluster, FlushDecompress::Finish) {
                Ok(_) => {
                    let produced = usize::try_from(d.total_out()).unwrap_or(usize::MAX);
                    if produced == cluster.len() {
                        Ok(())
                    } else {
                        Err(DecompressError::Short {
                            kind: "zlib",
                            produced,
                            wanted: cluster.len(),
                        })
                    }
                }
                Err(e) => Err(DecompressError::Invalid {
                    kind: "zlib",
                    reason: e.to_string(),
                }),
            }
        }),
        Compression::Zstd => ZSTD_DECOMPRESSOR.with(|cell| {
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
            let wanted = cluster.len();
            let mut input = InBuffer::around(data);
            let mut output = OutBuffer::around(cluster);
            // Several frames may follow each other (QEMU loops the same way); stop when the
            // cluster is full, or fail when a call makes no progress (input exhausted).
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
            if unfinished > 0 {
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

    #[test]
    fn clusters_round_trip_through_both_codecs() {
        for kind in [Compression::Zlib, Compression::Zstd] {
            let data = sample(65536);
            let mut out = Vec::new();
            assert!(compress_cluster(kind, &data, &mut out), "{kind:?}");
            assert!(out.len() < data.len());
            let mut back = vec![0u8; data.len()];
            decompress_cluster(kind, &out, &mut back).unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn a_zstd_frame_larger_than_the_cluster_is_refused_as_qemu_refuses_it() {
        // 1 MiB of zeros in one frame (RLE blocks, a few hundred bytes): the first 64 KiB fill
        // the cluster, the rest makes the frame unfinished.
        let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
        let mut cluster = vec![1u8; 65536];
        let e = decompress_cluster(Compression::Zstd, &bomb, &mut cluster).unwrap_err();
        assert!(e.to_string().contains("expands past the cluster"), "{e}");
        // Exactly one cluster's worth is fine.
        let exact = zstd::bulk::compress(&vec![7u8; 65536], 3).unwrap();
        decompress_cluster(Compression::Zstd, &exact, &mut cluster).unwrap();
        assert!(cluster.iter().all(|&b| b == 7));
    }

    #[test]
    fn incompressible_clusters_are_refused() {
        // xorshift noise does not compress below cluster_size - 1.
        let mut x = 0x1234_5678_9abc_def0u64;
        let data: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for kind in [Compression::Zlib, Compression::Zstd] {
            let mut out = Vec::new();
            assert!(!compress_cluster(kind, &data, &mut out), "{kind:?}");
        }
    }

    #[test]
    fn zlib_output_is_raw_deflate_without_header() {
        let data = sample(4096);
        let mut out = Vec::new();
        assert!(compress_cluster(Compression::Zlib, &data, &mut out));
        let mut d = Decompress::new_with_window_bits(false, 12);
        let mut back = vec![0u8; 4096];
        d.decompress(&out, &mut back, FlushDecompress::Finish)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn zstd_multi_frame_data_fills_the_cluster() {
        let data = sample(8192);
        let mut a = Vec::new();
        let mut b = Vec::new();
        assert!(compress_cluster(Compression::Zstd, &data[..4096], &mut a));
        assert!(compress_cluster(Compression::Zstd, &data[4096..], &mut b));
        a.extend_from_slice(&b);
        let mut back = vec![0u8; 8192];
        decompress_cluster(Compression::Zstd, &a, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn garbage_and_short_streams_are_errors_not_panics() {
        let mut cluster = vec![0u8; 65536];
        for kind in [Compression::Zlib, Compression::Zstd] {
            assert!(decompress_cluster(kind, &[0xff; 64], &mut cluster).is_err());
            assert!(decompress_cluster(kind, &[], &mut cluster).is_err());
            let mut small = Vec::new();
            assert!(compress_cluster(kind, &sample(4096), &mut small));
            // A whole stream for 4 KiB cannot fill 64 KiB.
            assert!(decompress_cluster(kind, &small, &mut cluster).is_err());
            // A truncated stream fails too.
            let half = &small[..small.len() / 2];
            let mut four_k = vec![0u8; 4096];
            assert!(decompress_cluster(kind, half, &mut four_k).is_err());
        }
    }
}
