//! Verifying an image file against what a cloud recorded (`vmimage verify`).
//!
//! One read of the file gives its digests, of exactly the algorithms the record names (MD5 for
//! `checksum`, the declared `os_hash_algo` for `os_hash_value`), and the inspector gives its
//! header facts ([`crate::facts::gather_facts`]). [`evaluate`] then compares them field by
//! field, each check ending `pass`, `fail`, `warn`, `skip` or `not_comparable` (SPEC
//! `vmimage verify`):
//!
//! - An absent value (missing, null, empty, a digest of empty input, a field IMS documents as
//!   unavailable) is `skip`, with the reason: never `pass`.
//! - When the record's `disk_format` differs from the file's and none of its digests matches,
//!   the cloud converted the image (Glance's `image_conversion` import plugin, IMS's zvhd2):
//!   its digests and size describe other bytes, so they are `not_comparable`, not `fail`
//!   (`reference/cloud-metadata.md` §1, "How Glance gets virtual_size"). When a digest *does*
//!   match, the bytes are the same and the recorded format is simply wrong: that fails. A
//!   `--disk-format` given on the command line is the user's claim about this very file, so a
//!   different content format fails it.
//! - The verdict is `verified` only when nothing failed and at least one digest check passed.
//!   A verify that compared no digest proved nothing: `unverified`, which is a failure.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::cloud::record::{Recorded, normalise_digest, normalise_name};
use crate::cloud::{ImageRecord, RecordSource};
use crate::digest::Algorithm;
use crate::digest::guest::GuestHash;
use crate::error::Error;
use crate::facts::{GIB, ImageFacts, gather_facts};
use crate::format::ImageFormat;
use crate::safety::Severity;
use crate::signing::{
    CaBundle, HASH_METHODS, KeyType, SignatureMatch, SigningCertificate, base64_decode,
    parse_hash_method,
};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The file matches the record.
    Pass,
    /// The file does not match the record, or the record describes an image that must not
    /// be used.
    Fail,
    /// Worth knowing, not a failure.
    Warn,
    /// Nothing to compare: the record states no usable value (the message says why).
    Skip,
    /// The record describes other bytes (the cloud converted the image).
    NotComparable,
}

impl Status {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Warn => "warn",
            Status::Skip => "skip",
            Status::NotComparable => "not_comparable",
        }
    }
}

/// The overall result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing failed and at least one digest matched.
    Verified,
    /// At least one check failed.
    Failed,
    /// Nothing failed, but no digest could be compared: nothing was proved.
    Unverified,
}

impl Verdict {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Failed => "failed",
            Verdict::Unverified => "unverified",
        }
    }
}

/// One check: what the record says (`expected`), what the file shows (`actual`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// Stable name: `checksum`, `os_hash_value`, `size`, `virtual_size`, `disk_format`,
    /// `container_format`, `min_disk`, `status`, `safety`.
    pub id: &'static str,
    /// The outcome.
    pub status: Status,
    /// What the record states (null when absent).
    pub expected: Value,
    /// What the file shows (null when unknown).
    pub actual: Value,
    /// One sentence explaining the status.
    pub message: String,
}

/// The file side of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageSummary {
    /// The path as given.
    pub path: String,
    /// The format detected from content.
    pub format: String,
    /// The file's length in bytes.
    pub size: u64,
    /// The guest-visible size in bytes, when the header says.
    pub virtual_size: Option<u64>,
    /// The digests computed, by algorithm name.
    pub digests: BTreeMap<String, String>,
}

/// The record side of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordSummary {
    /// Where the record came from.
    pub source: RecordSource,
    /// The image ID, when recorded.
    pub id: Option<String>,
    /// The image name, when recorded.
    pub name: Option<String>,
}

/// Everything `vmimage verify` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The file.
    pub image: ImageSummary,
    /// The record.
    pub record: RecordSummary,
    /// One result per check, in a fixed order.
    pub checks: Vec<CheckResult>,
    /// The overall result.
    pub verdict: Verdict,
    /// What a `verified` verdict proved, when the record states a guest hash: `bytes` (a
    /// digest of the file matched) or `content` (only the guest hash did: the disk is the
    /// recorded one, in another container, as after a cloud's conversion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proved: Option<&'static str>,
}

/// The IDs of the checks that compare the file's bytes: at least one must pass for
/// `verified`. A valid signature is one: it covers every byte through its hash.
pub const DIGEST_CHECKS: [&str; 4] = ["checksum", "os_hash_value", "signature", "guest_hash"];

/// Verifies the file at `path` against `record`: gathers its facts (one read, only the
/// digests the record needs) and evaluates every check.
pub fn verify_path(path: &std::path::Path, record: &ImageRecord) -> Result<VerifyReport, Error> {
    verify_path_with(path, record, None)
}

