//! Compressing one qcow2 cluster, exactly as QEMU does it (`block/qcow2-threads.c`:
//! `qcow2_compress`, `qcow2_zstd_compress`). Decompression, which reading any qcow2 image
//! needs, is the format's: [`crate::format::qcow2::compressed`].
//!
//! - **zlib** ("deflate" in the spec) is *raw* deflate, no zlib header, window bits 12, level
//!   `Z_DEFAULT_COMPRESSION` (6).
//! - **zstd** is one frame at the library's default level (3).
//! - Compression writes into a buffer of `cluster_size - 1` bytes; when the result does not fit
//!   the cluster is stored uncompressed, which is how `qemu-img convert -c` decides.
//!
//! Compression contexts are kept per thread and reset between clusters, so the output depends
//! only on the input cluster: the same bytes whatever the thread count.

use std::cell::RefCell;

use flate2::{Compress, FlushCompress, Status};
use zstd::zstd_safe::{self, CCtx, CParameter};

use crate::format::qcow2::CompressionType;
use crate::format::qcow2::compressed::DEFLATE_WINDOW_BITS;

/// QEMU's deflate level: `Z_DEFAULT_COMPRESSION`, which zlib maps to 6.
pub const ZLIB_LEVEL: u32 = 6;
/// QEMU's zstd level: it compresses with a fresh context, so zstd's `ZSTD_CLEVEL_DEFAULT`.
pub const ZSTD_LEVEL: i32 = 3;

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

impl From<CompressionType> for Compression {
    fn from(t: CompressionType) -> Self {
        match t {
            CompressionType::Zlib => Compression::Zlib,
            CompressionType::Zstd => Compression::Zstd,
        }
    }
}

impl From<Compression> for CompressionType {
    fn from(c: Compression) -> Self {
        match c {
            Compression::Zlib => CompressionType::Zlib,
            Compression::Zstd => CompressionType::Zstd,
        }
    }
}

thread_local! {
    static DEFLATER: RefCell<Option<Compress>> = const { RefCell::new(None) };
    static ZSTD_COMPRESSOR: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static COMPRESS_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
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

#[cfg(test)]
mod tests {
    use flate2::{Decompress, FlushDecompress};

    use super::*;

    fn decompress_cluster(
        kind: Compression,
        data: &[u8],
        cluster: &mut [u8],
    ) -> Result<(), crate::format::qcow2::compressed::DecompressError> {
        crate::format::qcow2::compressed::decompress_cluster(kind.into(), data, cluster)
    }

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
}
