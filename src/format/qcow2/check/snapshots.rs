//! The snapshot table as the check reads it (`qcow2_check_read_snapshot_table` and
//! `qcow2_do_read_snapshots` in `block/qcow2-snapshot.c`, without repair).
//!
//! QEMU's open skips the table in check mode; the check then validates the table pointer, reads
//! every entry (zeros past the end of the file) and fails the whole check on an oversized entry
//! or table. Entries of a version 3 image with less than 16 bytes of extra data are
//! corruptions.

use super::super::header::MAX_SNAPSHOTS;
use super::super::snapshot::{
    MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOT_TABLE_SIZE, SNAPSHOT_HEADER_LEN, V3_MIN_EXTRA_DATA,
};
use super::error::CheckError;
use super::open::{CheckLayout, OpenError, c_string, validate_table};
use super::read::{ReadFailure, read_zero_filled};
use crate::format::bytes::{be16, be32, be64};
use crate::source::ReadAt;

/// QEMU's message when a snapshot table read is refused.
const SNAPSHOT_READ_EIO: &str =
    "failed to read the snapshot table: Failed to read snapshot table: Input/output error";

/// Longest snapshot ID or name kept for messages.
const MAX_TEXT_KEPT: u64 = 1024;

/// One snapshot as the check uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SnapshotRef {
    /// Offset of its L1 table.
    pub l1_table_offset: u64,
    /// Entries in its L1 table.
    pub l1_size: u32,
    /// ID string (for messages).
    pub id: String,
    /// Name (for messages).
    pub name: String,
    /// Bytes of extra data.
    pub extra_data_size: u32,
}

/// The snapshot table: its entries and its size in bytes (`snapshots_size`).
#[derive(Debug, Default)]
pub(super) struct SnapshotTable {
    pub entries: Vec<SnapshotRef>,
    pub size: u64,
}

/// Reads the snapshot table; an error here makes `qemu-img check` fail (one check error).
pub(super) fn read_snapshot_table<S: ReadAt + ?Sized>(
    src: &S,
    layout: &CheckLayout,
) -> Result<SnapshotTable, CheckError> {
    let nb = layout.nb_snapshots;
    let start = layout.snapshots_offset;
    if let Err(e) = validate_table(
        start,
        u64::from(nb),
        SNAPSHOT_HEADER_LEN as u64,
        SNAPSHOT_HEADER_LEN as u64 * u64::from(MAX_SNAPSHOTS),
        "snapshot table",
        layout.cluster_size(),
    ) {
        return Err(match e {
            OpenError::Refused(m) => CheckError::Aborted(m),
            OpenError::Io(e) => CheckError::Io(e),
        });
    }
    let mut table = SnapshotTable::default();
    let mut offset = start;
    let mut table_length = 0u64;
    for i in 0..nb {
        table_length = table_length.next_multiple_of(8);
        offset = offset.next_multiple_of(8);
        let mut h = [0u8; SNAPSHOT_HEADER_LEN];
        read(src, &mut h, offset)?;
        offset += SNAPSHOT_HEADER_LEN as u64;
        let l1_table_offset = be64(&h, 0);
        let l1_size = be32(&h, 8);
        let id_len = u64::from(be16(&h, 12));
        let name_len = u64::from(be16(&h, 14));
        let extra_data_size = be32(&h, 36);
        if extra_data_size > MAX_SNAPSHOT_EXTRA_DATA {
            return Err(CheckError::Aborted(format!(
                "failed to read the snapshot table: Too much extra metadata in snapshot table entry {i}"
            )));
        }
        let extra = u64::from(extra_data_size);
        // The extra data is read but the check uses none of it; a read past the allowed range
        // still fails as in QEMU.
        let mut scratch = vec![0u8; extra_data_size as usize];
        read(src, &mut scratch, offset)?;
        offset += extra;
        let id = read_text(src, offset, id_len)?;
        offset += id_len;
        let name = read_text(src, offset, name_len)?;
        offset += name_len;
        table_length += SNAPSHOT_HEADER_LEN as u64 + extra + id_len + name_len;
        if table_length > MAX_SNAPSHOT_TABLE_SIZE || offset - start > i32::MAX as u64 {
            return Err(CheckError::Aborted(
                "failed to read the snapshot table: Snapshot table is too big".into(),
            ));
        }
        table.entries.push(SnapshotRef {
            l1_table_offset,
            l1_size,
            id,
            name,
            extra_data_size,
        });
    }
    table.size = offset - start;
    Ok(table)
}

/// Whether a version 3 entry lacks the mandatory extra data (`vm_state_size_large` and
/// `disk_size`): "snapshot table entry N is incomplete".
pub(super) fn is_incomplete(layout: &CheckLayout, s: &SnapshotRef) -> bool {
    layout.version >= 3 && s.extra_data_size < V3_MIN_EXTRA_DATA
}

fn read<S: ReadAt + ?Sized>(src: &S, buf: &mut [u8], offset: u64) -> Result<(), CheckError> {
    match read_zero_filled(src, buf, offset) {
        Ok(()) => Ok(()),
        Err(ReadFailure::OutOfRange) => Err(CheckError::Aborted(SNAPSHOT_READ_EIO.into())),
        Err(ReadFailure::Io(e)) => Err(CheckError::Io(e)),
    }
}

/// Reads a string field of `len` bytes, keeping at most [`MAX_TEXT_KEPT`] of them; the whole
/// range is still validated as QEMU reads it.
fn read_text<S: ReadAt + ?Sized>(src: &S, offset: u64, len: u64) -> Result<String, CheckError> {
    if !super::open::qemu_can_read(offset, len) {
        return Err(CheckError::Aborted(SNAPSHOT_READ_EIO.into()));
    }
    let mut buf = vec![0u8; len.min(MAX_TEXT_KEPT) as usize];
    read(src, &mut buf, offset)?;
    Ok(c_string(&buf))
}
