//! What an image is: format detected from content, header facts, and the safety verdict.
//!
//! [`inspect`] reads a constant amount of the image (the probe, then each format's headers),
//! whatever the image size, runs every detector, describes the image as the format it matched,
//! and applies the safety rules that span formats (polyglots, QED, partition tables).
//! [`OpenedImage`] keeps what it decoded, for the commands that go on to read the guest disk.

use std::io;
use std::path::Path;

use serde::Serialize;

use crate::error::Error;
use crate::format::guest::{GuestReader, ReadFailure};
use crate::format::partition::{self, PartitionTableKind};
use crate::format::{
    self, Decoded, Detection, FormatReport, FormatSpecific, ImageFormat, Probe, SnapshotInfo,
};
use crate::safety::{Check, Finding, Rule, Safety};
use crate::source::{ImageFile, ReadAt};

/// The content matches more than one format's signature.
pub const POLYGLOT: Rule = Rule::error(
    "inspect.polyglot",
    Check::MultipleFormats,
    "The content parses as more than one image format (a polyglot), which tools may read differently.",
);
/// A container at offset 0 that is also a partitioned disk.
pub const CONTAINER_AND_PARTITION_TABLE: Rule = Rule::error(
    "inspect.container-and-partition-table",
    Check::MultipleFormats,
    "The content parses both as an image container and as a disk with an MBR or GPT partition table.",
);
/// QED is refused outright.
pub const QED_REFUSED: Rule = Rule::error(
    "inspect.qed-refused",
    Check::Qed,
    "QED images are refused: the format is deprecated in QEMU and banned by OpenStack's inspector.",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[POLYGLOT, CONTAINER_AND_PARTITION_TABLE, QED_REFUSED];

/// Everything `vmimage info` reports about one image, with `qemu-img info --output=json`'s field
/// names where the same fact exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    /// The path as given.
    pub filename: String,
    /// Format detected from content.
    pub format: ImageFormat,
    /// Guest-visible size in bytes; absent when the header is too damaged to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<u64>,
    /// Bytes allocated on the host file system (`st_blocks * 512`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_size: Option<u64>,
    /// The file's length in bytes (what a cloud records as `size`).
    pub file_length: u64,
    /// Allocation unit of the format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// The image was not closed cleanly.
    pub dirty_flag: bool,
    /// The backing file the image names (never opened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename: Option<String>,
    /// The backing file's format, when named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename_format: Option<String>,
    /// Whether the guest data is encrypted.
    pub encrypted: bool,
    /// Internal snapshots.
    pub snapshots: Vec<SnapshotInfo>,
    /// Format-specific facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format_specific: Option<FormatSpecific>,
    /// The partition table at the start of a raw disk (or a hybrid ISO, or a fixed VHD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_table: Option<PartitionTableKind>,
    /// Every format whose signature matched, when there is more than one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detected_formats: Vec<String>,
    /// The safety verdict.
    pub safety: Safety,
}

impl ImageInfo {
    /// The `disk_format` a cloud would record for this image.
    pub fn disk_format(&self) -> Option<&'static str> {
        self.format.disk_format()
    }
}

/// Inspects the image at `path`.
///
/// Fails only when the file cannot be opened or read; an invalid or hostile image is a report
/// whose [`Safety`] says why.
pub fn inspect_path(path: &Path) -> Result<ImageInfo, Error> {
    let file = ImageFile::open(path).map_err(|source| Error::io(path, source))?;
    let mut info =
        inspect(&file, &path.display().to_string()).map_err(|source| Error::io(path, source))?;
    info.actual_size = allocated_bytes(&file);
    Ok(info)
}

#[cfg(unix)]
fn allocated_bytes(file: &ImageFile) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    file.file()?.metadata().ok().map(|m| m.blocks() * 512)
}

/// An image file, inspected once: what `info` reports about it, and the structures its format
/// module decoded, from which [`OpenedImage::guest_reader`] reads the guest disk without
/// parsing the headers again (see [`crate::format::open`]). `convert` (and `hash --guest`)
/// start from one of these, so the safety verdict and the reader come from the same parse.
#[derive(Debug)]
pub struct OpenedImage {
    /// What `info` reports about the image (without `actual-size`).
    pub info: ImageInfo,
    file: ImageFile,
    decoded: Decoded,
}

impl OpenedImage {
    /// Inspects `file`; `filename` is only reported. Fails only when the file cannot be read.
    pub fn open(file: ImageFile, filename: &str) -> io::Result<Self> {
        let (info, decoded) = inspect_decoded(&file, filename)?;
        Ok(Self {
            info,
            file,
            decoded,
        })
    }

    /// The inspected file.
    pub fn file(&self) -> &ImageFile {
        &self.file
    }

    /// The guest disk, read as QEMU reads the format [`OpenedImage::info`] names; `Ok(None)`
    /// when vmimage has no reader of that format. The caller decides first whether the
    /// image is safe to read ([`ImageInfo::safety`]).
    pub fn guest_reader(self) -> Result<Option<Box<dyn GuestReader>>, ReadFailure> {
        format::open::guest_reader(self.file, self.info.format, &self.decoded)
    }
}

/// Inspects an image from any positional source. `filename` is only reported.
pub fn inspect<S: ReadAt + ?Sized>(src: &S, filename: &str) -> io::Result<ImageInfo> {
    inspect_decoded(src, filename).map(|(info, _)| info)
}

