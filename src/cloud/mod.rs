//! Cloud image records and upload metadata: Glance v2, Samsung Cloud Platform (SCP) and
//! Huawei Cloud / Open Telekom Cloud IMS.
//!
//! - Reading what a cloud recorded: [`parse_record`] takes any accepted document (a Glance,
//!   SCP or IMS image, an IMS listing, `openstack image show -f json`, a vmimage sidecar) and
//!   returns one normalised [`ImageRecord`], in which absent values and placeholders keep the
//!   reason they are absent. [`crate::verify`] compares it with a file.
//! - Writing what to upload: [`metadata::build`] turns an image's [`ImageFacts`] and the user's
//!   [`MetadataOptions`] into the create request body of a [`Target`], validated against every
//!   documented rule of that service, plus a [`Sidecar`] with the digests and sizes no body
//!   may carry.
//!
//! One module per service ([`glance`], [`scp`], [`ims`], [`openstack_cli`]) holds both how that
//! service's records read and its create rules; field meanings and rules cite SPEC,
//! `reference/cloud-metadata.md` and the seeds (000-002 SCP, 003-004 IMS).

pub mod glance;
pub mod ims;
pub mod lenient;
pub mod metadata;
pub mod openstack_cli;
pub mod parse;
pub mod record;
pub mod scp;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use metadata::{
    ImageFacts, MetadataDocument, MetadataOptions, RuleViolation, RuleViolations, Sidecar, Target,
    build,
};
pub use parse::{RecordError, RecordSelector, parse_record, read_document};
pub use record::{Absence, ImageRecord, RecordSource, Recorded};

use crate::digest::{self, Algorithm};
use crate::error::Error;
use crate::inspect::inspect_path;
use crate::source::FileIdentity;

/// Gathers an image's facts: header facts from [`inspect_path`] (constant I/O), then, when
/// `algorithms` is not empty, the digests of the whole file in one read. A file that changed
/// while it was read (its identity, [`FileIdentity`]: inode, length, modification and change
/// times, differs between before the inspection and after the digests) is refused: its
/// digests would describe bytes the file no longer holds, or never held at once (SPEC
/// "Honest").
pub fn gather_facts(path: &Path, algorithms: &[Algorithm]) -> Result<ImageFacts, Error> {
    let before = FileIdentity::of_path(path).map_err(|e| Error::io(path, e))?;
    let info = inspect_path(path)?;
    let digests = if algorithms.is_empty() {
        None
    } else {
        let d = digest::hash_path(path, algorithms)?;
        let after = FileIdentity::of_path(path).map_err(|e| Error::io(path, e))?;
        if d.size != info.file_length || after != before {
            return Err(Error::io(
                path,
                io::Error::other(format!(
                    "the file changed while it was read ({} bytes, then {})",
                    info.file_length,
                    after.file_len()
                )),
            ));
        }
        Some(d)
    };
    Ok(ImageFacts {
        format: info.format,
        size: info.file_length,
        virtual_size: info.virtual_size,
        digests,
        safety: info.safety,
    })
}

/// Writes `bytes` to `path` atomically: into a new temporary file beside it, flushed to disk,
/// then renamed over `path`. Readers see the old file or the whole new one, never a part, and
/// nothing is left behind on failure (SPEC "Honest": nothing half-written).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(base);
    tmp_name.push(format!(
        ".vmimage-{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f: File = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_file_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_atomic_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"").unwrap();
        // Renaming a file over a non-empty directory fails.
        assert!(write_atomically(&target, b"data").is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
