//! Criterion benches for the digest engine (`cargo bench --bench digest`).
//!
//! - `backend/*`: single-stream throughput of each MD5 and SHA-512 implementation the crate
//!   can use, alone on one core: vmimage's MD5 and SHA-512 against RustCrypto's `md-5` and
//!   `sha2`. (`benches/digest-backends/` measures ring, aws-lc and OpenSSL the same way;
//!   they are not dependencies.)
//! - `pair/*`: MD5 and SHA-512 on two threads at once over the same buffer, which is what
//!   `vmimage hash` does; shows whether the two cores slow each other (SMT siblings would).
//! - `engine/*`: [`DigestSet`] (default algorithms) fed from memory, by chunk size.
//! - `source/*`: a 256 MiB file in the page cache, hashed through `hash_path` (pipelined
//!   reads, the engine's way) and through a memory map feeding the hashers directly (the best
//!   case for mmap: no copy at all).
//!
//! - `sha256_multi/*`: SHA-256 of 64 KiB blocks (the guest hash's block digests), one at a
//!   time by `sha2` against two and four at once on SHA-NI (`digest::sha256_multi`) and
//!   sixteen at once on AVX-512 (`digest::sha256_x16`), on one
//!   core. Timed in CPU time of the bench thread (`CLOCK_THREAD_CPUTIME_ID`), not wall
//!   time, so that other processes on a shared machine do not count (they still share the
//!   core's caches and, with SMT, its execution units).
//!
//! Throughput is reported in bytes per second of input.

#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest as _;
use vmimage::digest::{Algorithm, DigestSet, EngineConfig, hash_path, md5::Md5, sha512::Sha512};

/// Input size for in-memory benches: far larger than the caches, like a disk image.
const MEMORY_LEN: usize = 64 << 20;
/// File size for the source benches.
const FILE_LEN: usize = 256 << 20;

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(9) as u8)
        .collect()
}

fn vmimage_md5(data: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(data);
    h.finalize()
}

fn rustcrypto_md5(data: &[u8]) -> Vec<u8> {
    md5::Md5::digest(data).to_vec()
}

fn vmimage_sha512(data: &[u8]) -> Vec<u8> {
    match Sha512::new_512() {
        Some(mut h) => {
            h.update(data);
            h.finalize()
        }
        None => rustcrypto_sha512(data),
    }
}

fn rustcrypto_sha512(data: &[u8]) -> Vec<u8> {
    sha2::Sha512::digest(data).to_vec()
}

fn backends(c: &mut Criterion) {
    let input = data(MEMORY_LEN);
    let mut group = c.benchmark_group("backend");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("md5/vmimage", |b| b.iter(|| vmimage_md5(black_box(&input))));
    group.bench_function("md5/rustcrypto", |b| {
        b.iter(|| rustcrypto_md5(black_box(&input)))
    });
    group.bench_function("sha512/vmimage", |b| {
        b.iter(|| vmimage_sha512(black_box(&input)))
    });
    group.bench_function("sha512/rustcrypto", |b| {
        b.iter(|| rustcrypto_sha512(black_box(&input)))
    });
    group.bench_function("sha256/rustcrypto", |b| {
        b.iter(|| sha2::Sha256::digest(black_box(&input)))
    });
    group.bench_function("sha1/rustcrypto", |b| {
        b.iter(|| sha1::Sha1::digest(black_box(&input)))
    });
    group.finish();
}

fn pair(c: &mut Criterion) {
    let input = data(MEMORY_LEN);
    let mut group = c.benchmark_group("pair");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    // Both digests of the same buffer, one per thread: the time of the slower one if the two
    // cores do not disturb each other.
    group.bench_function("md5+sha512/two-threads", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let md5 = s.spawn(|| vmimage_md5(black_box(&input)));
                let sha = rustcrypto_sha512(black_box(&input));
                (md5.join().ok(), sha)
            })
        })
    });
    group.bench_function("md5+sha512/one-thread", |b| {
        b.iter(|| {
            (
                vmimage_md5(black_box(&input)),
                rustcrypto_sha512(black_box(&input)),
            )
        })
    });
    group.finish();
}

