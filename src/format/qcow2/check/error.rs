//! Why a check gave no verdict.

use std::io;

use super::open::OpenError;

/// Why no verdict could be given: `qemu-img check` exits 1 in each case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// `qemu-img` cannot open the image; the text is QEMU's reason.
    #[error("qemu-img cannot open it: {0}")]
    CannotOpen(String),
    /// The check stopped part way (`qemu-img check` prints "Check failed").
    #[error("the check failed: {0}")]
    Aborted(String),
    /// The operating system failed a read.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<OpenError> for CheckError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Refused(m) => CheckError::CannotOpen(m),
            OpenError::Io(e) => CheckError::Io(e),
        }
    }
}
