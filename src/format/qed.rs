//! qed images. (Parser under construction: detection and description land with the formats work.)

use std::io;

use super::{FormatReport, Probe};
use crate::source::ReadAt;

/// Whether the probe carries this format's signature.
pub fn detect(_probe: &Probe) -> bool {
    false
}

/// Describes the image as `qemu-img info -f qed` would.
pub fn describe<S: ReadAt + ?Sized>(_src: &S, _probe: &Probe) -> io::Result<FormatReport> {
    Ok(FormatReport::default())
}
