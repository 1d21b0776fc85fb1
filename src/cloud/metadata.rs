//! Upload metadata: the request body that registers an image with a cloud, built from the
//! image's own facts and the user's choices, and validated against the target's documented
//! rules before anything is written.
//!
//! [`build`] is what `vmimage metadata` and `vmimage convert --metadata` both call. Every
//! broken rule is collected (SPEC: "Every broken rule is listed, not only the first"); a
//! document is returned only when none is broken. The per-target rules live with each service:
//! [`super::glance`], [`super::scp`], [`super::ims`], built with the toolkit of
//! [`super::rules`]; this module dispatches to them and none of them calls back into it.
//!
//! What a body never carries: `checksum`, `size` and `os_hash_*` are read-only in Glance
//! (`_readonly_properties`; sending them is HTTP 403, `reference/cloud-metadata.md` §1), and
//! neither SCP's `ImageCreateRequest` nor IMS's create request has them. They go to the
//! [`Sidecar`], which `vmimage verify --against` reads back as a record.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::digest::Algorithm;
use crate::digest::guest::GuestHash;
use crate::facts::ImageFacts;
use crate::signing::SignatureProperties;

use super::rules::{MetadataOptions, RuleViolations, Target, Violations};
use super::{glance, ims, scp};

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
    /// The guest-content hash (blkhash), when computed: `verify --against SIDECAR` proves
    /// with it that a file the cloud converted holds the same disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_hash: Option<GuestHash>,
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
            guest_hash: facts.guest_hash.clone(),
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