fn inspect_decoded<S: ReadAt + ?Sized>(
    src: &S,
    filename: &str,
) -> io::Result<(ImageInfo, Decoded)> {
    let probe = Probe::read(src)?;
    let detections = format::detect_all(&probe);
    let table = partition::detect(&probe);
    let format = detections.first().map_or(ImageFormat::Raw, |d| d.format);
    let (mut report, decoded) = format::describe_decoded(src, &probe, format)?;
    report.resolve_paths(filename);
    let mut findings = report.findings.clone();
    findings.extend(cross_format_findings(format, &detections, table.as_ref()));
    if format == ImageFormat::Raw
        && let Some(foreign) = format::foreign::detect(&probe)
    {
        findings.push(foreign.finding());
    }

    let mut detected_formats: Vec<String> = detections
        .iter()
        .map(|d| d.format.name().to_string())
        .collect();
    if let Some(t) = &table
        && (detections.is_empty() || !detections.iter().all(|d| d.allows_partition_table))
    {
        detected_formats.push(t.kind.name().to_string());
    }
    if detected_formats.len() < 2 {
        detected_formats.clear();
    }

    let info = assemble(
        filename,
        format,
        probe.len,
        report,
        table.map(|t| t.kind),
        detected_formats,
        findings,
    );
    Ok((info, decoded))
}

fn assemble(
    filename: &str,
    format: ImageFormat,
    file_length: u64,
    report: FormatReport,
    partition_table: Option<PartitionTableKind>,
    detected_formats: Vec<String>,
    findings: Vec<Finding>,
) -> ImageInfo {
    ImageInfo {
        filename: filename.to_string(),
        format,
        virtual_size: report.virtual_size,
        actual_size: None,
        file_length,
        cluster_size: report.cluster_size,
        dirty_flag: report.dirty,
        backing_filename: report.backing_filename,
        backing_filename_format: report.backing_format,
        encrypted: report.encrypted,
        snapshots: report.snapshots,
        format_specific: report.format_specific,
        partition_table,
        detected_formats,
        safety: Safety::from_findings(findings),
    }
}

/// Rules that depend on which formats matched, not on one format's header.
fn cross_format_findings(
    format: ImageFormat,
    detections: &[Detection],
    table: Option<&partition::PartitionTable>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if detections.len() > 1 {
        let names: Vec<&str> = detections.iter().map(|d| d.format.name()).collect();
        findings.push(POLYGLOT.finding(format!(
            "the content parses as more than one format ({}); a polyglot can be read differently by different tools",
            names.join(", ")
        )));
    }
    if let Some(t) = table {
        let container_at_zero = detections.iter().find(|d| !d.allows_partition_table);
        match container_at_zero {
            Some(d) => findings.push(CONTAINER_AND_PARTITION_TABLE.finding(format!(
                "the content parses as both {} and a disk with an {} partition table",
                d.format.name(),
                t.kind.name().to_uppercase()
            ))),
            None if matches!(format, ImageFormat::Raw | ImageFormat::Vpc) => {
                findings.extend(t.findings.iter().cloned());
            }
            None => {}
        }
    }
    if format == ImageFormat::Qed {
        findings.push(QED_REFUSED.finding(
            "QED images are refused: the format is deprecated in QEMU and banned by OpenStack's inspector",
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::vpc;
    use std::process::Command;

    fn qemu(tool: &str, args: &[&str]) {
        let status = Command::new(tool)
            .args(args)
            .status()
            .expect("qemu-img and qemu-io are the oracle and must be installed");
        assert!(status.success(), "{tool} {args:?}");
    }

    #[test]
    fn an_opened_image_reads_its_guest_from_what_inspect_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.vhd");
        let name = path.to_str().unwrap();
        qemu("qemu-img", &["create", "-q", "-f", "vpc", name, "8M"]);
        qemu(
            "qemu-io",
            &["-f", "vpc", "-c", "write -q -P 0x5a 3M 4k", name],
        );
        let image = OpenedImage::open(ImageFile::open(&path).unwrap(), name).unwrap();
        assert_eq!(image.info.format, ImageFormat::Vpc);
        assert!(image.info.safety.safe, "{:?}", image.info.safety);
        let Decoded::Vpc(layout) = &image.decoded else {
            panic!("the VHD headers were not kept: {:?}", image.decoded);
        };
        assert_eq!(layout.detection, vpc::VpcDetection::HeaderCopy);
        assert!(layout.dynamic.is_some());
        let virtual_size = image.info.virtual_size;
        let reader = image.guest_reader().unwrap().expect("VHD has a reader");
        assert_eq!(Some(reader.virtual_size()), virtual_size);
        let mut buf = vec![0u8; 8192];
        reader.read_at((3 << 20) - 4096, &mut buf).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0));
        assert!(buf[4096..].iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn formats_without_a_reader_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.qcow");
        let name = path.to_str().unwrap();
        qemu("qemu-img", &["create", "-q", "-f", "qcow", name, "1M"]);
        let image = OpenedImage::open(ImageFile::open(&path).unwrap(), name).unwrap();
        assert_eq!(image.info.format, ImageFormat::Qcow);
        assert!(image.guest_reader().unwrap().is_none());
    }
}