/// What the `signature` check needs besides the record.
#[derive(Debug)]
pub struct SignatureInputs {
    /// The certificate whose key signed the image (what Barbican holds under
    /// `img_signature_certificate_uuid`).
    pub certificate: SigningCertificate,
    /// Trusted certificates to check its chain against, when given.
    pub trusted: Option<CaBundle>,
}

/// [`verify_path`], also checking the record's `img_signature*` with `signing`. The
/// signature's hash method joins the digests of the same single read.
pub fn verify_path_with(
    path: &std::path::Path,
    record: &ImageRecord,
    signing: Option<&SignatureInputs>,
) -> Result<VerifyReport, Error> {
    let mut algorithms = record.algorithms_needed();
    if signing.is_some()
        && let Some(a) = record
            .signature
            .hash_method
            .as_deref()
            .and_then(parse_hash_method)
        && !algorithms.contains(&a)
    {
        algorithms.push(a);
    }
    let mut facts = gather_facts(path, &algorithms)?;
    if let Recorded::Value(recorded) = &record.guest_hash {
        // The image's own refusal (unsafe, no reader for its format) leaves the check
        // `skip`; the safety check reports an unsafe image.
        let options = crate::guest_hash::GuestHashOptions {
            algorithm: recorded.algorithm,
            threads: None,
        };
        facts.guest_hash = crate::guest_hash::hash_path(path, &options).ok();
    }
    Ok(evaluate_with(
        &path.display().to_string(),
        &facts,
        record,
        signing,
    ))
}

/// Expectations given on the command line, which replace the record's values (or make the
/// whole record when there is none). Validated by [`Expectations::apply`].
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// `--checksum`: the MD5, 32 hex digits.
    pub checksum: Option<String>,
    /// `--os-hash-algo`.
    pub os_hash_algo: Option<String>,
    /// `--os-hash-value`.
    pub os_hash_value: Option<String>,
    /// `--size` in bytes.
    pub size: Option<u64>,
    /// `--virtual-size` in bytes.
    pub virtual_size: Option<u64>,
    /// `--disk-format`.
    pub disk_format: Option<String>,
    /// `--guest-hash ALGO:HEX`: the guest-content hash.
    pub guest_hash: Option<GuestHash>,
}

/// A command-line expectation that is not a value of its field.
#[derive(Debug, thiserror::Error)]
pub enum ExpectationError {
    /// `--checksum` is not 32 hex digits.
    #[error("--checksum {0:?} is not an MD5 (32 hex digits)")]
    Checksum(String),
    /// `--os-hash-algo` names no algorithm vmimage computes.
    #[error("--os-hash-algo {0:?} is not one of md5, sha1, sha224, sha256, sha384, sha512")]
    Algorithm(String),
    /// `--os-hash-value` is not a hex digest of the algorithm's length.
    #[error("--os-hash-value {0:?} is not a hex digest{1}")]
    HashValue(String, String),
}

impl Expectations {
    /// True when no expectation was given.
    pub fn is_empty(&self) -> bool {
        self.checksum.is_none()
            && self.os_hash_algo.is_none()
            && self.os_hash_value.is_none()
            && self.size.is_none()
            && self.virtual_size.is_none()
            && self.disk_format.is_none()
            && self.guest_hash.is_none()
    }

    /// Replaces `record`'s values with these expectations, noting which were replaced. All
    /// are validated first: on error, `record` is unchanged.
    pub fn apply(&self, record: &mut ImageRecord) -> Result<(), ExpectationError> {
        let checksum = match &self.checksum {
            None => None,
            Some(c) => match normalise_digest(Recorded::Value(c.clone()), Some(32)) {
                Recorded::Invalid(_) => return Err(ExpectationError::Checksum(c.clone())),
                r => Some(r),
            },
        };
        let algorithm = match &self.os_hash_algo {
            None => None,
            Some(a) => Some(
                Algorithm::from_name(a).ok_or_else(|| ExpectationError::Algorithm(a.clone()))?,
            ),
        };
        let hash_value = match &self.os_hash_value {
            None => None,
            Some(h) => {
                let declared = algorithm.or_else(|| {
                    record
                        .os_hash_algo
                        .value()
                        .and_then(|n| Algorithm::from_name(n))
                });
                match normalise_digest(
                    Recorded::Value(h.clone()),
                    declared.map(|a| a.output_len() * 2),
                ) {
                    Recorded::Invalid(_) => {
                        let detail = declared
                            .map(|a| format!(" of {a} ({} digits)", a.output_len() * 2))
                            .unwrap_or_default();
                        return Err(ExpectationError::HashValue(h.clone(), detail));
                    }
                    r => Some(r),
                }
            }
        };
        if let Some(r) = checksum {
            record.checksum = r;
            record.overridden.push("checksum");
        }
        if let Some(a) = algorithm {
            record.os_hash_algo = Recorded::Value(a.name().to_string());
            record.overridden.push("os_hash_algo");
        }
        if let Some(r) = hash_value {
            record.os_hash_value = r;
            record.overridden.push("os_hash_value");
        }
        if let Some(s) = self.size {
            record.size = Recorded::Value(s);
            record.overridden.push("size");
        }
        if let Some(s) = self.virtual_size {
            record.virtual_size = Recorded::Value(s);
            record.overridden.push("virtual_size");
        }
        if let Some(f) = &self.disk_format {
            record.disk_format = normalise_name(Recorded::Value(f.clone()));
            record.overridden.push("disk_format");
        }
        if let Some(h) = &self.guest_hash {
            record.guest_hash = Recorded::Value(h.clone());
            record.overridden.push("guest_hash");
        }
        Ok(())
    }
}

