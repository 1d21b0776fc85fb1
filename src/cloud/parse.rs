//! Reading a record document: which shape it is, and which image in it is meant.
//!
//! Accepted shapes (SPEC `vmimage verify`; issue 4 "Reading records"):
//! - one image object: Glance v2 (`GET /v2/images/{id}`), SCP (`GET /v1/images/{id}`, seed 001,
//!   or the `--long` CLI fields as JSON, seed 000), an IMS image, `openstack image show -f json`
//!   output (it has `properties`), or a vmimage sidecar (it has `vmimage_sidecar`);
//! - a listing `{"images": [...]}` (IMS `GET /v2/cloudimages`, seeds 003 and 004; Glance's
//!   `GET /v2/images` has the same envelope), from which `--id` / `--name` choose one image
//!   (a listing of one needs neither).
//!
//! Each object is classified by the keys only its service writes, so a Glance listing and an
//! IMS listing are both read right.

use std::io::Read;

use serde_json::Value;

use super::lenient::{self, Object};
use super::record::{ImageRecord, RecordSource};
use super::{glance, ims, openstack_cli, scp};

/// The largest record document read, in bytes. An IMS listing of a thousand images is about
/// 2 MiB; anything past this is not a record. Our budget, not a service limit.
pub const MAX_RECORD_BYTES: u64 = 16 << 20;

/// How many candidates an error message lists before saying how many more there are.
pub const MAX_LISTED_CANDIDATES: usize = 10;

/// Keys that make an object an image record at all: Glance's identity, digest, size and
/// format fields (`reference/cloud-metadata.md` §1).
const IMAGE_KEYS: [&str; 10] = [
    "id",
    "name",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "disk_format",
    "container_format",
    "status",
];

/// SCP's own keys (seed 001, model_image_show_response.go): the `scp_*` extras and the fields
/// Glance does not have.
const SCP_KEYS: [&str; 5] = [
    "volumes",
    "url",
    "owner_account_name",
    "owner_user_name",
    "root_device_name",
];

/// Which image of a listing is meant (`--id`, `--name`). Both given: both must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSelector {
    /// The image ID wanted.
    pub id: Option<String>,
    /// The image name wanted.
    pub name: Option<String>,
}

impl RecordSelector {
    fn is_empty(&self) -> bool {
        self.id.is_none() && self.name.is_none()
    }

    fn matches(&self, id: Option<&str>, name: Option<&str>) -> bool {
        self.id.as_deref().is_none_or(|want| id == Some(want))
            && self.name.as_deref().is_none_or(|want| name == Some(want))
    }

    fn describe(&self) -> String {
        match (&self.id, &self.name) {
            (Some(i), Some(n)) => format!("id {i:?} and name {n:?}"),
            (Some(i), None) => format!("id {i:?}"),
            (None, Some(n)) => format!("name {n:?}"),
            (None, None) => "any image".into(),
        }
    }
}

/// Why a record document could not be read. Each message is one sentence that follows the
/// record's path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The document is larger than [`MAX_RECORD_BYTES`].
    #[error("is larger than {limit} bytes, too large for an image record")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The document could not be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// The document is not JSON.
    #[error("is not JSON ({0})")]
    NotJson(String),
    /// The document is JSON of a shape no accepted source writes.
    #[error(
        "is not an image record: {0}; expected a Glance, SCP or IMS image object, an IMS listing {{\"images\": [...]}}, or `openstack image show -f json` output"
    )]
    UnknownShape(String),
    /// The listing has no images.
    #[error("is a listing with no images")]
    EmptyListing,
    /// The listing has several images and no `--id` / `--name` chose one.
    #[error("holds {count} images; choose one with --id or --name: {candidates}")]
    ChoiceNeeded {
        /// How many images the listing holds.
        count: usize,
        /// The candidates, as `id "name"` items.
        candidates: String,
    },
    /// No image matches the selector.
    #[error("has no image with {wanted}; it holds: {candidates}")]
    NoMatch {
        /// The selector, described.
        wanted: String,
        /// The candidates.
        candidates: String,
    },
    /// Several images match the selector.
    #[error("has {count} images with {wanted}; choose one with --id: {candidates}")]
    Ambiguous {
        /// The selector, described.
        wanted: String,
        /// How many matched.
        count: usize,
        /// The matching candidates.
        candidates: String,
    },
}

/// Reads a whole record document from `reader`, refusing more than [`MAX_RECORD_BYTES`].
pub fn read_document<R: Read>(reader: R) -> Result<Vec<u8>, RecordError> {
    let mut buf = Vec::new();
    reader
        .take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| RecordError::Io(crate::error::describe_io(&e)))?;
    if buf.len() as u64 > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge {
            limit: MAX_RECORD_BYTES,
        });
    }
    Ok(buf)
}

