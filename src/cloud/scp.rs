//! Samsung Cloud Platform Virtual Server images: reading a record (`GET /v1/images/{id}`,
//! seed 001; `scpcli virtualserver image ... --long` fields as JSON, seed 000) and building
//! the `POST /v1/images` body (`ImageCreateRequest`, with the console's creation rules of
//! seed 002).
//!
//! SCP's field set is Glance v2's plus `scp_*` extras (`reference/cloud-metadata.md` §3), so
//! the record is read by [`super::glance::read_common`]; what is SCP's own is `volumes`, which
//! the API sends as JSON inside a string and must be decoded twice.

use serde_json::{Map, Value};

use crate::facts::ImageFacts;

use super::glance;
use super::lenient::{self, Object};
use super::record::{ImageRecord, RecordSource};
use super::rules::{
    self, MetadataOptions, Violations, check_length, check_one_of, refuse_flag, resolve_min_disk,
    resolve_min_ram, split_tag,
};

/// `os_distro` values of `ImageCreateRequest` (the SDK's enum: `alma centos rhel rocky ubuntu
/// windows oracle sles`); the console offers the Linux ones (seed 002).
pub const OS_DISTROS: [&str; 8] = [
    "alma", "centos", "rhel", "rocky", "ubuntu", "windows", "oracle", "sles",
];

/// Visibilities a create request may set (seed 002: Private, Shared).
pub const VISIBILITIES: [&str; 2] = ["private", "shared"];

/// Name length, 1 to 255 characters (seed 002: "Enter within 255 characters").
pub const MAX_NAME_LEN: usize = 255;

/// Largest `min_disk` in GB (seed 002: "Enter a value between 0 and 12,288 GB").
pub const MAX_MIN_DISK: u64 = 12_288;

/// Largest `min_ram` in MB. The console's limit is 2,097,151 GB (seed 002), which is
/// floor((2^31 - 1) / 1024): the console shows GB while the API stores Glance-style MB in an
/// int32 (the Terraform provider documents `min_ram` in MB, example 2048). So the limit in
/// the API's unit is 2,097,151 x 1024 MB.
pub const MAX_MIN_RAM_MB: u64 = 2_097_151 * 1024;

/// At most 50 tags per resource (seed 002).
pub const MAX_TAGS: usize = 50;

/// Tag key length limit (Terraform provider docs: keys up to 128 characters).
pub const MAX_TAG_KEY_LEN: usize = 128;

/// Tag value length limit (Terraform provider docs: values up to 256 characters).
pub const MAX_TAG_VALUE_LEN: usize = 256;

/// Reads an SCP image record.
pub fn parse(obj: &Object) -> ImageRecord {
    let mut r = glance::read_common(obj, RecordSource::Scp);
    r.volumes = obj.get("volumes").and_then(decode_volumes);
    r
}

/// Decodes SCP's `volumes`: a JSON array inside a string in the API (seed 001), or already an
/// array when a tool decoded it. Seed 000 prints it with typographic quotes (“ ”), which a
/// copy from the documentation carries along; those are read as plain quotes. An undecodable
/// string is kept as it is: `volumes` is informational and never makes a record unreadable.
fn decode_volumes(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => serde_json::from_str(s)
            .or_else(|_| serde_json::from_str(&s.replace(['\u{201c}', '\u{201d}'], "\"")))
            .ok()
            .or_else(|| Some(Value::String(lenient::cut(s)))),
        other => Some(other.clone()),
    }
}

/// True when `name` matches `ImageCreateRequest.name`'s pattern `^[a-zA-Z0-9-_ ]*$`.
fn name_chars_ok(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ' ')
}

