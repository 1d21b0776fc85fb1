//! Criterion bench of `vmimage::format::qcow2::check::check` on images made by qemu-img at
//! setup: a fully allocated image with 4 KiB clusters (many L2 tables and refcounts) and a
//! zstd-compressed one. The side-by-side comparison with `qemu-img check` is
//! `benches/check-side-by-side.sh`.

use std::path::Path;
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};
use vmimage::format::qcow2::check::check;
use vmimage::source::ImageFile;

fn qemu_img(dir: &Path, args: &[&str]) -> bool {
    Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn bench_check(c: &mut Criterion) {
    let Ok(dir) = tempfile::Builder::new()
        .prefix("vmimage-bench-")
        .tempdir_in("/tmp")
    else {
        eprintln!("cannot create a temporary directory; skipping");
        return;
    };
    // 256 MiB of non-zero, compressible data: every cluster is allocated.
    let raw: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i / 4096 % 251 + 1) as u8)
        .collect();
    if std::fs::write(dir.path().join("src.raw"), &raw).is_err() {
        return;
    }
    drop(raw);
    let made = qemu_img(
        dir.path(),
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4k",
            "src.raw",
            "dense4k.qcow2",
        ],
    ) && qemu_img(
        dir.path(),
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "compression_type=zstd",
            "src.raw",
            "zstd.qcow2",
        ],
    );
    if !made {
        eprintln!("qemu-img is needed to build the bench images; skipping");
        return;
    }
    for name in ["dense4k.qcow2", "zstd.qcow2"] {
        let Ok(file) = ImageFile::open(&dir.path().join(name)) else {
            return;
        };
        c.bench_function(&format!("check {name}"), |b| {
            b.iter(|| {
                let report = check(&file);
                assert!(report.is_ok_and(|r| r.counts.is_clean()));
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_check
}
criterion_main!(benches);
