//! `qemu-img check` for qcow2, reproduced read-only: the same verdicts, counters and exit
//! statuses, from the metadata alone.
//!
//! The check follows QEMU 10's `qcow2_co_check_locked` step by step:
//!
//! 1. **Open** ([`open`]) as `qemu-img check` opens the image (`qcow2_do_open` with
//!    `BDRV_O_CHECK`, read-only), refusing what QEMU refuses with QEMU's message, and loading
//!    the persistent bitmaps as QEMU does at open ([`bitmaps`]).
//! 2. **Snapshot table** ([`snapshots`]): validated and read; a table QEMU cannot read stops
//!    the check.
//! 3. **Rebuild the reference counts** ([`walk`], [`rebuild`]): the header, every L1 and L2
//!    table (active and snapshots'), the snapshot table, the refcount table, the LUKS header,
//!    the bitmap directory, tables and data clusters, and the refcount blocks each add one
//!    reference to the clusters they occupy, with every entry checked on the way.
//! 4. **Compare** with the stored reference counts ([`stored`]): a refcount below the
//!    references is a corruption, above them a leak.
//! 5. **COPIED flags** of the active L1 and L2 entries must say whether the refcount is 1.
//!
//! What is never done: writing, repairing, following the backing file or the external data
//! file, reading data clusters. Memory is proportional to the clusters of the file (one byte
//! each for the rebuilt counts, plus the stored refcount blocks), never to sizes the header
//! claims; reads are bounded buffers of at most one cluster (2 MiB) or 64 KiB of table.
//!
//! The findings ([`report`]) carry QEMU's message for each problem, plus the structure and
//! the file offset it concerns; the counters ([`counters`]) have QEMU's definitions.

pub mod bitmaps;
pub mod counters;
pub mod error;
pub mod open;
mod read;
pub mod rebuild;
pub mod report;
pub mod snapshots;
pub mod stored;
pub mod walk;

pub use counters::CheckCounts;
pub use error::CheckError;
pub use open::{CheckLayout, OpenError, probes_as_qcow2};
pub use report::{CheckReport, Finding, MAX_FINDINGS, Severity, Table};

use self::bitmaps::BitmapError;
use self::report::{FindingSink, Phase};
use self::stored::StoredRefcounts;
use self::walk::Walker;
use crate::format::ImageFormat;
use crate::source::ReadAt;

/// QEMU refuses to check files of more than `INT_MAX` clusters ("File too large").
pub const MAX_HOST_CLUSTERS: u64 = i32::MAX as u64;

/// What `qemu-img check` does with an image of a given format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatCheck {
    /// A qcow2 image: [`check`] reproduces `qemu-img check`.
    Qcow2,
    /// QEMU's driver for the format has no check: `qemu-img check` exits 63 ("This image
    /// format does not support checks").
    Unsupported(ImageFormat),
    /// QEMU has a check for the format (vmdk, vdi, vhdx, qed) that vmimage does not reproduce.
    NotReproduced(ImageFormat),
}

/// Decides how to check an image whose detected container formats are `detected` (empty for
/// raw) and whose first bytes are `head`, as `qemu-img`'s format probe would.
pub fn classify(detected: &[ImageFormat], head: &[u8]) -> FormatCheck {
    if detected.contains(&ImageFormat::Qcow2) {
        // qcow2_probe() also wants a version of at least 2 (version 1 is detected as `qcow`
        // before this); anything else probes as raw.
        return if probes_as_qcow2(head) {
            FormatCheck::Qcow2
        } else {
            FormatCheck::Unsupported(ImageFormat::Raw)
        };
    }
    match detected.first().copied() {
        Some(f @ (ImageFormat::Vmdk | ImageFormat::Vdi | ImageFormat::Vhdx | ImageFormat::Qed)) => {
            FormatCheck::NotReproduced(f)
        }
        Some(f @ (ImageFormat::Vpc | ImageFormat::Luks | ImageFormat::Qcow)) => {
            FormatCheck::Unsupported(f)
        }
        // ISO images and partitioned disks are raw to QEMU.
        _ => FormatCheck::Unsupported(ImageFormat::Raw),
    }
}