/// `vpc` is QEMU's name for what clouds call `vhd`.
fn canonical_format(name: &str) -> &str {
    if name == "vpc" { "vhd" } else { name }
}

/// Compares `facts` (the file at `path`) with `record`. Pure: no I/O.
pub fn evaluate(path: &str, facts: &ImageFacts, record: &ImageRecord) -> VerifyReport {
    evaluate_with(path, facts, record, None)
}

/// [`evaluate`], with the signing certificate for the `signature` check.
pub fn evaluate_with(
    path: &str,
    facts: &ImageFacts,
    record: &ImageRecord,
    signing: Option<&SignatureInputs>,
) -> VerifyReport {
    let ctx = Context::new(facts, record);
    let checksum = ctx.digest_check("checksum", &record.checksum, Some(Algorithm::Md5));
    let os_hash = ctx.digest_check(
        "os_hash_value",
        &record.os_hash_value,
        record.os_hash_algorithm(),
    );
    let digest_matched = checksum.status == Status::Pass || os_hash.status == Status::Pass;
    let converted = ctx.formats_differ && !digest_matched;
    let mut checks = vec![
        finish_digest(checksum, converted, &ctx),
        finish_digest(os_hash, converted, &ctx),
        ctx.size_check(converted),
        ctx.virtual_size_check(converted),
        ctx.disk_format_check(digest_matched),
        ctx.container_format_check(),
        ctx.min_disk_check(),
        ctx.status_check(),
        safety_check(facts),
        signature_check(facts, record, signing),
    ];
    // Only a record that states a guest hash gets the check: reports of records without
    // one are unchanged.
    let guest = guest_hash_check(facts, record);
    let guest_passed = guest.as_ref().map(|c| c.status == Status::Pass);
    checks.extend(guest);
    for c in &mut checks {
        if record.overridden.contains(&c.id) {
            c.message.push_str(&format!(
                " (expected value from --{})",
                c.id.replace('_', "-")
            ));
        }
    }
    let verdict = if checks.iter().any(|c| c.status == Status::Fail) {
        Verdict::Failed
    } else if checks
        .iter()
        .any(|c| DIGEST_CHECKS.contains(&c.id) && c.status == Status::Pass)
    {
        Verdict::Verified
    } else {
        Verdict::Unverified
    };
    let bytes_proved = checks
        .iter()
        .any(|c| DIGEST_CHECKS.contains(&c.id) && c.id != "guest_hash" && c.status == Status::Pass);
    let proved = match (verdict, guest_passed) {
        (Verdict::Verified, Some(_)) if bytes_proved => Some("bytes"),
        (Verdict::Verified, Some(true)) => Some("content"),
        _ => None,
    };
    let digests = Algorithm::ALL
        .into_iter()
        .filter_map(|a| facts.digest_hex(a).map(|h| (a.name().to_string(), h)))
        .collect();
    VerifyReport {
        image: ImageSummary {
            path: path.to_string(),
            format: facts.format.name().to_string(),
            size: facts.size,
            virtual_size: facts.virtual_size,
            digests,
        },
        record: RecordSummary {
            source: record.source,
            id: record.id.clone(),
            name: record.name.clone(),
        },
        checks,
        verdict,
        proved,
    }
}

/// The `guest_hash` check, when the record states one: the file's guest-content hash
/// (blkhash) against it. Equal proves the guest disk whatever the container, so it passes even
/// when the cloud converted the image and its file digests are `not_comparable`.
fn guest_hash_check(facts: &ImageFacts, record: &ImageRecord) -> Option<CheckResult> {
    let expected = match &record.guest_hash {
        Recorded::Absent(_) => return None,
        Recorded::Invalid(s) => {
            return Some(check(
                "guest_hash",
                Status::Fail,
                Value::String(s.clone()),
                Value::Null,
                "the record's guest_hash is not a blkhash digest ({\"algorithm\": \"blkhash-sha256\", \"block_size\": 65536, \"value\": HEX})".into(),
            ));
        }
        Recorded::Value(h) => h,
    };
    let recorded = Value::String(expected.to_string());
    let Some(actual) = &facts.guest_hash else {
        return Some(check(
            "guest_hash",
            Status::Skip,
            recorded,
            Value::Null,
            format!(
                "the file's guest hash could not be computed (no guest reader for {} images, or the image is refused)",
                facts.format.name()
            ),
        ));
    };
    let (status, message) = if actual == expected {
        (
            Status::Pass,
            "the guest disk matches: the same content, whatever the container".to_string(),
        )
    } else {
        (
            Status::Fail,
            "the file's guest disk differs from the recorded one".to_string(),
        )
    };
    Some(check(
        "guest_hash",
        status,
        recorded,
        Value::String(actual.to_string()),
        message,
    ))
}

