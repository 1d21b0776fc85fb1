//! `hash --guest`: the guest-content hash of an image file (blkhash, see
//! [`crate::digest::guest`]), read through the same guest readers `convert` uses, so every
//! format `convert` reads is hashed, and refused when `convert` would refuse it (backing
//! files, external data files, encryption and the other safety errors).
//!
//! The message is the guest disk of the image's virtual size, except for a raw file, whose
//! message is the file's bytes exactly, as `blksum FILE` reads them (QEMU exposes a raw file
//! rounded up to 512 bytes; real disks are sector multiples, so both agree wherever it
//! matters).

use std::path::Path;

use crate::convert::{self, error};
use crate::digest::Algorithm;
use crate::digest::guest::{GuestHash, hash_guest, message_length};
use crate::error::{Error, ErrorKind};
use crate::format::guest::GuestReader;
use crate::source::FileIdentity;

/// How to hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestHashOptions {
    /// The digest algorithm `H` (blksum's default: SHA-256).
    pub algorithm: Algorithm,
    /// Worker threads; `None`: one per core.
    pub threads: Option<usize>,
}

impl Default for GuestHashOptions {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sha256,
            threads: None,
        }
    }
}

/// The guest hash of the image at `path`.
///
/// A format without a guest reader is an [`ErrorKind::Unsupported`] error.
pub fn hash_path(path: &Path, options: &GuestHashOptions) -> Result<GuestHash, Error> {
    let (format, reader, identity) = convert::open_input(path).map_err(|e| {
        if e.kind() == ErrorKind::Unsupported {
            let sentence = format!(
                "{}: this image's format has no guest reader",
                path.display()
            );
            Error::new(ErrorKind::Unsupported, Some(path), sentence)
        } else {
            e
        }
    })?;
    let length = message_length(format, reader.as_ref(), identity.file_len());
    hash_reader(path, reader.as_ref(), length, &identity, options)
}

/// The guest hash of the first `length` bytes of `reader`, the guest of the file at `path`
/// whose identity was `identity` when it was opened; a change of the file while it was read
/// is an error, never a digest.
pub fn hash_reader(
    path: &Path,
    reader: &dyn GuestReader,
    length: u64,
    identity: &FileIdentity,
    options: &GuestHashOptions,
) -> Result<GuestHash, Error> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = options.threads {
        pool = pool.num_threads(n);
    }
    let pool = pool
        .build()
        .map_err(|e| error::input_io(path, std::io::Error::other(e)))?;
    let result = hash_guest(reader, length, options.algorithm, &pool);
    let changed = FileIdentity::of_path(path).map_or(true, |now| &now != identity);
    if changed {
        return Err(error::input_changed(path));
    }
    result.map_err(|e| error::read_failure(path, e))
}
