//! OpenStack Glance v2: reading an image record (`GET /v2/images/{id}`) and building the
//! `POST /v2/images` body.
//!
//! Field meanings and rules are Glance's image schema (`glance/api/v2/images.py`
//! `get_base_properties()`) as summarised in `reference/cloud-metadata.md` §1. SCP and IMS
//! records use the same names, so [`read_common`] is the parser all three share; each service
//! module then adds what is its own.

use serde_json::{Map, Value};

use crate::facts::ImageFacts;

use super::lenient::{self, Object};
use super::record::{
    Absence, ImageRecord, RecordSource, Recorded, SignatureFields, normalise_digest, normalise_name,
};
use super::rules::{
    self, FIRMWARE_TYPES, MetadataOptions, Violations, check_length, check_one_of, refuse_flag,
    resolve_min_disk, resolve_min_ram,
};

/// Glance's default `disk_formats` (`glance/common/config.py` line 93).
pub const DISK_FORMATS: [&str; 11] = [
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];

/// Glance's default `container_formats` (`glance/common/config.py` line 86).
pub const CONTAINER_FORMATS: [&str; 8] = [
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];

/// Image visibilities (Image API 2.5 added `community`; the default when omitted is `shared`).
pub const VISIBILITIES: [&str; 4] = ["private", "shared", "community", "public"];

/// `name`, tag and extra-property key maximum length (schema `maxLength: 255`).
pub const MAX_NAME_LEN: usize = 255;

/// `min_disk` and `min_ram` upper bound: Glance's `_validate_db_int` limit, 2^31 - 1.
pub const MAX_DB_INT: u64 = (1 << 31) - 1;

/// Reads the fields every Glance-shaped record has, under Glance's names.
pub fn read_common(obj: &Object, source: RecordSource) -> ImageRecord {
    let mut r = ImageRecord::empty(source);
    r.id = lenient::opt_text(obj, "id");
    r.name = lenient::opt_text(obj, "name");
    r.checksum = normalise_digest(lenient::text(obj, "checksum"), Some(32));
    r.os_hash_algo = normalise_name(lenient::text(obj, "os_hash_algo"));
    r.os_hash_value = normalise_digest(lenient::text(obj, "os_hash_value"), None);
    r.size = lenient::count(obj, "size");
    r.virtual_size = lenient::count(obj, "virtual_size");
    r.disk_format = normalise_name(lenient::text(obj, "disk_format"));
    r.container_format = normalise_name(lenient::text(obj, "container_format"));
    r.min_disk = lenient::count(obj, "min_disk");
    r.min_ram = lenient::count(obj, "min_ram");
    r.status = normalise_name(lenient::text(obj, "status"));
    r.visibility = lenient::opt_text(obj, "visibility").map(|s| s.to_ascii_lowercase());
    r.protected = lenient::flag(obj, "protected");
    r.os_hidden = lenient::flag(obj, "os_hidden");
    r.os_distro = lenient::opt_text(obj, "os_distro");
    // Extra properties sit at the top level of a Glance v2 image (and of a sidecar).
    r.signature = SignatureFields {
        signature: lenient::opt_text(obj, "img_signature"),
        hash_method: lenient::opt_text(obj, "img_signature_hash_method"),
        key_type: lenient::opt_text(obj, "img_signature_key_type"),
        certificate_uuid: lenient::opt_text(obj, "img_signature_certificate_uuid"),
    };
    r.guest_hash = match obj.get("guest_hash") {
        None => Recorded::Absent(Absence::Missing),
        Some(serde_json::Value::Null) => Recorded::Absent(Absence::Null),
        Some(v) => serde_json::from_value(v.clone())
            .map_or_else(|_| Recorded::Invalid(v.to_string()), Recorded::Value),
    };
    r
}

/// Reads a Glance v2 image record.
pub fn parse(obj: &Object) -> ImageRecord {
    read_common(obj, RecordSource::Glance)
}

