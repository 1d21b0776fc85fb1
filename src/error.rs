//! The crate's public error: what stopped an operation, with the file it concerns.
//!
//! Content problems in an image being inspected are not errors: they are findings in the
//! report. An [`Error`] means the job could not be done (the file could not be opened or read,
//! changed while it was read, or could not be written), which the CLI maps to exit status 2.

use std::io;
use std::path::{Path, PathBuf};

/// Why an operation on a file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot read {}: {}", path.display(), describe_io(source))]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file changed while it was read (its length or modification time differs at the
    /// end, or it ended early): a digest would describe no version of it.
    #[error("{}: changed while it was read ({detail}); no digest was computed", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// What differed.
        detail: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An I/O error as a short phrase: the OS message without the "(os error N)" suffix.
pub fn describe_io(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
