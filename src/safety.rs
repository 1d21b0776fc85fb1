//! Safety findings: what a cloud must refuse, or should know, about an image.
//!
//! Each finding carries a stable [`Check`] name that scripts may match on, a [`Severity`] and a
//! one-sentence detail. An image is safe when no finding has [`Severity::Error`]. The list of
//! checks and their severities is documented in docs/safety-and-formats.md ("Safety checks").

use serde::Serialize;

/// The stable name of a safety rule. Serialized in kebab-case (`backing-file`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Check {
    /// The image names a backing file (qcow2, QED, VMDK parent): reading it would open a host path.
    BackingFile,
    /// The image keeps its guest data in an external file named inside the image (qcow2).
    DataFile,
    /// An incompatible feature bit this tool does not know is set (qcow2).
    UnknownIncompatibleFeature,
    /// The image says its metadata is corrupt (qcow2 incompatible bit 1).
    CorruptBit,
    /// The image was not closed cleanly; refcounts may be stale (qcow2 bit 0, VHDX log, QED).
    DirtyBit,
    /// The guest data is encrypted (qcow2 AES or LUKS, LUKS container).
    Encrypted,
    /// A VMDK extent names a file: the descriptor points at data outside this image.
    VmdkExtentPath,
    /// A VMDK createType other than monolithicSparse or streamOptimized.
    VmdkCreateType,
    /// A streamOptimized VMDK's footer disagrees with its header.
    VmdkFooter,
    /// QED images are refused outright (OpenStack bans the format).
    Qed,
    /// QEMU's legacy qcow (version 1) images are refused: no cloud takes the format.
    Qcow,
    /// The bytes parse as more than one format (a polyglot).
    MultipleFormats,
    /// A header field is out of range or inconsistent.
    InvalidHeader,
    /// The file ends before a structure its header declares.
    Truncated,
    /// The MBR or GPT partition table breaks the rules a cloud checks.
    PartitionTable,
    /// A format version this tool (and QEMU) does not support, such as LUKS2.
    UnsupportedVersion,
    /// The header's disk size is not a whole number of 512-byte sectors: QEMU exposes it
    /// rounded down, so the bytes of the last partial sector are not part of the guest disk.
    UnalignedSize,
    /// A format QEMU reads but this tool does not (Bochs, Parallels, cloop, DMG): the content
    /// is not a raw disk.
    UnsupportedFormat,
}

impl Check {
    /// The kebab-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Check::BackingFile => "backing-file",
            Check::DataFile => "data-file",
            Check::UnknownIncompatibleFeature => "unknown-incompatible-feature",
            Check::CorruptBit => "corrupt-bit",
            Check::DirtyBit => "dirty-bit",
            Check::Encrypted => "encrypted",
            Check::VmdkExtentPath => "vmdk-extent-path",
            Check::VmdkCreateType => "vmdk-create-type",
            Check::VmdkFooter => "vmdk-footer",
            Check::Qed => "qed",
            Check::Qcow => "qcow",
            Check::MultipleFormats => "multiple-formats",
            Check::InvalidHeader => "invalid-header",
            Check::Truncated => "truncated",
            Check::PartitionTable => "partition-table",
            Check::UnsupportedVersion => "unsupported-version",
            Check::UnalignedSize => "unaligned-size",
            Check::UnsupportedFormat => "unsupported-format",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; the image is still safe to hand to a cloud.
    Warning,
    /// The image must be refused.
    Error,
}

/// One safety rule: a stable id that names exactly one condition an image can break, the
/// coarse [`Check`] it belongs to, and how much it matters.
///
/// Ids are `<format>.<kebab-case-name>` (`qcow2.cluster-bits`, `vhdx.bat-entry-past-eof`) and
/// never change meaning once released: scripts match on them. Each format module lists its rules
/// in a `RULES` table; [`all_rules`] is their union, and docs/rules.md is generated from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The stable id, `<format>.<name>`.
    pub id: &'static str,
    /// The coarse family the rule belongs to.
    pub check: Check,
    /// Whether the rule makes the image unsafe.
    pub severity: Severity,
    /// What the rule checks, in one sentence (the docs table's text).
    pub summary: &'static str,
}

impl Rule {
    /// A rule whose finding makes the image unsafe.
    pub const fn error(id: &'static str, check: Check, summary: &'static str) -> Self {
        Self {
            id,
            check,
            severity: Severity::Error,
            summary,
        }
    }

    /// A rule whose finding is reported but leaves the image safe.
    pub const fn warning(id: &'static str, check: Check, summary: &'static str) -> Self {
        Self {
            id,
            check,
            severity: Severity::Warning,
            summary,
        }
    }

    /// This rule fired on an image; `detail` says what was found, with the offending value.
    pub fn finding(self, detail: impl Into<String>) -> Finding {
        Finding {
            check: self.check,
            rule: self.id,
            severity: self.severity,
            detail: detail.into(),
        }
    }
}

/// One rule that fired, with what made it fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The coarse family of the rule (stable).
    pub check: Check,
    /// The stable id of the exact rule that fired ([`Rule::id`]).
    pub rule: &'static str,
    /// Whether the rule makes the image unsafe.
    pub severity: Severity,
    /// One sentence saying what was found, with the offending value.
    pub detail: String,
}

/// Every rule vmimage applies, from every format module's `RULES` table.
pub fn all_rules() -> impl Iterator<Item = &'static Rule> {
    [
        crate::inspect::RULES,
        crate::format::RULES,
        crate::format::qcow2::RULES,
        crate::format::qcow::RULES,
        crate::format::vpc::RULES,
        crate::format::vhdx::RULES,
        crate::format::vmdk::RULES,
        crate::format::vdi::RULES,
        crate::format::qed::RULES,
        crate::format::luks::RULES,
        crate::format::iso::RULES,
        crate::format::partition::RULES,
        crate::format::foreign::RULES,
    ]
    .into_iter()
    .flatten()
}

/// Test support: asserts that `findings` hold a finding of the rule `id`.
///
/// Every rule id must appear in some call of this function (or of the integration tests'
/// `assert_rule`) with a test that makes the rule fire: the test `every_rule_is_tested`
/// checks that.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_fires(findings: &[Finding], id: &str) {
    assert!(
        all_rules().any(|r| r.id == id),
        "{id} is not a registered rule"
    );
    assert!(
        findings.iter().any(|f| f.rule == id),
        "expected rule {id} to fire, got {:?}",
        findings.iter().map(|f| f.rule).collect::<Vec<_>>()
    );
}

/// The verdict of every safety rule on one image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Safety {
    /// True when no finding has [`Severity::Error`].
    pub safe: bool,
    /// Every rule that fired, errors first.
    pub findings: Vec<Finding>,
}

impl Safety {
    /// Builds the verdict from a list of findings.
    pub fn from_findings(mut findings: Vec<Finding>) -> Self {
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let safe = findings.iter().all(|f| f.severity != Severity::Error);
        Self { safe, findings }
    }

    /// The findings that make the image unsafe.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }
}