/// What every check needs to know.
struct Context<'a> {
    facts: &'a ImageFacts,
    record: &'a ImageRecord,
    /// The file's `disk_format` (`vhd` for QEMU's `vpc`).
    file_format: &'static str,
    /// The record's `disk_format`, canonical, when stated.
    record_format: Option<&'a str>,
    /// Both formats are known and differ.
    formats_differ: bool,
}

/// A check built before the conversion verdict is known: a digest that did not match is
/// `fail` unless the image was converted.
struct PendingDigest {
    result: CheckResult,
    /// True when the recorded digest is a valid value that differs from the file's.
    mismatch: bool,
}

impl std::ops::Deref for PendingDigest {
    type Target = CheckResult;
    fn deref(&self) -> &CheckResult {
        &self.result
    }
}

fn finish_digest(p: PendingDigest, converted: bool, ctx: &Context<'_>) -> CheckResult {
    let mut r = p.result;
    if p.mismatch {
        if converted {
            r.status = Status::NotComparable;
            r.message = ctx.converted_message(&format!("its {}", r.id));
        } else {
            r.status = Status::Fail;
        }
    }
    r
}

fn check(
    id: &'static str,
    status: Status,
    expected: Value,
    actual: Value,
    message: String,
) -> CheckResult {
    CheckResult {
        id,
        status,
        expected,
        actual,
        message,
    }
}

impl<'a> Context<'a> {
    fn new(facts: &'a ImageFacts, record: &'a ImageRecord) -> Self {
        // `ImageFormat::disk_format` already names QEMU's `vpc` as `vhd`.
        let file_format = facts.disk_format();
        let record_format = record.disk_format.value().map(|f| canonical_format(f));
        let formats_differ = record_format.is_some_and(|f| f != file_format);
        Self {
            facts,
            record,
            file_format,
            record_format,
            formats_differ,
        }
    }

    fn skip_absent<T>(
        &self,
        id: &'static str,
        field: &str,
        r: &Recorded<T>,
    ) -> Option<CheckResult> {
        match r {
            Recorded::Absent(a) => Some(check(
                id,
                Status::Skip,
                Value::Null,
                Value::Null,
                a.describe(field, self.record.source),
            )),
            _ => None,
        }
    }

    fn converted_message(&self, what: &str) -> String {
        format!(
            "the record says {} but the file is {}: the cloud converted the image, so {what} describes other bytes",
            self.record_format.unwrap_or("?"),
            self.file_format
        )
    }

    fn digest_check(
        &self,
        id: &'static str,
        recorded: &Recorded<String>,
        algorithm: Option<Algorithm>,
    ) -> PendingDigest {
        let done = |result| PendingDigest {
            result,
            mismatch: false,
        };
        if let Some(skip) = self.skip_absent(id, id, recorded) {
            return done(skip);
        }
        let hex = match recorded {
            Recorded::Value(h) => h,
            _ => {
                let raw = match recorded {
                    Recorded::Invalid(s) => s.clone(),
                    _ => String::new(),
                };
                return done(check(
                    id,
                    Status::Fail,
                    Value::String(raw),
                    Value::Null,
                    format!("the record's {id} is not a hex digest"),
                ));
            }
        };
        let Some(algorithm) = algorithm else {
            let declared = match &self.record.os_hash_algo {
                Recorded::Value(n) => n.clone(),
                Recorded::Invalid(s) => s.clone(),
                Recorded::Absent(_) => "an undeclared algorithm".into(),
            };
            return done(check(
                id,
                Status::Skip,
                Value::String(hex.clone()),
                Value::Null,
                format!(
                    "the record's os_hash_algo is {declared:?}, which vmimage cannot compute (it computes md5, sha1, sha224, sha256, sha384, sha512)"
                ),
            ));
        };
        if hex.len() != algorithm.output_len() * 2 {
            return done(check(
                id,
                Status::Fail,
                Value::String(hex.clone()),
                Value::Null,
                format!(
                    "the record's {id} has {} hex digits, but a {algorithm} digest has {}",
                    hex.len(),
                    algorithm.output_len() * 2
                ),
            ));
        }
        let Some(actual) = self.facts.digest_hex(algorithm) else {
            return done(check(
                id,
                Status::Skip,
                Value::String(hex.clone()),
                Value::Null,
                format!("the file's {algorithm} digest was not computed"),
            ));
        };
        let expected = Value::String(hex.clone());
        if *hex == actual {
            return done(check(
                id,
                Status::Pass,
                expected,
                Value::String(actual),
                format!("the file's {algorithm} matches"),
            ));
        }
        PendingDigest {
            result: check(
                id,
                Status::Fail,
                expected,
                Value::String(actual),
                format!("the file's {algorithm} differs from the recorded {id}"),
            ),
            mismatch: true,
        }
    }

