//! `convert --verify`'s read-back: OUT, under its temporary name, read through the guest reader
//! of its format (the reader `hash --guest` uses, not the writer's path) and its guest hash
//! compared with the input's.
//!
//! Most outputs are read back once written ([`after_writing`]). A qcow2 OUT is read back
//! *while* it is written ([`qcow2_while_written`]), because its writer puts all of its metadata
//! (header, L1, refcounts, L2) first and then the data clusters in guest order: once the writer
//! thread has written the metadata, OUT's reader is opened, and each window of the guest is
//! read only when the writer thread has written every data cluster up to that window's end
//! ([`WriteMark`]); its file's holes are not looked up, since a hole may be a part not written
//! yet. The read-back's digests then run beside the conversion's, on cores the
//! conversion leaves idle, instead of after it (issue 16: `--verify` at most 25 % over the
//! conversion). Every byte is still read from the file, after it was written, through the
//! reader, which was opened (and OUT inspected, as before) once all of the metadata it reads
//! was written.

use std::cell::RefCell;
use std::iter::Peekable;
use std::path::Path;

use super::output::WriteMark;
use super::plan::{Packer, Plan, PlanIter};
use super::qcow2_writer::Layout;
use super::{error, open_image, open_input};
use crate::digest::Algorithm;
use crate::digest::guest::{GuestHash, hash_guest, hash_guest_when_ready};
use crate::error::Error;
use crate::format::guest::ReadFailure;
use crate::source::ImageFile;

/// The guest hash, with `algorithm`, of the complete output at `written` (`output` names it in
/// errors), its blocks digested on the threads of `pool`.
pub(super) fn after_writing(
    written: &Path,
    output: &Path,
    algorithm: Algorithm,
    pool: &rayon::ThreadPool,
) -> Result<GuestHash, Error> {
    let unreadable = |reason: String| error::verify_unreadable(output, reason);
    let (_, back, _) = open_input(written).map_err(|e| unreadable(e.to_string()))?;
    hash_guest(back.as_ref(), back.virtual_size(), algorithm, pool)
        .map_err(|e| unreadable(e.to_string()))
}

/// `got`, OUT's guest hash, if it is `want`, the input's; otherwise the mismatch error.
pub(super) fn compare(output: &Path, want: GuestHash, got: GuestHash) -> Result<GuestHash, Error> {
    if got != want {
        return Err(error::verify_mismatch(output, &want, &got));
    }
    Ok(got)
}

/// The guest hash of the qcow2 output at `written`, laid out as `layout` and `plan` say, read
/// while the writer thread writes it (`mark`), on a pool of `threads` threads of its own (the
/// conversion's pool is busy with the conversion).
#[allow(clippy::too_many_arguments)]
pub(super) fn qcow2_while_written(
    written: &Path,
    output: &Path,
    algorithm: Algorithm,
    layout: &Layout,
    plan: &Plan,
    mark: &WriteMark,
    threads: usize,
) -> Result<GuestHash, Error> {
    let unreadable = |reason: String| error::verify_unreadable(output, reason);
    let stopped = "the output stopped before it was complete";
    if !mark.wait_for(layout.data_offset) {
        return Err(unreadable(stopped.into()));
    }
    // Its holes are parts not written yet: read, never mapped (a stale map would hide data).
    let file = ImageFile::open(written).map_err(|e| unreadable(e.to_string()))?;
    let (_, back, _) =
        open_image(file.without_hole_map(), written).map_err(|e| unreadable(e.to_string()))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| unreadable(e.to_string()))?;
    let ends = RefCell::new(HostEnds::new(layout, plan));
    let ready = |guest_end: u64| {
        let host_end = ends.borrow_mut().up_to(guest_end);
        if mark.wait_for(host_end) {
            Ok(())
        } else {
            Err(ReadFailure::Invalid(stopped.into()))
        }
    };
    hash_guest_when_ready(back.as_ref(), back.virtual_size(), algorithm, &pool, &ready)
        .map_err(|e| unreadable(e.to_string()))
}

/// Where in a qcow2 output written by [`super::qcow2_writer`] the data of the guest up to an
/// offset ends: the writer places the data clusters in guest order, so replaying the plan
/// ([`Packer`]) gives each cluster's host range, and the host end grows with the guest offset.
pub(super) struct HostEnds<'p> {
    records: Peekable<PlanIter<'p>>,
    packer: Packer,
    cluster_size: u64,
    data_offset: u64,
    /// The host end of the clusters placed so far (the metadata's end before any).
    reached: u64,
}

impl<'p> HostEnds<'p> {
    /// The host ends of `plan`'s clusters in the file `layout` describes.
    pub(super) fn new(layout: &Layout, plan: &'p Plan) -> Self {
        Self {
            records: plan.iter().peekable(),
            packer: Packer::new(layout.cluster_size),
            cluster_size: layout.cluster_size,
            data_offset: layout.data_offset,
            reached: layout.data_offset,
        }
    }

    /// The file offset before which every stored byte of the guest's first `guest_end` bytes
    /// lies (offsets asked must not decrease).
    pub(super) fn up_to(&mut self, guest_end: u64) -> u64 {
        while let Some(&(cluster, stored)) = self.records.peek() {
            if cluster.saturating_mul(self.cluster_size) >= guest_end {
                break;
            }
            let p = self.packer.place(stored);
            self.reached = self.data_offset + p.offset + p.len;
            self.records.next();
        }
        self.reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::plan::Stored;

    #[test]
    fn host_ends_follow_the_clusters_placed_in_guest_order() {
        let cs = 65536;
        let mut plan = Plan::new(cs, cs / 8);
        for (cluster, stored) in [
            (2, Stored::Raw),
            (3, Stored::Compressed(1000)),
            (10, Stored::Raw),
        ] {
            plan.push(cluster, stored).unwrap();
        }
        let layout = Layout::compute(64 * cs, cs, &plan).unwrap();
        let data = layout.data_offset;
        let mut ends = HostEnds::new(&layout, &plan);
        // Nothing stored below cluster 2: the metadata is all there is to wait for.
        assert_eq!(ends.up_to(2 * cs), data);
        // A byte into cluster 2 needs it whole.
        assert_eq!(ends.up_to(2 * cs + 1), data + cs);
        // The compressed cluster 3 is packed right after it.
        assert_eq!(ends.up_to(4 * cs), data + cs + 1000);
        assert_eq!(ends.up_to(10 * cs), data + cs + 1000);
        // Cluster 10 is aligned to the next host cluster.
        assert_eq!(ends.up_to(64 * cs), data + 3 * cs);
        assert_eq!(layout.file_len(), data + 3 * cs);
    }
}
