//! LUKS containers. (Parser under construction.)

use std::io;

use serde::Serialize;

use super::{FormatReport, Probe};
use crate::source::ReadAt;

/// `qemu-img info`'s LUKS `format-specific.data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LuksSpecific {
    /// Cipher algorithm, QEMU's spelling (`aes-256`).
    pub cipher_alg: String,
}

/// Whether the probe carries a LUKS signature.
pub fn detect(_probe: &Probe) -> bool {
    false
}

/// Describes the container as `qemu-img info -f luks` would.
pub fn describe<S: ReadAt + ?Sized>(_src: &S, _probe: &Probe) -> io::Result<FormatReport> {
    Ok(FormatReport::default())
}
