//! Upload metadata: the request body that registers an image with a cloud, built from the
//! image's own facts and the user's choices, and validated against the target's documented
//! rules before anything is written.
//!
//! [`build`] is what `vmimage metadata` and `vmimage convert --metadata` both call. Every
//! broken rule is collected (SPEC: "Every broken rule is listed, not only the first"); a
//! document is returned only when none is broken. The per-target rules live with each service:
//! [`super::glance`], [`super::scp`], [`super::ims`].
//!
//! What a body never carries: `checksum`, `size` and `os_hash_*` are read-only in Glance
//! (`_readonly_properties`; sending them is HTTP 403, `reference/cloud-metadata.md` §1), and
//! neither SCP's `ImageCreateRequest` nor IMS's create request has them. They go to the
//! [`Sidecar`], which `vmimage verify --against` reads back as a record.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::digest::{Algorithm, Digests};
use crate::format::ImageFormat;
use crate::safety::Safety;
use crate::signing::SignatureProperties;

use super::{glance, ims, scp};

/// One GiB: `min_disk` is in GiB (Nova: `min_disk * units.Gi`; Cinder rounds with
/// `ceil(virtual_size / units.Gi)`, `reference/cloud-metadata.md` §3).
pub const GIB: u64 = 1 << 30;

/// The service a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// OpenStack Glance v2 `POST /v2/images`.
    Glance,
    /// Samsung Cloud Platform `POST /v1/images` (`ImageCreateRequest`, seeds 000-002).
    Scp,
    /// Huawei Cloud / Open Telekom Cloud IMS, native `POST /v2/images` (seeds 003-004).
    Ims,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 3] = [Target::Glance, Target::Scp, Target::Ims];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Glance => "glance",
            Target::Scp => "scp",
            Target::Ims => "ims",
        }
    }

    /// Parses a target name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Target::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the image itself says, measured locally: the facts a body and a sidecar are filled
/// from. `vmimage metadata` gathers them with [`crate::cloud::gather_facts`]; `vmimage convert`
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
    /// Digests of the whole file, when computed. Needed only for the [`Sidecar`].
    pub digests: Option<Digests>,
    /// The inspector's verdict. An unsafe image breaks a rule of every target.
    pub safety: Safety,
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

/// The user's choices, as given on the command line (`vmimage metadata` and `vmimage convert
/// --metadata` take the same flags). Values are kept as given and validated by [`build`], so
/// that a bad value is listed with every other broken rule.
#[derive(Debug, Clone, Default)]
pub struct MetadataOptions {
    /// `--name`.
    pub name: Option<String>,
    /// `--os-distro`: Glance `os_distro`, SCP `os_distro`, IMS `__platform`.
    pub os_distro: Option<String>,
    /// `--os-version`: Glance `os_version`, IMS `__os_version`.
    pub os_version: Option<String>,
    /// `--min-disk` in GiB; defaults to `ceil(virtual_size / GiB)` (IMS: at least 1).
    pub min_disk: Option<i64>,
    /// `--min-ram` in MiB, for every target (the SCP API and IMS store MB; SCP's console
    /// shows GB).
    pub min_ram: Option<i64>,
    /// `--visibility`.
    pub visibility: Option<String>,
    /// `--protected`.
    pub protected: bool,
    /// `--tag KEY=VALUE` (or `KEY`), in order.
    pub tags: Vec<String>,
    /// `--url`: the SCP Object Storage URL, or the IMS OBS location `bucket:object`.
    pub url: Option<String>,
    /// `--architecture`: Glance `architecture` (`uname -m` names), IMS `architecture`.
    pub architecture: Option<String>,
    /// `--firmware`: `bios` or `uefi` (`hw_firmware_type`).
    pub firmware: Option<String>,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleViolation {
    /// The target whose rule it is.
    pub target: Target,
    /// A stable kebab-case rule name (`name-charset`, `min-disk-range`, ...).
    pub rule: &'static str,
    /// The body field (or flag) concerned.
    pub field: &'static str,
    /// One sentence: what is wrong, with the value and the allowed range.
    pub message: String,
}

impl fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.target, self.field, self.message)
    }
}