    fn invalid<T>(&self, id: &'static str, r: &Recorded<T>, what: &str) -> Option<CheckResult> {
        match r {
            Recorded::Invalid(s) => Some(check(
                id,
                Status::Fail,
                Value::String(s.clone()),
                Value::Null,
                format!("the record's {id} is not {what}"),
            )),
            _ => None,
        }
    }

    fn size_check(&self, converted: bool) -> CheckResult {
        let r = &self.record.size;
        if let Some(c) = self
            .skip_absent("size", "size", r)
            .or_else(|| self.invalid("size", r, "a byte count"))
        {
            return c;
        }
        let expected = r.value().copied().unwrap_or_default();
        let actual = self.facts.size;
        let (status, message) = if expected == actual {
            (Status::Pass, "the file's length matches".to_string())
        } else if converted {
            (Status::NotComparable, self.converted_message("its size"))
        } else {
            (
                Status::Fail,
                format!("the file is {actual} bytes, the record says {expected}"),
            )
        };
        check("size", status, expected.into(), actual.into(), message)
    }

    fn virtual_size_check(&self, converted: bool) -> CheckResult {
        let r = &self.record.virtual_size;
        if let Some(c) = self
            .skip_absent("virtual_size", "virtual_size", r)
            .or_else(|| self.invalid("virtual_size", r, "a byte count"))
        {
            return c;
        }
        let expected = r.value().copied().unwrap_or_default();
        let Some(actual) = self.facts.virtual_size else {
            return check(
                "virtual_size",
                Status::Skip,
                expected.into(),
                Value::Null,
                "the file's virtual size is unknown (its header is invalid)".into(),
            );
        };
        let (status, message) = if expected == actual {
            (Status::Pass, "the guest-visible size matches".to_string())
        } else if self.facts.format == ImageFormat::Raw && expected == self.facts.size {
            // Glance records what OpenStack's format inspector says, and its raw inspector
            // counts the bytes it read (`RawFileInspector`: `virtual_size` is the stream's
            // length); QEMU, and so `actual`, rounds a raw file up to whole 512-byte sectors.
            (
                Status::Pass,
                format!(
                    "the record's virtual size is the file's exact length, as Glance's format inspector counts a raw image (QEMU rounds it up to whole sectors: {actual} bytes)"
                ),
            )
        } else if converted {
            (
                Status::NotComparable,
                self.converted_message("its virtual size (which conversion may round)"),
            )
        } else {
            (
                Status::Fail,
                format!("the file's virtual size is {actual} bytes, the record says {expected}"),
            )
        };
        check(
            "virtual_size",
            status,
            expected.into(),
            actual.into(),
            message,
        )
    }

    fn disk_format_check(&self, digest_matched: bool) -> CheckResult {
        let r = &self.record.disk_format;
        if let Some(c) = self
            .skip_absent("disk_format", "disk_format", r)
            .or_else(|| self.invalid("disk_format", r, "a format name"))
        {
            return c;
        }
        let recorded = r.value().cloned().unwrap_or_default();
        let actual = Value::String(self.file_format.to_string());
        if !self.formats_differ {
            let note = if recorded == "vpc" || self.facts.format.name() == "vpc" {
                " (vpc is QEMU's name for vhd)"
            } else {
                ""
            };
            return check(
                "disk_format",
                Status::Pass,
                recorded.into(),
                actual,
                format!("the content is {}{note}", self.file_format),
            );
        }
        let asserted_by_flag = self.record.overridden.contains(&"disk_format");
        let (status, message) = if digest_matched {
            (
                Status::Fail,
                format!(
                    "the recorded bytes are these bytes, but the cloud recorded them as {recorded} while the content is {}: it would hand them to the hypervisor as the wrong format",
                    self.file_format
                ),
            )
        } else if asserted_by_flag {
            (
                Status::Fail,
                format!("the content is {}, not {recorded}", self.file_format),
            )
        } else {
            (
                Status::NotComparable,
                format!(
                    "the record says {recorded} but the content is {}: the cloud converted the image (or this is another file)",
                    self.file_format
                ),
            )
        };
        check("disk_format", status, recorded.into(), actual, message)
    }

    fn container_format_check(&self) -> CheckResult {
        let r = &self.record.container_format;
        if let Some(c) = self
            .skip_absent("container_format", "container_format", r)
            .or_else(|| self.invalid("container_format", r, "a format name"))
        {
            return c;
        }
        let recorded = r.value().cloned().unwrap_or_default();
        let (status, message) = if recorded == "bare" {
            (
                Status::Pass,
                "the file is the disk image itself".to_string(),
            )
        } else {
            (
                Status::Fail,
                format!(
                    "container_format is {recorded}, not bare: the recorded bytes are a container, not a disk image"
                ),
            )
        };
        check(
            "container_format",
            status,
            recorded.into(),
            "bare".into(),
            message,
        )
    }