/// Parses a record document and returns the one image it (or the selector) designates.
pub fn parse_record(bytes: &[u8], selector: &RecordSelector) -> Result<ImageRecord, RecordError> {
    // PowerShell and some editors write a UTF-8 byte-order mark, which JSON does not allow.
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| RecordError::NotJson(e.to_string()))?;
    let Value::Object(obj) = doc else {
        return Err(RecordError::UnknownShape(format!(
            "the document is a JSON {}, not an object",
            json_kind(&doc)
        )));
    };
    match obj.get("images") {
        Some(Value::Array(items)) => choose(items, selector),
        Some(other) => Err(RecordError::UnknownShape(format!(
            "\"images\" is a JSON {}, not an array",
            json_kind(other)
        ))),
        None => {
            let record = parse_image(&obj)?;
            if !selector.matches(record.id.as_deref(), record.name.as_deref()) {
                return Err(RecordError::NoMatch {
                    wanted: selector.describe(),
                    candidates: candidate(record.id.as_deref(), record.name.as_deref()),
                });
            }
            Ok(record)
        }
    }
}

/// Picks the image the selector designates from a listing.
fn choose(items: &[Value], selector: &RecordSelector) -> Result<ImageRecord, RecordError> {
    let mut objects = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Object(o) => objects.push(o),
            other => {
                return Err(RecordError::UnknownShape(format!(
                    "images[{i}] is a JSON {}, not an object",
                    json_kind(other)
                )));
            }
        }
    }
    let describe = |o: &Object| {
        candidate(
            lenient::opt_text(o, "id").as_deref(),
            lenient::opt_text(o, "name").as_deref(),
        )
    };
    match objects.as_slice() {
        [] => return Err(RecordError::EmptyListing),
        [only] if selector.is_empty() => return parse_image(only),
        _ => {}
    }
    if selector.is_empty() {
        return Err(RecordError::ChoiceNeeded {
            count: objects.len(),
            candidates: list(objects.iter().map(|o| describe(o))),
        });
    }
    let matching: Vec<&&Object> = objects
        .iter()
        .filter(|o| {
            selector.matches(
                lenient::opt_text(o, "id").as_deref(),
                lenient::opt_text(o, "name").as_deref(),
            )
        })
        .collect();
    match matching.as_slice() {
        [one] => parse_image(one),
        [] => Err(RecordError::NoMatch {
            wanted: selector.describe(),
            candidates: list(objects.iter().map(|o| describe(o))),
        }),
        many => Err(RecordError::Ambiguous {
            wanted: selector.describe(),
            count: many.len(),
            candidates: list(many.iter().map(|o| describe(o))),
        }),
    }
}

/// Reads one image object with its service's parser.
fn parse_image(obj: &Object) -> Result<ImageRecord, RecordError> {
    match classify(obj) {
        Some(RecordSource::Sidecar) => Ok(glance::read_common(obj, RecordSource::Sidecar)),
        Some(RecordSource::OpenstackCli) => Ok(openstack_cli::parse(obj)),
        Some(RecordSource::Ims) => Ok(ims::parse(obj)),
        Some(RecordSource::Scp) => Ok(scp::parse(obj)),
        Some(RecordSource::Glance | RecordSource::Flags) => Ok(glance::parse(obj)),
        None => {
            let keys: Vec<&str> = obj.keys().take(5).map(String::as_str).collect();
            Err(RecordError::UnknownShape(if keys.is_empty() {
                "the object is empty".to_string()
            } else {
                format!(
                    "the object has none of an image's fields (its keys: {})",
                    lenient::cut(&keys.join(", "))
                )
            }))
        }
    }
}

/// Which service wrote an image object, judged by the keys only that service writes.
pub fn classify(obj: &Object) -> Option<RecordSource> {
    if obj.contains_key("vmimage_sidecar") {
        return Some(RecordSource::Sidecar);
    }
    if obj.contains_key("properties") {
        return Some(RecordSource::OpenstackCli);
    }
    if obj
        .keys()
        .any(|k| k.starts_with("__") || k == "virtual_env_type")
    {
        return Some(RecordSource::Ims);
    }
    if obj
        .keys()
        .any(|k| k.starts_with("scp_") || SCP_KEYS.contains(&k.as_str()))
    {
        return Some(RecordSource::Scp);
    }
    if IMAGE_KEYS.iter().any(|k| obj.contains_key(*k)) {
        return Some(RecordSource::Glance);
    }
    None
}