/// Every rule a request broke. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RuleViolations(pub Vec<RuleViolation>);

impl fmt::Display for RuleViolations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} rule{} broken", if n == 1 { "" } else { "s" })?;
        for v in &self.0 {
            write!(f, "; {v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleViolations {}

/// Collects violations for one target while a body is built.
#[derive(Debug)]
pub struct Violations {
    target: Target,
    list: Vec<RuleViolation>,
}

impl Violations {
    /// An empty list for `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            list: Vec::new(),
        }
    }

    /// Records a broken rule.
    pub fn push(&mut self, rule: &'static str, field: &'static str, message: impl Into<String>) {
        self.list.push(RuleViolation {
            target: self.target,
            rule,
            field,
            message: message.into(),
        });
    }

    /// The target.
    pub fn target(&self) -> Target {
        self.target
    }

    /// Ok when nothing was broken.
    pub fn finish(self) -> Result<(), RuleViolations> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(RuleViolations(self.list))
        }
    }
}

/// The digests and sizes of the file, which no create body may carry. Its field names are
/// Glance's, so `vmimage verify --against SIDECAR` reads it as a record (source `sidecar`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sidecar {
    /// Marks the document as a vmimage sidecar, format version 1.
    pub vmimage_sidecar: u32,
    /// The image name, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The file's `disk_format`.
    pub disk_format: String,
    /// Always `bare`: the file is the disk image itself.
    pub container_format: String,
    /// The file's length in bytes.
    pub size: u64,
    /// The guest-visible size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<u64>,
    /// The `min_disk` of the body, in GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_disk: Option<u64>,
    /// MD5 of the file, as Glance's `checksum`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The algorithm of `os_hash_value` (`sha512`, Glance's default, when computed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_hash_algo: Option<String>,
    /// The file's digest with `os_hash_algo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_hash_value: Option<String>,
    /// Glance's `img_signature*` properties, when the image was signed, so that
    /// `vmimage verify --against SIDECAR --signing-cert CERT` checks the signature.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureProperties>,
}

/// The sidecar format version written in `vmimage_sidecar`.
pub const SIDECAR_VERSION: u32 = 1;

/// The `os_hash_algo` a sidecar records, most preferred first: Glance's default `sha512`, then
/// the other SHA-2 lengths the Sovereign Cloud Stack standard recommends.
const SIDECAR_HASH_PREFERENCE: [Algorithm; 4] = [
    Algorithm::Sha512,
    Algorithm::Sha256,
    Algorithm::Sha384,
    Algorithm::Sha224,
];

impl Sidecar {
    /// The sidecar for `facts`, with the body's name and `min_disk`.
    pub fn new(facts: &ImageFacts, name: Option<String>, min_disk: Option<u64>) -> Self {
        let os_hash = SIDECAR_HASH_PREFERENCE
            .into_iter()
            .find_map(|a| facts.digest_hex(a).map(|hex| (a, hex)));
        Self {
            vmimage_sidecar: SIDECAR_VERSION,
            name,
            disk_format: facts.disk_format().to_string(),
            container_format: "bare".to_string(),
            size: facts.size,
            virtual_size: facts.virtual_size,
            min_disk,
            checksum: facts.digest_hex(Algorithm::Md5),
            os_hash_algo: os_hash.as_ref().map(|(a, _)| a.name().to_string()),
            os_hash_value: os_hash.map(|(_, hex)| hex),
            signature: None,
        }
    }
}

/// A validated request body, and the sidecar that goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataDocument {
    /// The service the body is for.
    pub target: Target,
    /// The JSON request body, fields in the order the service documents them.
    pub body: Map<String, Value>,
    /// The digests and sizes the body cannot carry.
    pub sidecar: Sidecar,
}

impl MetadataDocument {
    /// The body as pretty JSON with a final newline: what `vmimage metadata` prints, and what
    /// `vmimage convert --metadata` writes.
    pub fn body_json(&self) -> String {
        pretty(&self.body)
    }

