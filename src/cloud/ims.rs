//! Huawei Cloud / Open Telekom Cloud IMS: reading an image from a `GET /v2/cloudimages`
//! listing (seeds 003, 004) and building the native `POST /v2/images` body that creates an
//! image's metadata.
//!
//! IMS is Glance-shaped, with its own habits (`reference/cloud-metadata.md` §3):
//! - `checksum`, `size` and `virtual_size` are documented as "This parameter is unavailable
//!   currently." The example fills them with the MD5 of empty input, `0` and `null`: those
//!   are absent, never compared. `size` and `virtual_size` are int32 in the SDK model, so a
//!   value there could not describe an image over 2 GiB anyway.
//! - `__image_size` is "the size (bytes) of the image file", as a string: it is the size.
//! - Booleans and numbers are often strings (`"true"`, `"64"`).
//! - `__platform` is the OS distribution, `__os_type` its family.

use serde_json::{Map, Value};

use crate::facts::ImageFacts;

use super::glance;
use super::lenient::{self, Object};
use super::record::{Absence, ImageRecord, RecordSource, Recorded};
use super::rules::{
    FIRMWARE_TYPES, MetadataOptions, Violations, check_length, check_one_of, resolve_min_disk,
    resolve_min_ram, split_tag,
};

/// `disk_format` values (seed 004: "zvhd2, vhd, zvhd, raw, or qcow2"; default zvhd2).
pub const DISK_FORMATS: [&str; 5] = ["zvhd2", "vhd", "zvhd", "raw", "qcow2"];

/// `__os_type` values (seeds 003, 004).
pub const OS_TYPES: [&str; 3] = ["Linux", "Windows", "Other"];

/// `__platform` values (seeds 003, 004).
pub const PLATFORMS: [&str; 12] = [
    "Windows",
    "Ubuntu",
    "RedHat",
    "SUSE",
    "CentOS",
    "Debian",
    "OpenSUSE",
    "Oracle Linux",
    "Fedora",
    "Other",
    "CoreOS",
    "EulerOS",
];

/// `architecture` values (Huawei `CreateImageRequestBody`: `x86`, `arm`).
pub const ARCHITECTURES: [&str; 2] = ["x86", "arm"];

/// `min_disk` range in GB (seeds 003, 004: "The value ranges from 1 GB to 1024 GB").
pub const MIN_DISK_RANGE: std::ops::RangeInclusive<u64> = 1..=1024;

/// `min_ram` upper bound in MB: the field is an Integer (int32) in the IMS model.
pub const MAX_MIN_RAM_MB: u64 = (1 << 31) - 1;

/// Name length, 1 to 128 characters (IMS "Image Attributes", which seed 004's `name` refers
/// to).
pub const MAX_NAME_LEN: usize = 128;

/// Tag length, 1 to 255 characters; a tag is `"key=value"` (native `POST /v2/images`).
pub const MAX_TAG_LEN: usize = 255;

/// Reads one IMS image (an item of `{"images": [...]}`).
pub fn parse(obj: &Object) -> ImageRecord {
    let mut r = glance::read_common(obj, RecordSource::Ims);
    r.size = match lenient::count(obj, "__image_size") {
        Recorded::Value(n) if n > 0 => Recorded::Value(n),
        Recorded::Invalid(s) => Recorded::Invalid(s),
        _ => unavailable(r.size),
    };
    r.virtual_size = unavailable(r.virtual_size);
    if r.os_distro.is_none() {
        r.os_distro = lenient::opt_text(obj, "__platform");
    }
    r
}

/// A field IMS documents as unavailable: `0` and `null` are what it sends for "nothing"
/// (seed 003's example has `"size": 0`, `"virtual_size": null`). Any other value is kept.
fn unavailable(r: Recorded<u64>) -> Recorded<u64> {
    match r {
        Recorded::Value(0) => Recorded::Absent(Absence::Unavailable { sent: "0".into() }),
        Recorded::Absent(Absence::Null) => Recorded::Absent(Absence::Unavailable {
            sent: "null".into(),
        }),
        other => other,
    }
}

/// True when `name` is 1 to 128 characters of letters, digits, `-`, `.`, `_`, spaces (and CJK
/// ideographs, which the Chinese edition of the rule also allows), not starting or ending with
/// a space (IMS "Image Attributes").
fn name_chars_ok(name: &str) -> bool {
    !name.starts_with(' ')
        && !name.ends_with(' ')
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '.' | '_' | ' ')
                || ('\u{4e00}'..='\u{9fff}').contains(&c)
        })
}

/// Maps `--os-distro` to an IMS `__platform`, case-insensitively, also accepting the Glance
/// (`rhel`, `sles`, `opensuse`, `oracle`) names for the same distributions.
fn platform(distro: &str) -> Option<&'static str> {
    let d = distro.to_ascii_lowercase();
    let alias = match d.as_str() {
        "rhel" | "redhat" => "RedHat",
        "sles" | "suse" => "SUSE",
        "oracle" | "oraclelinux" | "oracle linux" | "ol" => "Oracle Linux",
        _ => "",
    };
    if !alias.is_empty() {
        return Some(alias);
    }
    PLATFORMS.into_iter().find(|p| p.eq_ignore_ascii_case(&d))
}