fn candidate(id: Option<&str>, name: Option<&str>) -> String {
    let id = lenient::cut(id.unwrap_or("(no id)"));
    match name {
        Some(n) => format!("{id} {:?}", lenient::cut(n)),
        None => id,
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = items.collect();
    let shown = all
        .iter()
        .take(MAX_LISTED_CANDIDATES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match all.len().checked_sub(MAX_LISTED_CANDIDATES) {
        Some(more) if more > 0 => format!("{shown}, and {more} more"),
        _ => shown,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(id: Option<&str>, name: Option<&str>) -> RecordSelector {
        RecordSelector {
            id: id.map(Into::into),
            name: name.map(Into::into),
        }
    }

    const LISTING: &str = r#"{"images": [
        {"id": "a", "name": "one", "__os_type": "Linux"},
        {"id": "b", "name": "two", "__os_type": "Linux"},
        {"id": "c", "name": "two", "__os_type": "Linux"}]}"#;

    #[test]
    fn a_listing_needs_a_choice_and_lists_the_candidates() {
        let e = parse_record(LISTING.as_bytes(), &sel(None, None)).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, RecordError::ChoiceNeeded { count: 3, .. }),
            "{msg}"
        );
        assert!(
            msg.contains("a \"one\"") && msg.contains("c \"two\""),
            "{msg}"
        );
    }

    #[test]
    fn a_listing_is_chosen_from_by_id_or_unique_name() {
        let r = parse_record(LISTING.as_bytes(), &sel(Some("b"), None)).unwrap();
        assert_eq!(r.id.as_deref(), Some("b"));
        assert_eq!(r.source, RecordSource::Ims);
        let r = parse_record(LISTING.as_bytes(), &sel(None, Some("one"))).unwrap();
        assert_eq!(r.id.as_deref(), Some("a"));
    }

    #[test]
    fn an_ambiguous_name_is_an_error_listing_the_matches() {
        let e = parse_record(LISTING.as_bytes(), &sel(None, Some("two"))).unwrap_err();
        assert!(matches!(e, RecordError::Ambiguous { count: 2, .. }), "{e}");
    }

    #[test]
    fn a_selector_matching_nothing_is_an_error() {
        let e = parse_record(LISTING.as_bytes(), &sel(Some("zzz"), None)).unwrap_err();
        assert!(matches!(e, RecordError::NoMatch { .. }), "{e}");
        let single = br#"{"id": "x", "checksum": null}"#;
        let e = parse_record(single, &sel(Some("y"), None)).unwrap_err();
        assert!(matches!(e, RecordError::NoMatch { .. }), "{e}");
    }

    #[test]
    fn a_lone_listed_image_needs_no_choice() {
        let r = parse_record(
            br#"{"images": [{"id": "only", "size": 5}]}"#,
            &sel(None, None),
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("only"));
    }

    #[test]
    fn unknown_shapes_are_refused_with_one_sentence() {
        for doc in [
            &b"[]"[..],
            b"42",
            b"{}",
            br#"{"foo": 1}"#,
            br#"{"images": {}}"#,
            br#"{"images": [1]}"#,
            br#"{"images": []}"#,
            b"not json",
            b"",
        ] {
            let e = parse_record(doc, &sel(None, None)).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_tolerated() {
        let r = parse_record(
            b"\xef\xbb\xbf{\"id\": \"x\", \"size\": 1}",
            &sel(None, None),
        )
        .unwrap();
        assert_eq!(r.source, RecordSource::Glance);
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(parse_record(deep.as_bytes(), &sel(None, None)).is_err());
    }

    #[test]
    fn records_larger_than_the_limit_are_refused() {
        let big = std::io::repeat(b' ').take(MAX_RECORD_BYTES + 10);
        assert!(matches!(
            read_document(big),
            Err(RecordError::TooLarge { .. })
        ));
    }

    /// The committed fixtures of `testdata/records/` that describe seed 001's image.
    const SAME_IMAGE: [(&str, &str, RecordSource); 7] = [
        (
            "glance-image.json",
            include_str!("../../testdata/records/glance-image.json"),
            RecordSource::Glance,
        ),
        (
            "scp-image-show-seed001.json",
            include_str!("../../testdata/records/scp-image-show-seed001.json"),
            RecordSource::Scp,
        ),
        (
            "scp-cli-long-seed000.json",
            include_str!("../../testdata/records/scp-cli-long-seed000.json"),
            RecordSource::Scp,
        ),
        (
            "openstack-image-show.json",
            include_str!("../../testdata/records/openstack-image-show.json"),
            RecordSource::OpenstackCli,
        ),
        (
            "openstack-image-show-old-client.json",
            include_str!("../../testdata/records/openstack-image-show-old-client.json"),
            RecordSource::OpenstackCli,
        ),
        (
            "sidecar.json",
            include_str!("../../testdata/records/sidecar.json"),
            RecordSource::Sidecar,
        ),
        (
            "a listing of one",
            r#"{"images": [{"id": "70a599e0-31e7-49b7-b260-868f441e862b", "name": "imagename",
                "checksum": "7538E0FCB56E0E272CFD89EB384D6613", "os_hash_algo": "SHA512",
                "os_hash_value": "c6a32fc3b7c909b8900b46f5e6066c028a1d799c0a263cf064a600c430a714627c21f98ac248e2f2bf29870a1a2773c7908244745016878e1a5f31dc2c405b99",
                "size": "2429747200", "virtual_size": 17179869184, "min_disk": 100,
                "disk_format": "QCOW2", "container_format": "bare", "status": "active"}]}"#,
            RecordSource::Glance,
        ),
    ];

    #[test]
    fn every_shape_of_the_seed_image_parses_to_the_same_facts() {
        use crate::cloud::record::Recorded;
        let hash = "c6a32fc3b7c909b8900b46f5e6066c028a1d799c0a263cf064a600c430a714627c21f98ac248e2f2bf29870a1a2773c7908244745016878e1a5f31dc2c405b99";
        for (name, text, source) in SAME_IMAGE {
            let r = parse_record(text.as_bytes(), &sel(None, None))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.source, source, "{name}");
            assert_eq!(r.name.as_deref(), Some("imagename"), "{name}");
            assert_eq!(
                r.checksum,
                Recorded::Value("7538e0fcb56e0e272cfd89eb384d6613".into()),
                "{name}"
            );
            assert_eq!(r.os_hash_algo, Recorded::Value("sha512".into()), "{name}");
            assert_eq!(r.os_hash_value, Recorded::Value(hash.into()), "{name}");
            assert_eq!(r.size, Recorded::Value(2_429_747_200), "{name}");
            assert_eq!(r.virtual_size, Recorded::Value(17_179_869_184), "{name}");
            assert_eq!(r.disk_format, Recorded::Value("qcow2".into()), "{name}");
            assert_eq!(r.container_format, Recorded::Value("bare".into()), "{name}");
            assert_eq!(r.min_disk, Recorded::Value(100), "{name}");
            if source != RecordSource::Sidecar {
                assert_eq!(
                    r.id.as_deref(),
                    Some("70a599e0-31e7-49b7-b260-868f441e862b"),
                    "{name}"
                );
                assert_eq!(r.status, Recorded::Value("active".into()), "{name}");
            }
        }
    }

    #[test]
    fn scp_records_decode_volumes_and_python_booleans() {
        for (_, text, source) in &SAME_IMAGE[1..3] {
            let r = parse_record(text.as_bytes(), &sel(None, None)).unwrap();
            assert_eq!(*source, RecordSource::Scp);
            assert_eq!(r.protected, Some(false));
            assert_eq!(r.os_hidden, Some(false));
            let volumes = r.volumes.expect("volumes decoded");
            assert_eq!(volumes[0]["volume_size"], 104);
            assert_eq!(volumes[0]["device_name"], "/dev/vda");
        }
    }

    #[test]
    fn the_ims_seed_listing_reads_placeholders_as_absent() {
        use crate::cloud::record::{Absence, Recorded};
        let text = include_str!("../../testdata/records/ims-cloudimages-seed003.json");
        let r = parse_record(
            text.as_bytes(),
            &sel(Some("bc6bed6e-ba3a-4447-afcc-449174a3eb52"), None),
        )
        .unwrap();
        assert_eq!(r.source, RecordSource::Ims);
        assert_eq!(r.name.as_deref(), Some("CentOS 7.3 64bit vivado"));
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
        assert_eq!(r.disk_format, Recorded::Value("zvhd2".into()));
        assert_eq!(r.min_disk, Recorded::Value(100));
        assert_eq!(r.protected, Some(true));
        assert_eq!(r.os_distro.as_deref(), Some("CentOS"));
    }

    #[test]
    fn truncated_and_corrupted_records_never_panic() {
        for (_, text, _) in SAME_IMAGE {
            let bytes = text.as_bytes();
            for cut in (0..bytes.len()).step_by(7) {
                let _ = parse_record(&bytes[..cut], &sel(None, None));
            }
            for i in (0..bytes.len()).step_by(5) {
                for replacement in [b'"', b'{', b'0', b'n', 0xff] {
                    let mut m = bytes.to_vec();
                    m[i] = replacement;
                    let _ = parse_record(&m, &sel(Some("x"), Some("y")));
                }
            }
        }
    }
}
