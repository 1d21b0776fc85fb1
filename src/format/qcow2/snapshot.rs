//! The qcow2 snapshot table (`docs/interop/qcow2.rst`, "Snapshots").
//!
//! Entries are variable-length and 8-byte aligned: a 40-byte fixed part, `extra_data_size`
//! bytes of extra data, the ID string and the name. QEMU's limits bound the whole walk: at most
//! [`MAX_SNAPSHOTS`] entries, [`MAX_SNAPSHOT_EXTRA_DATA`] bytes of extra data each, and
//! [`MAX_SNAPSHOT_TABLE_SIZE`] bytes in all, so memory is bounded whatever the header claims.

use super::header::{MAX_L1_SIZE_BYTES, MAX_SNAPSHOTS, Part, Qcow2Error, Qcow2Header, TableKind};
use crate::format::bytes::{be16, be32, be64};
use crate::source::{ReadAt, read_exact_at};

/// Bytes of the fixed part of a snapshot table entry.
pub const SNAPSHOT_HEADER_LEN: usize = 40;
/// QEMU's limit on a snapshot's extra data (`QCOW_MAX_SNAPSHOT_EXTRA_DATA`).
pub const MAX_SNAPSHOT_EXTRA_DATA: u32 = 1024;
/// QEMU's limit on the whole table (`QCOW_MAX_SNAPSHOTS_SIZE`: 1 KiB per snapshot).
pub const MAX_SNAPSHOT_TABLE_SIZE: u64 = 1024 * MAX_SNAPSHOTS as u64;
/// Version 3 requires the extra data to hold `vm_state_size_large` and `disk_size`.
pub const V3_MIN_EXTRA_DATA: u32 = 16;

/// One internal snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Offset of the snapshot's L1 table.
    pub l1_table_offset: u64,
    /// Entries in the snapshot's L1 table.
    pub l1_size: u32,
    /// Unique ID string.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time, seconds.
    pub date_sec: u32,
    /// Creation time, nanoseconds.
    pub date_nsec: u32,
    /// Guest clock in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Size of the saved VM state (the 64-bit extra field when present).
    pub vm_state_size: u64,
    /// Virtual disk size at the snapshot, when recorded.
    pub disk_size: Option<u64>,
    /// Instruction count, when recorded (and not -1).
    pub icount: Option<u64>,
}

/// Reads and validates every entry of the snapshot table.
pub fn read_snapshots<S: ReadAt + ?Sized>(
    src: &S,
    header: &Qcow2Header,
) -> Result<Vec<Snapshot>, Qcow2Error> {
    let file_len = src.len();
    let count = header.nb_snapshots.min(MAX_SNAPSHOTS);
    let mut snapshots = Vec::with_capacity(count.min(1024) as usize);
    let mut offset = header.snapshots_offset;
    for index in 0..count {
        offset = offset.next_multiple_of(8);
        let table_bytes = offset - header.snapshots_offset;
        if table_bytes > MAX_SNAPSHOT_TABLE_SIZE {
            return Err(too_big(table_bytes));
        }
        let mut fixed = [0u8; SNAPSHOT_HEADER_LEN];
        read_exact_at(src, &mut fixed, offset)
            .map_err(|e| Qcow2Error::from_read(Part::SnapshotTable, e))?;
        let l1_table_offset = be64(&fixed, 0);
        let l1_size = be32(&fixed, 8);
        let id_len = be16(&fixed, 12);
        let name_len = be16(&fixed, 14);
        let date_sec = be32(&fixed, 16);
        let date_nsec = be32(&fixed, 20);
        let vm_clock_nsec = be64(&fixed, 24);
        let vm_state_size32 = be32(&fixed, 32);
        let extra_len = be32(&fixed, 36);
        if extra_len > MAX_SNAPSHOT_EXTRA_DATA {
            return Err(Qcow2Error::BadExtension {
                name: Part::SnapshotTable,
                reason: format!(
                    "entry {index} has {extra_len} bytes of extra data, above QEMU's limit of {MAX_SNAPSHOT_EXTRA_DATA}"
                ),
            });
        }
        if header.version >= 3 && extra_len < V3_MIN_EXTRA_DATA {
            return Err(Qcow2Error::BadExtension {
                name: Part::SnapshotTable,
                reason: format!(
                    "entry {index} has {extra_len} bytes of extra data; version 3 needs at least {V3_MIN_EXTRA_DATA}"
                ),
            });
        }
        offset += SNAPSHOT_HEADER_LEN as u64;
        let rest_len = extra_len as usize + id_len as usize + name_len as usize;
        let mut rest = vec![0u8; rest_len];
        read_exact_at(src, &mut rest, offset)
            .map_err(|e| Qcow2Error::from_read(Part::SnapshotTable, e))?;
        offset += rest_len as u64;
        let table_bytes = offset - header.snapshots_offset;
        if table_bytes > MAX_SNAPSHOT_TABLE_SIZE {
            return Err(too_big(table_bytes));
        }
        let extra = &rest[..extra_len as usize];
        let vm_state_size = if extra_len >= 8 {
            be64(extra, 0)
        } else {
            u64::from(vm_state_size32)
        };
        let disk_size = (extra_len >= 16).then(|| be64(extra, 8));
        let icount = if extra_len >= 24 {
            Some(be64(extra, 16)).filter(|&v| v != u64::MAX)
        } else {
            None
        };
        let id_end = extra_len as usize + id_len as usize;
        let id = String::from_utf8_lossy(&rest[extra_len as usize..id_end]).into_owned();
        let name = String::from_utf8_lossy(&rest[id_end..]).into_owned();

        let l1_bytes = u64::from(l1_size) * 8;
        if l1_bytes > 0 {
            header.validate_table(
                TableKind::SnapshotL1,
                l1_table_offset,
                l1_bytes,
                MAX_L1_SIZE_BYTES,
                file_len,
            )?;
        }
        snapshots.push(Snapshot {
            l1_table_offset,
            l1_size,
            id,
            name,
            date_sec,
            date_nsec,
            vm_clock_nsec,
            vm_state_size,
            disk_size,
            icount,
        });
    }
    Ok(snapshots)
}

fn too_big(bytes: u64) -> Qcow2Error {
    Qcow2Error::TableTooLarge {
        table: TableKind::SnapshotTable,
        bytes,
        limit: MAX_SNAPSHOT_TABLE_SIZE,
    }
}