    fn min_disk_check(&self) -> CheckResult {
        let r = &self.record.min_disk;
        if let Some(c) = self
            .skip_absent("min_disk", "min_disk", r)
            .or_else(|| self.invalid("min_disk", r, "a whole number of GiB"))
        {
            return c;
        }
        let recorded = r.value().copied().unwrap_or_default();
        let Some(needed) = self.facts.min_disk_needed() else {
            return check(
                "min_disk",
                Status::Skip,
                recorded.into(),
                Value::Null,
                "the file's virtual size is unknown, so the disk it needs is too".into(),
            );
        };
        let vs = self.facts.virtual_size.unwrap_or_default();
        let (status, message) = if recorded >= needed {
            (
                Status::Pass,
                format!("min_disk {recorded} GiB holds the virtual size (needs {needed} GiB)"),
            )
        } else if recorded == 0 {
            (
                Status::Warn,
                format!(
                    "min_disk is 0 (unset): a flavor with a disk under {needed} GiB would accept the image and fail at spawn"
                ),
            )
        } else {
            (
                Status::Fail,
                format!(
                    "min_disk {recorded} GiB is less than ceil({vs} / {GIB}) = {needed} GiB: the image would not boot on such a disk"
                ),
            )
        };
        check("min_disk", status, recorded.into(), needed.into(), message)
    }

    fn status_check(&self) -> CheckResult {
        let r = &self.record.status;
        if let Some(c) = self
            .skip_absent("status", "status", r)
            .or_else(|| self.invalid("status", r, "a status name"))
        {
            return c;
        }
        let recorded = r.value().cloned().unwrap_or_default();
        let (status, message) = if recorded == "active" {
            (Status::Pass, "the image is active".to_string())
        } else {
            (
                Status::Fail,
                format!(
                    "the image is {recorded}, not active: the cloud does not serve it as recorded"
                ),
            )
        };
        check("status", status, recorded.into(), "active".into(), message)
    }
}

fn safety_check(facts: &ImageFacts) -> CheckResult {
    let describe = |severity: Severity| -> Vec<String> {
        facts
            .safety
            .findings
            .iter()
            .filter(|f| f.severity == severity)
            .map(|f| format!("{}: {}", f.check, f.detail))
            .collect()
    };
    let (status, actual, message) = if !facts.safety.safe {
        (
            Status::Fail,
            "unsafe",
            format!(
                "the image is unsafe: {}",
                describe(Severity::Error).join("; ")
            ),
        )
    } else if facts.safety.findings.is_empty() {
        (Status::Pass, "safe", "no safety rule fired".to_string())
    } else {
        (
            Status::Warn,
            "safe",
            format!(
                "safe, with warnings: {}",
                describe(Severity::Warning).join("; ")
            ),
        )
    };
    check("safety", status, "safe".into(), actual.into(), message)
}