/// Checks the qcow2 image in `src` as `qemu-img check` does, without writing to it.
///
/// A report is returned whenever `qemu-img check` would print one, including when it counted
/// internal errors (`check-errors`, exit 1); [`CheckError`] covers the cases where it prints
/// none.
pub fn check<S: ReadAt + ?Sized>(src: &S) -> Result<CheckReport, CheckError> {
    let layout = open::open(src)?;
    let bitmap_entries = match &layout.bitmaps {
        Some(loc) => {
            let entries = bitmaps::load_directory(src, &layout, loc).map_err(open_error)?;
            bitmaps::validate_at_open(src, &layout, &entries).map_err(open_error)?;
            entries
        }
        None => Vec::new(),
    };

    let mut sink = FindingSink::default();
    let mut counts = CheckCounts::default();

    // qcow2_check_read_snapshot_table()
    let snapshot_table = snapshots::read_snapshot_table(src, &layout)?;
    for (i, sn) in snapshot_table.entries.iter().enumerate() {
        if snapshots::is_incomplete(&layout, sn) {
            counts.corruptions += 1;
            sink.push(
                Phase::Calculate,
                Severity::Corruption,
                Table::SnapshotTable,
                layout.snapshots_offset,
                || format!("ERROR snapshot table entry {i} is incomplete"),
            );
        }
    }

    // qcow2_check_refcounts()
    let file_clusters = layout.file_len.div_ceil(layout.cluster_size());
    if file_clusters > MAX_HOST_CLUSTERS {
        return Err(CheckError::Aborted("File too large".into()));
    }
    counts.total_clusters = layout.total_clusters();
    // References may reach one cluster past the end of the file.
    let stored = StoredRefcounts::load(src, &layout, file_clusters + 1)?;
    let mut walker = Walker::new(src, &layout, file_clusters, stored, counts, sink);
    walker.calculate(&snapshot_table, &bitmap_entries)?;
    walker.compare();
    let counts = walker.counts;
    let (findings, findings_omitted) = walker.sink.finish();
    Ok(CheckReport {
        counts,
        findings,
        findings_omitted,
    })
}

fn open_error(e: BitmapError) -> CheckError {
    match e {
        BitmapError::Invalid(m) => CheckError::CannotOpen(m),
        BitmapError::Io(e) => CheckError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_classified_as_qemu_img_check_treats_them() {
        let mut qcow2_head = vec![0u8; 112];
        qcow2_head[..4].copy_from_slice(b"QFI\xfb");
        qcow2_head[7] = 3;
        assert_eq!(
            classify(&[ImageFormat::Qcow2], &qcow2_head),
            FormatCheck::Qcow2
        );
        qcow2_head[7] = 1;
        assert_eq!(
            classify(&[ImageFormat::Qcow2], &qcow2_head),
            FormatCheck::Unsupported(ImageFormat::Raw)
        );
        assert_eq!(
            classify(&[ImageFormat::Qcow], &qcow2_head),
            FormatCheck::Unsupported(ImageFormat::Qcow)
        );
        for f in [
            ImageFormat::Vmdk,
            ImageFormat::Vdi,
            ImageFormat::Vhdx,
            ImageFormat::Qed,
        ] {
            assert_eq!(classify(&[f], &[]), FormatCheck::NotReproduced(f));
        }
        assert_eq!(
            classify(&[ImageFormat::Vpc], &[]),
            FormatCheck::Unsupported(ImageFormat::Vpc)
        );
        assert_eq!(
            classify(&[], &[]),
            FormatCheck::Unsupported(ImageFormat::Raw)
        );
        assert_eq!(
            classify(&[ImageFormat::Iso], &[]),
            FormatCheck::Unsupported(ImageFormat::Raw)
        );
    }
}
