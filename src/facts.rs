//! What vmimage measures about a local image file: its format, length, virtual size, safety
//! verdict and, when asked, its digests ([`ImageFacts`], gathered by [`gather_facts`]). The
//! upload metadata ([`crate::cloud::metadata::build`]) is filled from them, and
//! [`crate::verify`] compares them with what a cloud recorded; neither is needed to know them.

use std::path::Path;

use crate::digest::guest::GuestHash;
use crate::digest::{self, Algorithm, Digests};
use crate::error::{Error, ErrorKind, Operation};
use crate::format::ImageFormat;
use crate::inspect::inspect_path;
use crate::safety::Safety;
use crate::source::FileIdentity;

/// One GiB: `min_disk` is in GiB (Nova: `min_disk * units.Gi`; Cinder rounds with
/// `ceil(virtual_size / units.Gi)`, `reference/cloud-metadata.md` §3).
pub const GIB: u64 = 1 << 30;

/// What the image itself says, measured locally: the facts a body and a sidecar are filled
/// from. `vmimage metadata` gathers them with [`gather_facts`]; `vmimage convert`
/// builds them from what it wrote (it knows the format and sizes and computed the digests while
/// writing).
#[derive(Debug, Clone)]
pub struct ImageFacts {
    /// The format detected from content.
    pub format: ImageFormat,
    /// The file's length in bytes (what a cloud records as `size`).
    pub size: u64,
    /// The guest-visible size in bytes; `None` when the header is too damaged to say.
    pub virtual_size: Option<u64>,
    /// Digests of the whole file, when computed. Needed only for the [`crate::cloud::Sidecar`].
    pub digests: Option<Digests>,
    /// The inspector's verdict. An unsafe image breaks a rule of every target.
    pub safety: Safety,
    /// The guest-content hash, when computed (sidecars carry it; `verify` checks it).
    pub guest_hash: Option<GuestHash>,
}

impl ImageFacts {
    /// Facts about an image known to be safe (for example one `vmimage convert` just wrote).
    pub fn new(
        format: ImageFormat,
        size: u64,
        virtual_size: Option<u64>,
        digests: Option<Digests>,
    ) -> Self {
        Self {
            format,
            size,
            virtual_size,
            digests,
            safety: Safety::from_findings(Vec::new()),
            guest_hash: None,
        }
    }

    /// The `disk_format` a cloud records for this file, or the format's own name when no
    /// cloud has one for it (QED, LUKS).
    pub fn disk_format(&self) -> &'static str {
        self.format.disk_format().unwrap_or(self.format.name())
    }

    /// The smallest `min_disk` that lets the image boot: `ceil(virtual_size / GiB)`.
    pub fn min_disk_needed(&self) -> Option<u64> {
        self.virtual_size.map(|v| v.div_ceil(GIB))
    }

    /// The lower-case hex digest for `algorithm`, when it was computed.
    pub fn digest_hex(&self, algorithm: Algorithm) -> Option<String> {
        self.digests.as_ref()?.get(algorithm).map(|d| d.hex())
    }
}

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
        unchanged(path, &before, &after, info.file_length, d.size)?;
        Some(d)
    };
    Ok(ImageFacts {
        format: info.format,
        size: info.file_length,
        virtual_size: info.virtual_size,
        digests,
        safety: info.safety,
        guest_hash: None,
    })
}

/// Whether the file at `path` is the one inspected: the same identity `before` the inspection
/// and `after` the digests, and as many bytes digested as inspected.
fn unchanged(
    path: &Path,
    before: &FileIdentity,
    after: &FileIdentity,
    inspected: u64,
    digested: u64,
) -> Result<(), Error> {
    if digested == inspected && after == before {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Changed,
        Some(path),
        format!(
            "cannot read {}: the file changed while it was read ({inspected} bytes, then {})",
            path.display(),
            after.file_len()
        ),
    )
    .with_operation(Operation::Read))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(virtual_size: u64) -> ImageFacts {
        ImageFacts::new(ImageFormat::Qcow2, 200_000, Some(virtual_size), None)
    }

    /// A change between the inspection and the digests is [`ErrorKind::Changed`], as the
    /// digest engine's own check says it, not an I/O error.
    #[test]
    fn a_file_changed_after_its_inspection_is_changed() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), [1u8; 1000]).unwrap();
        let before = FileIdentity::of_path(file.path()).unwrap();
        assert!(unchanged(file.path(), &before, &before, 1000, 1000).is_ok());
        std::fs::write(file.path(), [2u8; 3000]).unwrap();
        let after = FileIdentity::of_path(file.path()).unwrap();
        let e = unchanged(file.path(), &before, &after, 1000, 3000).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read {}: the file changed while it was read (1000 bytes, then 3000)",
                file.path().display()
            )
        );
        // The same length but another digest length: the read saw a different file.
        let e = unchanged(file.path(), &after, &after, 3000, 2000).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    }

    #[test]
    fn min_disk_needed_rounds_the_virtual_size_up_to_whole_gib() {
        assert_eq!(facts(0).min_disk_needed(), Some(0));
        assert_eq!(facts(1).min_disk_needed(), Some(1));
        assert_eq!(facts(GIB).min_disk_needed(), Some(1));
        assert_eq!(facts(GIB + 1).min_disk_needed(), Some(2));
        // Ubuntu 25.04's cloud image: 3.5 GiB needs min_disk 4 (reference §3).
        assert_eq!(facts(3_758_096_384).min_disk_needed(), Some(4));
        assert_eq!(facts(u64::MAX).min_disk_needed(), Some(1 << 34));
    }
}
