//! VMDK images. (Parser under construction.)

use std::io;

use serde::Serialize;

use super::{FormatReport, Probe};
use crate::source::ReadAt;

/// Which kind of VMDK file the probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmdkDetection {
    /// A hosted sparse extent starting with `KDMV`, descriptor embedded.
    Sparse,
    /// A bare text descriptor file.
    Descriptor,
}

/// `qemu-img info`'s VMDK `format-specific.data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VmdkSpecific {
    /// Content ID.
    pub cid: u32,
    /// Parent content ID (0xffffffff when there is no parent).
    pub parent_cid: u32,
    /// The descriptor's createType.
    pub create_type: String,
}

/// Whether the probe carries a VMDK signature.
pub fn detect(_probe: &Probe) -> Option<VmdkDetection> {
    None
}

/// Describes the image as `qemu-img info -f vmdk` would, without opening any extent file.
pub fn describe<S: ReadAt + ?Sized>(_src: &S, _probe: &Probe) -> io::Result<FormatReport> {
    Ok(FormatReport::default())
}