    /// Adds Glance's `img_signature*` properties to the body (extra properties are strings,
    /// after the schema fields) and to the sidecar.
    pub fn add_signature(&mut self, signature: &SignatureProperties) {
        for (name, value) in signature.pairs() {
            self.body.insert(name.into(), value.into());
        }
        self.sidecar.signature = Some(signature.clone());
    }

    /// The sidecar as pretty JSON with a final newline.
    pub fn sidecar_json(&self) -> String {
        pretty(&self.sidecar)
    }
}

fn pretty<T: Serialize>(value: &T) -> String {
    // Serializing maps with string keys and plain values cannot fail.
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

/// The digests a sidecar wants: MD5 for `checksum` and SHA-512 for `os_hash_value`.
pub const SIDECAR_ALGORITHMS: [Algorithm; 2] = [Algorithm::Md5, Algorithm::Sha512];

/// Builds and validates the body that registers the image described by `facts` with
/// `target`. Returns every broken rule when any is.
pub fn build(
    target: Target,
    facts: &ImageFacts,
    options: &MetadataOptions,
) -> Result<MetadataDocument, RuleViolations> {
    let mut v = Violations::new(target);
    check_image(facts, &mut v);
    let body = match target {
        Target::Glance => glance::create_body(facts, options, &mut v),
        Target::Scp => scp::create_body(facts, options, &mut v),
        Target::Ims => ims::create_body(facts, options, &mut v),
    };
    v.finish()?;
    let min_disk = body.get("min_disk").and_then(Value::as_u64);
    let sidecar = Sidecar::new(facts, options.name.clone(), min_disk);
    Ok(MetadataDocument {
        target,
        body,
        sidecar,
    })
}

/// Rules every target shares: the image must be safe (each cloud's inspector refuses backing
/// files, external data files and polyglots; SPEC "Safe") and have a known virtual size.
fn check_image(facts: &ImageFacts, v: &mut Violations) {
    if !facts.safety.safe {
        let findings: Vec<String> = facts
            .safety
            .errors()
            .map(|f| format!("{}: {}", f.check, f.detail))
            .collect();
        v.push(
            "image-unsafe",
            "file",
            format!(
                "the image is unsafe and a cloud would refuse it ({})",
                findings.join("; ")
            ),
        );
    }
    if facts.virtual_size.is_none() {
        v.push(
            "virtual-size-unknown",
            "file",
            "the image's virtual size is unknown (its header is invalid), so min_disk cannot be derived",
        );
    }
}

// ---- Helpers shared by the per-target rules ----

/// `name` is `len` characters long and within `min..=max`; pushes `rule` otherwise.
pub(crate) fn check_length(
    v: &mut Violations,
    rule: &'static str,
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) {
    let n = value.chars().count();
    if n < min || n > max {
        v.push(
            rule,
            field,
            format!(
                "{field} {:?} is {n} characters long; {} allows {min} to {max}",
                super::lenient::cut(value),
                v.target()
            ),
        );
    }
}

/// Resolves `min_disk`: the user's value checked against `range` and against what the virtual
/// size needs, or the needed value raised to the range's lower bound.
pub(crate) fn resolve_min_disk(
    facts: &ImageFacts,
    given: Option<i64>,
    range: std::ops::RangeInclusive<u64>,
    v: &mut Violations,
) -> u64 {
    let needed = facts.min_disk_needed();
    match given {
        Some(g) => {
            let in_range = u64::try_from(g).ok().filter(|g| range.contains(g));
            match in_range {
                None => {
                    v.push(
                        "min-disk-range",
                        "min_disk",
                        format!(
                            "min_disk {g} GiB is outside {}'s range {}..={} GiB",
                            v.target(),
                            range.start(),
                            range.end()
                        ),
                    );
                    g.max(0).unsigned_abs()
                }
                Some(g) => {
                    if let Some(n) = needed
                        && g < n
                    {
                        v.push(
                            "min-disk-too-small",
                            "min_disk",
                            format!(
                                "min_disk {g} GiB is less than the image's virtual size needs (ceil({} / 2^30) = {n} GiB): it would not boot on a smaller disk",
                                facts.virtual_size.unwrap_or_default()
                            ),
                        );
                    }
                    g
                }
            }
        }
        None => {
            let n = needed.unwrap_or(0).max(*range.start());
            if n > *range.end() {
                v.push(
                    "min-disk-range",
                    "min_disk",
                    format!(
                        "the image's virtual size needs min_disk {n} GiB, past {}'s limit of {} GiB",
                        v.target(),
                        range.end()
                    ),
                );
            }
            n
        }
    }
}

/// Resolves `min_ram` (MiB): the user's value checked against `range`, or 0.
pub(crate) fn resolve_min_ram(
    given: Option<i64>,
    range: std::ops::RangeInclusive<u64>,
    v: &mut Violations,
) -> u64 {
    let Some(g) = given else { return 0 };
    match u64::try_from(g).ok().filter(|g| range.contains(g)) {
        Some(g) => g,
        None => {
            v.push(
                "min-ram-range",
                "min_ram",
                format!(
                    "min_ram {g} MiB is outside {}'s range {}..={} MiB",
                    v.target(),
                    range.start(),
                    range.end()
                ),
            );
            g.max(0).unsigned_abs()
        }
    }
}

/// Checks `value` is one of `allowed` (exact match); pushes `rule` otherwise.
pub(crate) fn check_one_of(
    v: &mut Violations,
    rule: &'static str,
    field: &'static str,
    value: &str,
    allowed: &[&str],
) -> bool {
    if allowed.contains(&value) {
        return true;
    }
    v.push(
        rule,
        field,
        format!(
            "{field} {:?} is not one of {}'s values: {}",
            super::lenient::cut(value),
            v.target(),
            allowed.join(", ")
        ),
    );
    false
}

/// A flag the target's create request has no field for: refusing it is better than dropping
/// what the user asked for.
pub(crate) fn refuse_flag(v: &mut Violations, flag: &'static str, why: &str) {
    v.push(
        "unsupported-flag",
        flag,
        format!("{} has no field for {flag}: {why}", v.target()),
    );
}

/// A `--tag` split into key and optional value at the first `=`.
pub(crate) fn split_tag(tag: &str) -> (&str, Option<&str>) {
    match tag.split_once('=') {
        Some((k, val)) => (k, Some(val)),
        None => (tag, None),
    }
}

/// `hw_firmware_type` values (`compute-libvirt-image.json` in Glance's metadefs; IMS seeds 003
/// and 004 list the same two).
pub const FIRMWARE_TYPES: [&str; 2] = ["bios", "uefi"];

/// The hint every "convert first" message gives.
pub(crate) fn convert_hint(format: &str) -> String {
    format!("convert it first with `vmimage convert IN OUT -O {format}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(virtual_size: u64) -> ImageFacts {
        ImageFacts::new(ImageFormat::Qcow2, 200_000, Some(virtual_size), None)
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

    #[test]
    fn a_default_min_disk_is_raised_to_the_targets_lower_bound() {
        let mut v = Violations::new(Target::Ims);
        assert_eq!(resolve_min_disk(&facts(1 << 20), None, 1..=1024, &mut v), 1);
        assert!(v.finish().is_ok());
    }

    #[test]
    fn a_given_min_disk_below_the_virtual_size_is_a_violation() {
        let mut v = Violations::new(Target::Glance);
        resolve_min_disk(&facts(3 * GIB), Some(2), 0..=i32::MAX as u64, &mut v);
        let err = v.finish().unwrap_err();
        assert_eq!(err.0[0].rule, "min-disk-too-small");
    }

    #[test]
    fn a_negative_min_ram_is_a_violation() {
        let mut v = Violations::new(Target::Glance);
        resolve_min_ram(Some(-1), 0..=10, &mut v);
        assert_eq!(v.finish().unwrap_err().0[0].rule, "min-ram-range");
    }

    #[test]
    fn tags_split_at_the_first_equals_sign() {
        assert_eq!(split_tag("a=b=c"), ("a", Some("b=c")));
        assert_eq!(split_tag("a"), ("a", None));
        assert_eq!(split_tag("=b"), ("", Some("b")));
    }
}