/// Builds the `POST /v2/images` body. Only writable fields go in; extra properties are
/// strings (schema `additionalProperties: {type: string}`).
pub(crate) fn create_body(
    facts: &ImageFacts,
    opts: &MetadataOptions,
    v: &mut Violations,
) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(name) = &opts.name {
        check_length(v, "name-length", "name", name, 0, MAX_NAME_LEN);
        body.insert("name".into(), name.clone().into());
    }
    let disk_format = facts.disk_format();
    if !DISK_FORMATS.contains(&disk_format) {
        v.push(
            "disk-format",
            "disk_format",
            format!(
                "the file is {disk_format}, which Glance has no disk_format for (allowed: {}); {}",
                DISK_FORMATS.join(", "),
                rules::convert_hint("qcow2")
            ),
        );
    }
    body.insert("disk_format".into(), disk_format.into());
    body.insert("container_format".into(), "bare".into());
    let min_disk = resolve_min_disk(facts, opts.min_disk, 0..=MAX_DB_INT, v);
    body.insert("min_disk".into(), min_disk.into());
    let min_ram = resolve_min_ram(opts.min_ram, 0..=MAX_DB_INT, v);
    body.insert("min_ram".into(), min_ram.into());
    if let Some(vis) = &opts.visibility {
        check_one_of(v, "visibility", "visibility", vis, &VISIBILITIES);
        body.insert("visibility".into(), vis.clone().into());
    }
    body.insert("protected".into(), opts.protected.into());
    if !opts.tags.is_empty() {
        for tag in &opts.tags {
            check_length(v, "tag-length", "tags", tag, 1, MAX_NAME_LEN);
        }
        body.insert(
            "tags".into(),
            opts.tags.iter().cloned().map(Value::from).collect(),
        );
    }
    if let Some(distro) = &opts.os_distro {
        // useful-image-properties.rst: os_distro is the lower-case libosinfo vocabulary.
        if distro.is_empty()
            || distro
                .chars()
                .any(|c| c.is_uppercase() || c.is_whitespace())
        {
            v.push(
                "os-distro",
                "os_distro",
                format!(
                    "os_distro {:?} must be a lower-case libosinfo name such as ubuntu, debian, fedora, centos, rhel, rocky, opensuse, windows",
                    lenient::cut(distro)
                ),
            );
        }
        body.insert("os_distro".into(), distro.clone().into());
    }
    if let Some(version) = &opts.os_version {
        body.insert("os_version".into(), version.clone().into());
    }
    if let Some(arch) = &opts.architecture {
        body.insert("architecture".into(), arch.clone().into());
    }
    if let Some(fw) = &opts.firmware {
        check_one_of(v, "firmware", "hw_firmware_type", fw, &FIRMWARE_TYPES);
        body.insert("hw_firmware_type".into(), fw.clone().into());
    }
    if opts.url.is_some() {
        refuse_flag(
            v,
            "url",
            "Glance takes the data by upload (PUT /v2/images/{id}/file) or by an import call, not in the create body",
        );
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::record::{Absence, Recorded};
    use crate::cloud::{Target, build};
    use crate::format::ImageFormat;
    use serde_json::json;

    fn facts() -> ImageFacts {
        ImageFacts::new(ImageFormat::Qcow2, 200_704, Some(3 << 30), None)
    }

    #[test]
    fn a_queued_glance_record_has_every_digest_absent() {
        let v = json!({"id": "x", "status": "queued", "checksum": null, "os_hash_algo": null,
                        "os_hash_value": null, "size": null, "virtual_size": null});
        let r = parse(v.as_object().unwrap());
        assert_eq!(r.checksum, Recorded::Absent(Absence::Null));
        assert_eq!(r.os_hash_value, Recorded::Absent(Absence::Null));
        assert_eq!(r.size, Recorded::Absent(Absence::Null));
        assert_eq!(r.status, Recorded::Value("queued".into()));
    }

    #[test]
    fn the_glance_body_has_no_read_only_field() {
        let doc = build(Target::Glance, &facts(), &MetadataOptions::default()).unwrap();
        for read_only in [
            "checksum",
            "size",
            "virtual_size",
            "os_hash_algo",
            "os_hash_value",
        ] {
            assert!(!doc.body.contains_key(read_only), "{read_only}");
        }
        assert_eq!(doc.body["min_disk"], json!(3));
        assert_eq!(doc.body["disk_format"], json!("qcow2"));
    }

    #[test]
    fn glance_lists_every_broken_rule() {
        let opts = MetadataOptions {
            name: Some("n".repeat(256)),
            min_disk: Some(-1),
            min_ram: Some(-5),
            visibility: Some("everyone".into()),
            firmware: Some("coreboot".into()),
            os_distro: Some("Ubuntu".into()),
            url: Some("https://x/y".into()),
            tags: vec!["t".repeat(256)],
            ..Default::default()
        };
        let err = build(Target::Glance, &facts(), &opts).unwrap_err();
        let rules: Vec<_> = err.0.iter().map(|v| v.rule).collect();
        for r in [
            "name-length",
            "min-disk-range",
            "min-ram-range",
            "visibility",
            "firmware",
            "os-distro",
            "unsupported-flag",
            "tag-length",
        ] {
            assert!(rules.contains(&r), "{r} missing from {rules:?}");
        }
    }
}
