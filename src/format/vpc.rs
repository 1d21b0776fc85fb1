//! VHD (`vpc`) images. (Parser under construction.)

use std::io;

use super::{FormatReport, Probe};
use crate::source::ReadAt;

/// Where the VHD signature was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpcDetection {
    /// A copy of the footer at offset 0: a dynamic or differencing VHD.
    HeaderCopy,
    /// Only the footer in the last 512 bytes: a fixed VHD, whose data is a raw guest disk.
    FooterOnly,
}

/// Whether the probe carries a VHD footer, and where.
pub fn detect(_probe: &Probe) -> Option<VpcDetection> {
    None
}

/// Describes the image as `qemu-img info -f vpc` would.
pub fn describe<S: ReadAt + ?Sized>(_src: &S, _probe: &Probe) -> io::Result<FormatReport> {
    Ok(FormatReport::default())
}