/// The `signature` check: the record's `img_signature*` against the file, as cursive verifies
/// them on upload (Glance) and boot (Nova), plus Nova's certificate checks
/// (`certificate_utils.verify_certificate`: validity dates, chain to a trusted certificate).
fn signature_check(
    facts: &ImageFacts,
    record: &ImageRecord,
    signing: Option<&SignatureInputs>,
) -> CheckResult {
    let fields = &record.signature;
    let expected = fields.signature.clone().map_or(Value::Null, Value::String);
    let subject = signing.map(|s| s.certificate.subject());
    let actual = subject.clone().map_or(Value::Null, Value::String);
    let result = |status, message: String| {
        check(
            "signature",
            status,
            expected.clone(),
            actual.clone(),
            message,
        )
    };
    let fail = |message: String| result(Status::Fail, message);
    if fields.is_empty() {
        return result(
            Status::Skip,
            "the record has no img_signature properties".into(),
        );
    }
    let missing = fields.missing();
    if !missing.is_empty() {
        return fail(format!(
            "the record lacks {}: Glance and Nova verify a signature only when all four img_signature properties are present, so this image is not checked there",
            missing.join(", ")
        ));
    }
    let Some(signing) = signing else {
        return result(
            Status::Skip,
            "no --signing-cert given: the signature was not checked".into(),
        );
    };
    let method = fields.hash_method.as_deref().unwrap_or_default();
    let Some(algorithm) = parse_hash_method(method) else {
        return fail(format!(
            "img_signature_hash_method {:?} is not one of {} (cursive refuses it)",
            crate::cloud::lenient::cut(method),
            HASH_METHODS.map(|(n, _)| n).join(", ")
        ));
    };
    let type_name = fields.key_type.as_deref().unwrap_or_default();
    let Some(key_type) = KeyType::from_name(type_name) else {
        return fail(format!(
            "img_signature_key_type {:?} is not one cursive registers ({})",
            crate::cloud::lenient::cut(type_name),
            KeyType::ALL.map(KeyType::name).join(", ")
        ));
    };
    let encoded = fields.signature.as_deref().unwrap_or_default();
    let Some(signature) = base64_decode(encoded) else {
        return fail(
            "img_signature is not standard, padded base64 (A-Z a-z 0-9 + / and = padding, no line breaks)"
                .into(),
        );
    };
    match signing.certificate.key_type() {
        Ok(cert_type) if cert_type == key_type => {}
        Ok(cert_type) => {
            return fail(format!(
                "img_signature_key_type is {key_type}, but the certificate's key is {cert_type}"
            ));
        }
        Err(e) => {
            return fail(format!(
                "the certificate cannot verify a Glance signature: {e}"
            ));
        }
    }
    if let Err(sentence) = signing.certificate.check_dates() {
        return fail(sentence);
    }
    if let Some(trusted) = &signing.trusted
        && let Err(sentence) = signing.certificate.check_chain(trusted)
    {
        return fail(sentence);
    }
    let Some(digest) = facts.digests.as_ref().and_then(|d| d.get(algorithm)) else {
        return result(
            Status::Skip,
            format!("the file's {algorithm} digest was not computed"),
        );
    };
    let chain = if signing.trusted.is_some() {
        "its chain to --trusted-ca checked"
    } else {
        "its chain not checked (no --trusted-ca)"
    };
    match signing
        .certificate
        .verify_digest(key_type, algorithm, &digest.bytes, &signature)
    {
        Ok(SignatureMatch::Valid) => result(
            Status::Pass,
            format!(
                "a valid {key_type} signature of the file's {method} by the certificate, {chain}"
            ),
        ),
        Ok(SignatureMatch::ShortSalt { salt, max }) => fail(format!(
            "the RSA-PSS signature is valid with a {} salt, not the maximum of {max} bytes: accepted only by newer verifiers (cursive on cryptography 42 and later), rejected by cursive on cryptography 41 and earlier",
            salt.map_or_else(|| "shorter".to_string(), |s| format!("{s}-byte")),
        )),
        Ok(SignatureMatch::Invalid) => fail(format!(
            "the signature does not match the file's {method} with the certificate's key: the file is not the one signed, or another key signed it"
        )),
        Err(e) => fail(format!("the signature could not be checked: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::record::{Absence, RecordSource};
    use crate::digest::DigestSet;
    use crate::format::ImageFormat;
    use crate::safety::Safety;

    const DATA: &[u8] = b"pretend this is a disk image";

    fn facts(format: ImageFormat) -> ImageFacts {
        let mut set = DigestSet::new(&[Algorithm::Md5, Algorithm::Sha512]);
        set.update(DATA);
        ImageFacts::new(format, DATA.len() as u64, Some(3 << 30), Some(set.finish()))
    }

    fn matching(f: &ImageFacts) -> ImageRecord {
        let mut r = ImageRecord::empty(RecordSource::Glance);
        r.checksum = Recorded::Value(f.digest_hex(Algorithm::Md5).unwrap());
        r.os_hash_algo = Recorded::Value("sha512".into());
        r.os_hash_value = Recorded::Value(f.digest_hex(Algorithm::Sha512).unwrap());
        r.size = Recorded::Value(f.size);
        r.virtual_size = Recorded::Value(3 << 30);
        r.disk_format = Recorded::Value(f.disk_format().into());
        r.container_format = Recorded::Value("bare".into());
        r.min_disk = Recorded::Value(3);
        r.status = Recorded::Value("active".into());
        r
    }

    fn status_of(report: &VerifyReport, id: &str) -> Status {
        report.checks.iter().find(|c| c.id == id).unwrap().status
    }

    #[test]
    fn a_matching_record_is_verified_with_every_check_passing() {
        let f = facts(ImageFormat::Qcow2);
        let report = evaluate("x", &f, &matching(&f));
        assert_eq!(report.verdict, Verdict::Verified);
        // The record has no img_signature properties: the signature check is skipped.
        assert_eq!(status_of(&report, "signature"), Status::Skip);
        assert!(
            report
                .checks
                .iter()
                .all(|c| c.status == Status::Pass || c.id == "signature"),
            "{report:#?}"
        );
    }

    #[test]
    fn placeholders_only_is_unverified_not_verified() {
        let f = facts(ImageFormat::Qcow2);
        let mut r = matching(&f);
        r.checksum = Recorded::Absent(Absence::Placeholder { what: "x" });
        r.os_hash_value = Recorded::Absent(Absence::Missing);
        let report = evaluate("x", &f, &r);
        assert_eq!(status_of(&report, "checksum"), Status::Skip);
        assert_eq!(report.verdict, Verdict::Unverified);
    }

    #[test]
    fn a_converted_image_makes_digests_and_size_not_comparable() {
        let f = facts(ImageFormat::Qcow2);
        let mut r = matching(&f);
        r.checksum = Recorded::Value("0".repeat(32));
        r.os_hash_value = Recorded::Value("0".repeat(128));
        r.size = Recorded::Value(1);
        r.disk_format = Recorded::Value("raw".into());
        let report = evaluate("x", &f, &r);
        for id in ["checksum", "os_hash_value", "size", "disk_format"] {
            assert_eq!(status_of(&report, id), Status::NotComparable, "{id}");
        }
        assert_eq!(status_of(&report, "virtual_size"), Status::Pass);
        assert_eq!(report.verdict, Verdict::Unverified);
    }

    #[test]
    fn a_cloud_record_in_another_format_without_digests_is_not_comparable() {
        // IMS stores zvhd2 and records no digest (seed 003).
        let f = facts(ImageFormat::Qcow2);
        let mut r = matching(&f);
        r.checksum = Recorded::Absent(Absence::Placeholder { what: "x" });
        r.os_hash_value = Recorded::Absent(Absence::Missing);
        r.disk_format = Recorded::Value("zvhd2".into());
        let report = evaluate("x", &f, &r);
        assert_eq!(status_of(&report, "disk_format"), Status::NotComparable);
        assert_eq!(report.verdict, Verdict::Unverified);
    }

    #[test]
    fn a_disk_format_flag_that_differs_from_the_content_fails() {
        let f = facts(ImageFormat::Qcow2);
        let mut r = ImageRecord::empty(RecordSource::Flags);
        Expectations {
            disk_format: Some("raw".into()),
            ..Default::default()
        }
        .apply(&mut r)
        .unwrap();
        assert_eq!(
            status_of(&evaluate("x", &f, &r), "disk_format"),
            Status::Fail
        );
    }

    #[test]
    fn a_matching_digest_with_a_wrong_format_label_fails_the_format() {
        let f = facts(ImageFormat::Qcow2);
        let mut r = matching(&f);
        r.disk_format = Recorded::Value("raw".into());
        let report = evaluate("x", &f, &r);
        assert_eq!(status_of(&report, "checksum"), Status::Pass);
        assert_eq!(status_of(&report, "disk_format"), Status::Fail);
        assert_eq!(report.verdict, Verdict::Failed);
    }

    #[test]
    fn vpc_and_vhd_are_the_same_format() {
        let f = facts(ImageFormat::Vpc);
        let mut r = matching(&f);
        r.disk_format = Recorded::Value("vpc".into());
        assert_eq!(
            status_of(&evaluate("x", &f, &r), "disk_format"),
            Status::Pass
        );
    }

    #[test]
    fn a_zero_min_disk_warns_and_a_small_one_fails() {
        let f = facts(ImageFormat::Qcow2);
        let mut r = matching(&f);
        r.min_disk = Recorded::Value(0);
        let report = evaluate("x", &f, &r);
        assert_eq!(status_of(&report, "min_disk"), Status::Warn);
        assert_eq!(report.verdict, Verdict::Verified);
        r.min_disk = Recorded::Value(2);
        assert_eq!(status_of(&evaluate("x", &f, &r), "min_disk"), Status::Fail);
    }

    #[test]
    fn an_unsafe_image_fails_even_when_the_digests_match() {
        let mut f = facts(ImageFormat::Qcow2);
        f.safety = Safety::from_findings(vec![
            crate::format::qcow2::rules::BACKING_FILE.finding("names base.img"),
        ]);
        let report = evaluate("x", &f, &matching(&f));
        let safety = report.checks.iter().find(|c| c.id == "safety").unwrap();
        assert_eq!(safety.status, Status::Fail);
        assert!(safety.message.contains("backing-file"));
        assert_eq!(report.verdict, Verdict::Failed);
    }

    #[test]
    fn an_algorithm_vmimage_cannot_compute_is_skipped() {
        let f = facts(ImageFormat::Qcow2);
        let mut r = matching(&f);
        r.os_hash_algo = Recorded::Value("sha3_512".into());
        let report = evaluate("x", &f, &r);
        assert_eq!(status_of(&report, "os_hash_value"), Status::Skip);
        assert_eq!(report.verdict, Verdict::Verified);
    }

    #[test]
    fn flags_replace_record_values_and_are_validated() {
        let mut r = ImageRecord::empty(RecordSource::Flags);
        let e = Expectations {
            checksum: Some("ABC".into()),
            ..Default::default()
        };
        assert!(e.apply(&mut r).is_err());
        let e = Expectations {
            os_hash_algo: Some("sha256".into()),
            os_hash_value: Some("a".repeat(128)),
            ..Default::default()
        };
        assert!(e.apply(&mut r).is_err(), "a sha512-length value for sha256");
        let e = Expectations {
            checksum: Some("D41D8CD98F00B204E9800998ECF8427E".into()),
            size: Some(5),
            ..Default::default()
        };
        e.apply(&mut r).unwrap();
        assert!(matches!(
            r.checksum,
            Recorded::Absent(Absence::Placeholder { .. })
        ));
        assert_eq!(r.overridden, ["checksum", "size"]);
    }
}
