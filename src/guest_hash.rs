//! `hash --guest`: the guest-content hash of an image file (blkhash, see
//! [`crate::digest::guest`]), read through the same guest readers `convert` uses, so every
//! format `convert` reads is hashed, and refused when `convert` would refuse it (backing
//! files, external data files, encryption and the other safety errors).
//!
//! The message is the guest disk of the image's virtual size, except for a raw file, whose
//! message is the file's bytes exactly, as `blksum FILE` reads them (QEMU exposes a raw file
//! rounded up to 512 bytes; real disks are sector multiples, so both agree wherever it
//! matters).

use std::path::{Path, PathBuf};

use crate::convert::{self, ConvertError};
use crate::digest::Algorithm;
use crate::digest::guest::{GuestHash, hash_guest, message_length};
use crate::format::ImageFormat;
use crate::format::guest::{GuestReader, ReadFailure};
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

/// Why an image's guest hash could not be computed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestHashError {
    /// No guest reader exists for the image's format.
    #[error("{}: {format} images have no guest reader (raw, qcow2 and vhd have one)", path.display())]
    UnsupportedFormat {
        /// The image.
        path: PathBuf,
        /// Its format.
        format: ImageFormat,
    },
    /// The image could not be opened or read, is unsafe, invalid, or changed while read.
    #[error(transparent)]
    Input(ConvertError),
}

impl GuestHashError {
    /// The exit status: 1 for an unsafe or invalid image, 2 when it could not be read.
    pub fn exit_code(&self) -> u8 {
        match self {
            GuestHashError::UnsupportedFormat { .. } => 2,
            GuestHashError::Input(e) => e.exit_code(),
        }
    }
}

impl From<ConvertError> for GuestHashError {
    fn from(e: ConvertError) -> Self {
        match e {
            ConvertError::UnsupportedFormat { path, format } => {
                GuestHashError::UnsupportedFormat { path, format }
            }
            other => GuestHashError::Input(other),
        }
    }
}

/// The guest hash of the image at `path`.
pub fn hash_path(path: &Path, options: &GuestHashOptions) -> Result<GuestHash, GuestHashError> {
    let (format, reader, identity) = convert::open_input(path)?;
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
) -> Result<GuestHash, GuestHashError> {
    let input_err = |source| ConvertError::InputIo {
        path: path.to_path_buf(),
        source,
    };
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = options.threads {
        pool = pool.num_threads(n);
    }
    let pool = pool
        .build()
        .map_err(|e| input_err(std::io::Error::other(e)))?;
    let result = hash_guest(reader, length, options.algorithm, &pool);
    let changed = FileIdentity::of_path(path).map_or(true, |now| &now != identity);
    if changed {
        return Err(ConvertError::InputChanged {
            path: path.to_path_buf(),
        }
        .into());
    }
    result.map_err(|e| match e {
        ReadFailure::Io(source) => input_err(source).into(),
        ReadFailure::Invalid(reason) => ConvertError::InvalidInput {
            path: path.to_path_buf(),
            reason,
        }
        .into(),
    })
}
