//! The toolkit of the upload-metadata rules that every target's module (`glance`, `scp`,
//! `ims`) builds its create body with: the [`Target`] names, the
//! user's [`MetadataOptions`], the [`Violations`] collected while a body is built, and the
//! checks several targets share (lengths, `min_disk`, `min_ram`, enumerations, tags). The
//! dispatcher that calls the targets is the `metadata` module; this module calls none of them.

use std::fmt;

use serde::Serialize;

use crate::facts::ImageFacts;

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

/// The user's choices, as given on the command line (`vmimage metadata` and `vmimage convert
/// --metadata` take the same flags). Values are kept as given and validated when the body is
/// built, so that a bad value is listed with every other broken rule.
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
    use crate::facts::GIB;
    use crate::format::ImageFormat;

    fn facts(virtual_size: u64) -> ImageFacts {
        ImageFacts::new(ImageFormat::Qcow2, 200_000, Some(virtual_size), None)
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