/// The `__os_type` of a `__platform`.
fn os_type(platform: &str) -> &'static str {
    match platform {
        "Windows" => "Windows",
        "Other" => "Other",
        _ => "Linux",
    }
}

/// Maps `--architecture` to IMS's `x86`/`arm`, accepting the `uname -m` names Glance uses.
fn architecture(arch: &str) -> Option<&'static str> {
    match arch.to_ascii_lowercase().as_str() {
        "x86" | "x86_64" | "amd64" => Some("x86"),
        "arm" | "aarch64" | "arm64" => Some("arm"),
        _ => None,
    }
}

/// Builds the native `POST /v2/images` body with IMS's own properties.
pub(crate) fn create_body(
    facts: &ImageFacts,
    opts: &MetadataOptions,
    v: &mut Violations,
) -> Map<String, Value> {
    let mut body = Map::new();
    match &opts.name {
        // "If this parameter is not specified ... ECS creation using this image will fail."
        None => v.push("name-required", "name", "ims requires a name (--name)"),
        Some(name) => {
            check_length(v, "name-length", "name", name, 1, MAX_NAME_LEN);
            if !name_chars_ok(name) {
                v.push(
                    "name-charset",
                    "name",
                    format!(
                        "name {:?} may contain only letters, digits, '-', '.', '_' and spaces, and may not start or end with a space",
                        lenient::cut(name)
                    ),
                );
            }
            body.insert("name".into(), name.clone().into());
        }
    }
    let disk_format = facts.disk_format();
    if !DISK_FORMATS.contains(&disk_format) {
        v.push(
            "disk-format",
            "disk_format",
            format!(
                "the file is {disk_format}, which is not an IMS disk_format ({}); {}",
                DISK_FORMATS.join(", "),
                super::rules::convert_hint("qcow2")
            ),
        );
    }
    body.insert("disk_format".into(), disk_format.into());
    body.insert("container_format".into(), "bare".into());
    let min_disk = resolve_min_disk(facts, opts.min_disk, MIN_DISK_RANGE, v);
    body.insert("min_disk".into(), min_disk.into());
    let min_ram = resolve_min_ram(opts.min_ram, 0..=MAX_MIN_RAM_MB, v);
    body.insert("min_ram".into(), min_ram.into());
    // Native API: "When creating image metadata, the value of visibility can be set to
    // private only."
    let visibility = opts.visibility.as_deref().unwrap_or("private");
    check_one_of(v, "visibility", "visibility", visibility, &["private"]);
    body.insert("visibility".into(), visibility.into());
    body.insert("protected".into(), opts.protected.into());
    if !opts.tags.is_empty() {
        let mut tags = Vec::new();
        for tag in &opts.tags {
            let (key, _) = split_tag(tag);
            if key.is_empty() {
                v.push(
                    "tag-key-length",
                    "tags",
                    format!("tag {tag:?} has an empty key"),
                );
            }
            check_length(v, "tag-length", "tags", tag, 1, MAX_TAG_LEN);
            tags.push(Value::from(tag.clone()));
        }
        body.insert("tags".into(), tags.into());
    }
    if let Some(distro) = &opts.os_distro {
        match platform(distro) {
            Some(p) => {
                body.insert("__os_type".into(), os_type(p).into());
                body.insert("__platform".into(), p.into());
            }
            None => {
                v.push(
                    "platform",
                    "__platform",
                    format!(
                        "os_distro {:?} is not an IMS __platform ({})",
                        lenient::cut(distro),
                        PLATFORMS.join(", ")
                    ),
                );
            }
        }
    }
    if let Some(version) = &opts.os_version {
        body.insert("__os_version".into(), version.clone().into());
    }
    if let Some(arch) = &opts.architecture {
        match architecture(arch) {
            Some(a) => {
                body.insert("architecture".into(), a.into());
            }
            None => {
                v.push(
                    "architecture",
                    "architecture",
                    format!(
                        "architecture {:?} is not an IMS architecture ({})",
                        lenient::cut(arch),
                        ARCHITECTURES.join(", ")
                    ),
                );
            }
        }
    }
    if let Some(fw) = &opts.firmware {
        check_one_of(v, "firmware", "hw_firmware_type", fw, &FIRMWARE_TYPES);
        body.insert("hw_firmware_type".into(), fw.clone().into());
    }
    if let Some(url) = &opts.url {
        // IMS reads files from OBS as "<bucket>:<object>" (`image_url` of the file-import
        // request), not as a URL.
        let ok = url.split_once(':').is_some_and(|(bucket, object)| {
            !bucket.is_empty()
                && !object.is_empty()
                && !object.starts_with("//")
                && !url.chars().any(char::is_whitespace)
        });
        if !ok {
            v.push(
                "url-format",
                "image_url",
                format!(
                    "url {:?} must be an OBS location BUCKET:OBJECT (for example my-bucket:images/disk.qcow2), not a URL",
                    lenient::cut(url)
                ),
            );
        }
        body.insert("image_url".into(), url.clone().into());
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{Target, build};
    use crate::format::ImageFormat;
    use serde_json::json;

    fn facts(format: ImageFormat, vs: u64) -> ImageFacts {
        ImageFacts::new(format, 200_704, Some(vs), None)
    }

    fn good() -> MetadataOptions {
        MetadataOptions {
            name: Some("CentOS 7.3 64bit vivado".into()),
            ..Default::default()
        }
    }

    fn rules(format: ImageFormat, vs: u64, opts: &MetadataOptions) -> Vec<&'static str> {
        match build(Target::Ims, &facts(format, vs), opts) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|v| v.rule).collect(),
        }
    }

    #[test]
    fn the_seed_example_reads_with_every_unavailable_field_absent() {
        let v = json!({"checksum": "d41d8cd98f00b204e9800998ecf8427e", "size": 0,
                        "virtual_size": null, "__platform": "CentOS", "protected": true,
                        "min_disk": 100, "disk_format": "zvhd2"});
        let r = parse(v.as_object().unwrap());
        assert!(matches!(
            r.checksum,
            Recorded::Absent(Absence::Placeholder { .. })
        ));
        assert!(matches!(
            r.size,
            Recorded::Absent(Absence::Unavailable { .. })
        ));
        assert!(matches!(
            r.virtual_size,
            Recorded::Absent(Absence::Unavailable { .. })
        ));
        assert_eq!(r.os_distro.as_deref(), Some("CentOS"));
        assert_eq!(r.min_disk, Recorded::Value(100));
    }

    #[test]
    fn image_size_in_bytes_as_a_string_is_the_size() {
        let v =
            json!({"size": 0, "__image_size": "2429747200", "min_disk": "40", "protected": "true"});
        let r = parse(v.as_object().unwrap());
        assert_eq!(r.size, Recorded::Value(2_429_747_200));
        assert_eq!(r.min_disk, Recorded::Value(40));
        assert_eq!(r.protected, Some(true));
    }

    #[test]
    fn a_valid_ims_request_builds_with_platform_and_os_type() {
        let opts = MetadataOptions {
            os_distro: Some("ubuntu".into()),
            architecture: Some("x86_64".into()),
            firmware: Some("uefi".into()),
            url: Some("bucket:images/disk.qcow2".into()),
            tags: vec!["env=prod".into()],
            ..good()
        };
        let doc = build(Target::Ims, &facts(ImageFormat::Qcow2, 1 << 20), &opts).unwrap();
        assert_eq!(doc.body["__platform"], json!("Ubuntu"));
        assert_eq!(doc.body["__os_type"], json!("Linux"));
        assert_eq!(doc.body["architecture"], json!("x86"));
        assert_eq!(doc.body["min_disk"], json!(1));
        assert_eq!(doc.body["tags"], json!(["env=prod"]));
    }

    #[test]
    fn ims_names_follow_the_image_attribute_rules() {
        for (name, rule) in [
            (" leading", "name-charset"),
            ("trailing ", "name-charset"),
            ("semi;colon", "name-charset"),
            ("", "name-length"),
        ] {
            let opts = MetadataOptions {
                name: Some(name.into()),
                ..good()
            };
            assert_eq!(
                rules(ImageFormat::Qcow2, 1 << 30, &opts),
                [rule],
                "{name:?}"
            );
        }
        let long = MetadataOptions {
            name: Some("a".repeat(129)),
            ..good()
        };
        assert_eq!(rules(ImageFormat::Qcow2, 1 << 30, &long), ["name-length"]);
        let cjk = MetadataOptions {
            name: Some("镜像 1.0".into()),
            ..good()
        };
        assert!(rules(ImageFormat::Qcow2, 1 << 30, &cjk).is_empty());
    }

    #[test]
    fn ims_min_disk_is_1_to_1024() {
        for bad in [0, 1025] {
            let opts = MetadataOptions {
                min_disk: Some(bad),
                ..good()
            };
            assert_eq!(
                rules(ImageFormat::Qcow2, 1 << 20, &opts),
                ["min-disk-range"]
            );
        }
    }

    #[test]
    fn ims_refuses_an_unknown_platform_architecture_firmware_and_public_visibility() {
        let opts = MetadataOptions {
            os_distro: Some("plan9".into()),
            architecture: Some("riscv64".into()),
            firmware: Some("efi".into()),
            visibility: Some("public".into()),
            min_ram: Some(-1),
            ..good()
        };
        assert_eq!(
            rules(ImageFormat::Qcow2, 1 << 30, &opts),
            [
                "min-ram-range",
                "visibility",
                "platform",
                "architecture",
                "firmware"
            ]
        );
    }

    #[test]
    fn ims_refuses_a_vmdk_file_and_a_url_for_its_obs_location() {
        let opts = MetadataOptions {
            url: Some("https://obs.example.com/bucket/disk.qcow2".into()),
            ..good()
        };
        assert_eq!(
            rules(ImageFormat::Vmdk, 1 << 30, &opts),
            ["disk-format", "url-format"]
        );
    }
}