fn engine(c: &mut Criterion) {
    let input = data(MEMORY_LEN);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for chunk in [256 << 10, 1 << 20, 4 << 20] {
        let config = EngineConfig {
            chunk_size: chunk,
            ..EngineConfig::default()
        };
        group.bench_with_input(
            BenchmarkId::new("default-algorithms/chunk-KiB", chunk >> 10),
            &config,
            |b, config| {
                b.iter(|| {
                    let mut set = DigestSet::with_config(&Algorithm::DEFAULT, *config);
                    set.update(black_box(&input));
                    set.finish()
                })
            },
        );
    }
    group.bench_function("default-algorithms/no-threads", |b| {
        let config = EngineConfig {
            threads: false,
            ..EngineConfig::default()
        };
        b.iter(|| {
            let mut set = DigestSet::with_config(&Algorithm::DEFAULT, config);
            set.update(black_box(&input));
            set.finish()
        })
    });
    group.finish();
}

fn source(c: &mut Criterion) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&data(FILE_LEN)).expect("write temp file");
    file.flush().expect("flush temp file");
    let path = file.path().to_path_buf();
    let mut group = c.benchmark_group("source");
    group.throughput(Throughput::Bytes(FILE_LEN as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("read-pipeline/md5+sha512", |b| {
        b.iter(|| hash_path(black_box(&path), &Algorithm::DEFAULT).expect("hash"))
    });
    group.bench_function("mmap/md5+sha512", |b| {
        b.iter(|| {
            let f = std::fs::File::open(&path).expect("open");
            // SAFETY: the bench owns the file and nothing truncates it while it is mapped.
            let map = unsafe { memmap2::Mmap::map(&f) }.expect("map");
            std::thread::scope(|s| {
                let md5 = s.spawn(|| vmimage_md5(&map));
                let sha = vmimage_sha512(&map);
                (md5.join().ok(), sha)
            })
        })
    });
    group.finish();
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// `f` run `iters` times, in this thread's CPU time.
fn cpu_time<R>(iters: u64, mut f: impl FnMut() -> R) -> Duration {
    let start = thread_cpu_time();
    for _ in 0..iters {
        black_box(f());
    }
    thread_cpu_time() - start
}

/// 64 MiB as 64 KiB blocks, each block hashed alone or 2 / 4 of them side by side.
fn sha256_multi(c: &mut Criterion) {
    use vmimage::digest::sha256_multi::{digest_all, digest_interleaved, digest_one};
    let input = data(MEMORY_LEN);
    let blocks: Vec<&[u8]> = input.chunks(64 << 10).collect();
    let mut group = c.benchmark_group("sha256_multi");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("64KiB-blocks/sha2-one-at-a-time", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                black_box(&blocks)
                    .iter()
                    .map(|m| digest_one(m))
                    .collect::<Vec<_>>()
            })
        })
    });
    if vmimage::digest::sha256_x16::supported() {
        group.bench_function("64KiB-blocks/x16-avx512", |b| {
            b.iter_custom(|n| {
                cpu_time(n, || {
                    black_box(&blocks)
                        .chunks_exact(16)
                        .filter_map(|m| {
                            m.first_chunk::<16>()
                                .and_then(vmimage::digest::sha256_x16::digest_x16)
                        })
                        .collect::<Vec<_>>()
                })
            })
        });
    }
    group.bench_function("64KiB-blocks/digest_all", |b| {
        b.iter_custom(|n| cpu_time(n, || digest_all(black_box(&blocks))))
    });
    if digest_interleaved([blocks[0]]).is_none() {
        // No SHA-NI: nothing to compare.
        group.finish();
        return;
    }
    group.bench_function("64KiB-blocks/x1", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                black_box(&blocks)
                    .iter()
                    .map(|m| digest_interleaved([*m]))
                    .collect::<Vec<_>>()
            })
        })
    });
    group.bench_function("64KiB-blocks/x2", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                black_box(&blocks)
                    .chunks_exact(2)
                    .map(|m| digest_interleaved([m[0], m[1]]))
                    .collect::<Vec<_>>()
            })
        })
    });
    group.bench_function("64KiB-blocks/x3", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                black_box(&blocks)
                    .chunks(3)
                    .filter_map(|m| digest_interleaved([m[0], m[1 % m.len()], m[2 % m.len()]]))
                    .collect::<Vec<_>>()
            })
        })
    });
    group.bench_function("64KiB-blocks/x4", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                black_box(&blocks)
                    .chunks_exact(4)
                    .map(|m| digest_interleaved([m[0], m[1], m[2], m[3]]))
                    .collect::<Vec<_>>()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, backends, pair, engine, source, sha256_multi);
criterion_main!(benches);