/// The path part of a URL: everything before a `?` query or `#` fragment.
fn url_path(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// Builds the `ImageCreateRequest` body.
pub(crate) fn create_body(
    facts: &ImageFacts,
    opts: &MetadataOptions,
    v: &mut Violations,
) -> Map<String, Value> {
    let mut body = Map::new();
    match &opts.name {
        None => v.push("name-required", "name", "scp requires a name (--name)"),
        Some(name) => {
            check_length(v, "name-length", "name", name, 1, MAX_NAME_LEN);
            if !name_chars_ok(name) {
                v.push(
                    "name-charset",
                    "name",
                    format!(
                        "name {:?} may contain only English letters, digits, spaces, '-' and '_'",
                        lenient::cut(name)
                    ),
                );
            }
            body.insert("name".into(), name.clone().into());
        }
    }
    match &opts.os_distro {
        None => v.push(
            "os-distro-required",
            "os_distro",
            format!(
                "scp requires an OS type (--os-distro {})",
                OS_DISTROS.join("|")
            ),
        ),
        Some(d) => {
            let lower = d.to_ascii_lowercase();
            check_one_of(v, "os-distro", "os_distro", &lower, &OS_DISTROS);
            body.insert("os_distro".into(), lower.into());
        }
    }
    match &opts.url {
        None => v.push(
            "url-required",
            "url",
            "scp requires the Object Storage URL of the uploaded file (--url)",
        ),
        Some(url) => {
            if !url_path(url).ends_with(".qcow2") {
                v.push(
                    "url-extension",
                    "url",
                    format!(
                        "url {:?} must name a .qcow2 object: SCP accepts only files with the .qcow2 extension",
                        lenient::cut(url)
                    ),
                );
            }
            body.insert("url".into(), url.clone().into());
        }
    }
    let disk_format = facts.disk_format();
    if disk_format != "qcow2" {
        v.push(
            "disk-format",
            "disk_format",
            format!(
                "the file is {disk_format}, but SCP accepts only qcow2; {}",
                rules::convert_hint("qcow2")
            ),
        );
    }
    body.insert("disk_format".into(), "qcow2".into());
    body.insert("container_format".into(), "bare".into());
    let min_disk = resolve_min_disk(facts, opts.min_disk, 0..=MAX_MIN_DISK, v);
    body.insert("min_disk".into(), min_disk.into());
    let min_ram = resolve_min_ram(opts.min_ram, 0..=MAX_MIN_RAM_MB, v);
    body.insert("min_ram".into(), min_ram.into());
    body.insert("protected".into(), opts.protected.into());
    let visibility = opts.visibility.as_deref().unwrap_or("private");
    check_one_of(v, "visibility", "visibility", visibility, &VISIBILITIES);
    body.insert("visibility".into(), visibility.into());
    if opts.tags.len() > MAX_TAGS {
        v.push(
            "tag-count",
            "tags",
            format!(
                "{} tags given; scp allows at most {MAX_TAGS} per resource",
                opts.tags.len()
            ),
        );
    }
    if !opts.tags.is_empty() {
        let mut tags = Vec::new();
        for tag in &opts.tags {
            let (key, value) = split_tag(tag);
            check_length(v, "tag-key-length", "tags", key, 1, MAX_TAG_KEY_LEN);
            let mut t = Map::new();
            t.insert("key".into(), key.into());
            if let Some(value) = value {
                check_length(v, "tag-value-length", "tags", value, 0, MAX_TAG_VALUE_LEN);
                t.insert("value".into(), value.into());
            }
            tags.push(Value::Object(t));
        }
        body.insert("tags".into(), tags.into());
    }
    if opts.os_version.is_some() {
        refuse_flag(
            v,
            "os_version",
            "ImageCreateRequest has name, os_distro, url, disk_format, container_format, min_disk, min_ram, protected, visibility and tags only",
        );
    }
    if opts.architecture.is_some() {
        refuse_flag(
            v,
            "architecture",
            "ImageCreateRequest has no architecture property",
        );
    }
    if opts.firmware.is_some() {
        refuse_flag(
            v,
            "hw_firmware_type",
            "ImageCreateRequest has no firmware property",
        );
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{Target, build};
    use crate::format::ImageFormat;
    use serde_json::json;

    fn facts(format: ImageFormat, virtual_size: u64) -> ImageFacts {
        ImageFacts::new(format, 200_704, Some(virtual_size), None)
    }

    fn good() -> MetadataOptions {
        MetadataOptions {
            name: Some("golden image_1".into()),
            os_distro: Some("ubuntu".into()),
            url: Some("https://object-store.example/bucket/object.qcow2".into()),
            ..Default::default()
        }
    }

    fn rules(format: ImageFormat, vs: u64, opts: &MetadataOptions) -> Vec<&'static str> {
        match build(Target::Scp, &facts(format, vs), opts) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|v| v.rule).collect(),
        }
    }

    #[test]
    fn volumes_json_inside_a_string_is_decoded() {
        let v = json!({"id": "a", "volumes": "[{\"device_name\": \"/dev/vda\", \"volume_size\": 104}]"});
        let r = parse(v.as_object().unwrap());
        assert_eq!(
            r.volumes,
            Some(json!([{"device_name": "/dev/vda", "volume_size": 104}]))
        );
    }

    #[test]
    fn volumes_with_typographic_quotes_from_the_docs_are_decoded() {
        let v = json!({"volumes": "[{\u{201c}boot_index\u{201d}: 0}]"});
        assert_eq!(
            parse(v.as_object().unwrap()).volumes,
            Some(json!([{"boot_index": 0}]))
        );
    }

    #[test]
    fn undecodable_volumes_do_not_make_the_record_unreadable() {
        let v = json!({"volumes": "[not json"});
        assert_eq!(
            parse(v.as_object().unwrap()).volumes,
            Some(json!("[not json"))
        );
    }

    #[test]
    fn a_valid_scp_request_builds() {
        assert!(rules(ImageFormat::Qcow2, 1 << 30, &good()).is_empty());
    }

    #[test]
    fn scp_refuses_a_name_with_a_dot() {
        let opts = MetadataOptions {
            name: Some("ubuntu-24.04".into()),
            ..good()
        };
        assert_eq!(rules(ImageFormat::Qcow2, 1 << 30, &opts), ["name-charset"]);
    }

    #[test]
    fn scp_refuses_an_empty_or_long_name() {
        for name in [String::new(), "a".repeat(256)] {
            let opts = MetadataOptions {
                name: Some(name),
                ..good()
            };
            assert_eq!(rules(ImageFormat::Qcow2, 1 << 30, &opts), ["name-length"]);
        }
    }

    #[test]
    fn scp_refuses_a_raw_file_and_says_how_to_convert() {
        let err = build(Target::Scp, &facts(ImageFormat::Raw, 1 << 30), &good()).unwrap_err();
        assert_eq!(err.0[0].rule, "disk-format");
        assert!(
            err.0[0].message.contains("vmimage convert"),
            "{}",
            err.0[0].message
        );
    }

    #[test]
    fn scp_refuses_a_url_not_ending_in_qcow2_but_ignores_the_query() {
        let bad = MetadataOptions {
            url: Some("https://o/b/disk.img".into()),
            ..good()
        };
        assert_eq!(rules(ImageFormat::Qcow2, 1 << 30, &bad), ["url-extension"]);
        let signed = MetadataOptions {
            url: Some("https://o/b/disk.qcow2?sig=abc".into()),
            ..good()
        };
        assert!(rules(ImageFormat::Qcow2, 1 << 30, &signed).is_empty());
    }

    #[test]
    fn scp_refuses_an_os_type_it_does_not_document() {
        let opts = MetadataOptions {
            os_distro: Some("debian".into()),
            ..good()
        };
        assert_eq!(rules(ImageFormat::Qcow2, 1 << 30, &opts), ["os-distro"]);
    }

    #[test]
    fn scp_min_disk_is_bounded_by_12288_gb() {
        let opts = MetadataOptions {
            min_disk: Some(12_289),
            ..good()
        };
        assert_eq!(
            rules(ImageFormat::Qcow2, 1 << 30, &opts),
            ["min-disk-range"]
        );
        assert_eq!(
            rules(ImageFormat::Qcow2, 12_289 << 30, &good()),
            ["min-disk-range"]
        );
    }

    #[test]
    fn scp_min_ram_is_bounded_in_mb() {
        let ok = MetadataOptions {
            min_ram: Some(MAX_MIN_RAM_MB as i64),
            ..good()
        };
        assert!(rules(ImageFormat::Qcow2, 1 << 30, &ok).is_empty());
        let too_big = MetadataOptions {
            min_ram: Some(MAX_MIN_RAM_MB as i64 + 1),
            ..good()
        };
        assert_eq!(
            rules(ImageFormat::Qcow2, 1 << 30, &too_big),
            ["min-ram-range"]
        );
    }

    #[test]
    fn scp_refuses_public_visibility() {
        let opts = MetadataOptions {
            visibility: Some("public".into()),
            ..good()
        };
        assert_eq!(rules(ImageFormat::Qcow2, 1 << 30, &opts), ["visibility"]);
    }

    #[test]
    fn scp_allows_50_tags_and_refuses_51() {
        let fifty = MetadataOptions {
            tags: (0..50).map(|i| format!("k{i}=v")).collect(),
            ..good()
        };
        assert!(rules(ImageFormat::Qcow2, 1 << 30, &fifty).is_empty());
        let fifty_one = MetadataOptions {
            tags: (0..51).map(|i| format!("k{i}=v")).collect(),
            ..good()
        };
        assert_eq!(
            rules(ImageFormat::Qcow2, 1 << 30, &fifty_one),
            ["tag-count"]
        );
    }

    #[test]
    fn scp_bounds_tag_keys_and_values() {
        let opts = MetadataOptions {
            tags: vec![
                format!("{}=v", "k".repeat(129)),
                format!("k={}", "v".repeat(257)),
            ],
            ..good()
        };
        assert_eq!(
            rules(ImageFormat::Qcow2, 1 << 30, &opts),
            ["tag-key-length", "tag-value-length"]
        );
    }

    #[test]
    fn scp_body_tags_are_key_value_objects() {
        let opts = MetadataOptions {
            tags: vec!["env=prod".into(), "golden".into()],
            ..good()
        };
        let doc = build(Target::Scp, &facts(ImageFormat::Qcow2, 1 << 30), &opts).unwrap();
        assert_eq!(
            doc.body["tags"],
            json!([{"key": "env", "value": "prod"}, {"key": "golden"}])
        );
        assert_eq!(doc.body["visibility"], json!("private"));
    }
}
