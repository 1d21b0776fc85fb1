//! The normalised image record: what a cloud says it stored, whichever service said it.
//!
//! Glance v2, SCP and IMS describe an image with the same field names (SPEC "What a cloud
//! records"; `reference/cloud-metadata.md` §1 and §3), but fill them differently: IMS sends
//! numbers and booleans as strings and documents `checksum`, `size` and `virtual_size` as
//! "unavailable" (seeds 003, 004), queued Glance images have nulls, and the MD5 of empty input
//! stands in for "no checksum". Every field that a check compares is therefore a [`Recorded`]
//! value that keeps *why* it is absent, so that `vmimage verify` can say `skip` with the reason
//! and never turn a placeholder into a `pass`.

use serde::Serialize;

use crate::digest::Algorithm;

/// Which service (or which tool's rendering of it) a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordSource {
    /// OpenStack Glance v2 `GET /v2/images/{id}` (or an item of `GET /v2/images`).
    Glance,
    /// Samsung Cloud Platform `GET /v1/images/{id}` (seed 001) or `scpcli ... --long` fields
    /// rendered as JSON (seed 000).
    Scp,
    /// Huawei Cloud / Open Telekom Cloud IMS, an item of `GET /v2/cloudimages` (seeds 003, 004).
    Ims,
    /// `openstack image show -f json` (python-openstackclient), whose `os_hash_*` and
    /// `os_hidden` sit under `properties`.
    OpenstackCli,
    /// A sidecar written by `vmimage metadata --sidecar` (digests and sizes of the file).
    Sidecar,
    /// No record: the expectations came from command-line flags only.
    Flags,
}

impl RecordSource {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            RecordSource::Glance => "glance",
            RecordSource::Scp => "scp",
            RecordSource::Ims => "ims",
            RecordSource::OpenstackCli => "openstack-cli",
            RecordSource::Sidecar => "sidecar",
            RecordSource::Flags => "flags",
        }
    }
}

impl std::fmt::Display for RecordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a recorded value is absent. Each reason reads as the end of "the record's FIELD ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Absence {
    /// The field is not in the record at all.
    Missing,
    /// The field is `null` (Glance before upload; IMS `virtual_size`).
    Null,
    /// The field is an empty or blank string.
    Empty,
    /// The value is a stand-in, not a fact: the digest of empty input. IMS fills `checksum`
    /// with `d41d8cd98f00b204e9800998ecf8427e`, the MD5 of nothing (seed 003's example).
    Placeholder {
        /// What the value is, for the report ("the MD5 of empty input").
        what: &'static str,
    },
    /// The service documents the field as not filled ("This parameter is unavailable
    /// currently.", IMS `size` and `virtual_size`, seeds 003 and 004) and sent this value.
    Unavailable {
        /// The value sent, as text (`0`, `null`).
        sent: String,
    },
}

impl Absence {
    /// A short sentence fragment: why the value cannot be compared.
    pub fn describe(&self, field: &str, source: RecordSource) -> String {
        match self {
            Absence::Missing => format!("the record has no {field}"),
            Absence::Null => format!("the record's {field} is null"),
            Absence::Empty => format!("the record's {field} is empty"),
            Absence::Placeholder { what } => {
                format!("the record's {field} is {what}, a placeholder, not a digest")
            }
            Absence::Unavailable { sent } => format!(
                "{} documents {field} as unavailable (it sent {sent})",
                source.name().to_uppercase()
            ),
        }
    }
}

/// One recorded field: a value, an absence with its reason, or something that is not a value
/// of the field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded<T> {
    /// The record states this value.
    Value(T),
    /// The record states nothing usable, and why.
    Absent(Absence),
    /// The record states something that is not a value of this field (a checksum that is
    /// not 32 hex digits, a size that is a word). Kept as text for the report.
    Invalid(String),
}

impl<T> Recorded<T> {
    /// The value, when there is one.
    pub fn value(&self) -> Option<&T> {
        match self {
            Recorded::Value(v) => Some(v),
            _ => None,
        }
    }

    /// True when the record states nothing for this field.
    pub fn is_absent(&self) -> bool {
        matches!(self, Recorded::Absent(_))
    }

    /// Maps the value, keeping absences and invalid values.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Recorded<U> {
        match self {
            Recorded::Value(v) => Recorded::Value(f(v)),
            Recorded::Absent(a) => Recorded::Absent(a),
            Recorded::Invalid(s) => Recorded::Invalid(s),
        }
    }
}

impl<T> Default for Recorded<T> {
    fn default() -> Self {
        Recorded::Absent(Absence::Missing)
    }
}

/// An image record from any accepted source, normalised to Glance v2's field names and units
/// (`reference/cloud-metadata.md` §1): sizes in bytes, `min_disk` in GiB, `min_ram` in MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Where the record came from.
    pub source: RecordSource,
    /// The image ID, if the record has one.
    pub id: Option<String>,
    /// The image name, if the record has one.
    pub name: Option<String>,
    /// MD5 of the whole file as uploaded, lower-case hex (Glance `checksum`).
    pub checksum: Recorded<String>,
    /// The algorithm of `os_hash_value`, lower-case as recorded (`sha512` by default in
    /// Glance; any `hashlib` name is allowed there, so it may be one vmimage cannot compute).
    pub os_hash_algo: Recorded<String>,
    /// The hex digest of the whole file with `os_hash_algo`, lower-case.
    pub os_hash_value: Recorded<String>,
    /// The file's length in bytes. For IMS, `__image_size` (bytes as a string), since IMS
    /// documents `size` as unavailable.
    pub size: Recorded<u64>,
    /// The guest-visible disk size in bytes.
    pub virtual_size: Recorded<u64>,
    /// `qcow2`, `raw`, `vhd`, ... (IMS also `zvhd`, `zvhd2`), lower-case.
    pub disk_format: Recorded<String>,
    /// `bare`, `ovf`, ..., lower-case.
    pub container_format: Recorded<String>,
    /// Minimum disk in GiB (Nova reads it as `min_disk * units.Gi`).
    pub min_disk: Recorded<u64>,
    /// Minimum RAM in MiB.
    pub min_ram: Recorded<u64>,
    /// `active`, `queued`, ..., lower-case.
    pub status: Recorded<String>,
    /// `private`, `shared`, `community`, `public`, when recorded.
    pub visibility: Option<String>,
    /// Whether deletion is prohibited, when recorded (IMS and the SCP CLI send strings).
    pub protected: Option<bool>,
    /// Whether the image is hidden from listings, when recorded.
    pub os_hidden: Option<bool>,
    /// The recorded OS distribution (`os_distro`, or IMS `__platform`).
    pub os_distro: Option<String>,
    /// SCP's `volumes`: the JSON array the API sends inside a string (seed 001), decoded.
    pub volumes: Option<serde_json::Value>,
    /// Glance's `img_signature*` properties, as recorded.
    pub signature: SignatureFields,
    /// The guest-content hash (blkhash) a vmimage sidecar records, the same for every
    /// container of the disk.
    pub guest_hash: Recorded<crate::digest::guest::GuestHash>,
    /// Which fields command-line flags replaced (`checksum`, `size`, ...), for the report.
    pub overridden: Vec<&'static str>,
}

/// Glance's four `img_signature*` properties as a record states them, unvalidated (the
/// `signature` check of `vmimage verify` judges them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureFields {
    /// `img_signature`: base64 of the signature.
    pub signature: Option<String>,
    /// `img_signature_hash_method`.
    pub hash_method: Option<String>,
    /// `img_signature_key_type`.
    pub key_type: Option<String>,
    /// `img_signature_certificate_uuid`.
    pub certificate_uuid: Option<String>,
}

impl SignatureFields {
    /// True when the record states none of the four.
    pub fn is_empty(&self) -> bool {
        self.signature.is_none()
            && self.hash_method.is_none()
            && self.key_type.is_none()
            && self.certificate_uuid.is_none()
    }

    /// The names of the properties the record lacks.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            ("img_signature", &self.signature),
            ("img_signature_hash_method", &self.hash_method),
            ("img_signature_key_type", &self.key_type),
            ("img_signature_certificate_uuid", &self.certificate_uuid),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| n)
        .collect()
    }
}

impl ImageRecord {
    /// A record with nothing in it, from `source`.
    pub fn empty(source: RecordSource) -> Self {
        Self {
            source,
            id: None,
            name: None,
            checksum: Recorded::default(),
            os_hash_algo: Recorded::default(),
            os_hash_value: Recorded::default(),
            size: Recorded::default(),
            virtual_size: Recorded::default(),
            disk_format: Recorded::default(),
            container_format: Recorded::default(),
            min_disk: Recorded::default(),
            min_ram: Recorded::default(),
            status: Recorded::default(),
            signature: SignatureFields::default(),
            guest_hash: Recorded::default(),
            visibility: None,
            protected: None,
            os_hidden: None,
            os_distro: None,
            volumes: None,
            overridden: Vec::new(),
        }
    }

    /// The algorithm `os_hash_value` was computed with, when vmimage can compute it: the
    /// declared `os_hash_algo`, or, when the record declares none, the one algorithm whose
    /// digest has the recorded value's length (every supported algorithm has its own length).
    pub fn os_hash_algorithm(&self) -> Option<Algorithm> {
        match &self.os_hash_algo {
            Recorded::Value(name) => Algorithm::from_name(name),
            Recorded::Invalid(_) => None,
            Recorded::Absent(_) => {
                let value = self.os_hash_value.value()?;
                Algorithm::ALL
                    .into_iter()
                    .find(|a| a.output_len() * 2 == value.len())
            }
        }
    }

    /// The algorithms a verify must compute to check this record: MD5 when a checksum is
    /// recorded, and the `os_hash_algo` when an `os_hash_value` is.
    pub fn algorithms_needed(&self) -> Vec<Algorithm> {
        let mut algorithms = Vec::new();
        if self.checksum.value().is_some() {
            algorithms.push(Algorithm::Md5);
        }
        if self.os_hash_value.value().is_some()
            && let Some(a) = self.os_hash_algorithm()
            && !algorithms.contains(&a)
        {
            algorithms.push(a);
        }
        algorithms
    }
}

/// Lower-case hex digests of empty input, one per algorithm vmimage computes. A record whose
/// digest is one of these describes no bytes: IMS fills `checksum` with the MD5 one (seeds 003,
/// 004), and the reference notes the SHA-512 one as a placeholder too.
pub const EMPTY_INPUT_DIGESTS: [(Algorithm, &str); 6] = [
    (Algorithm::Md5, "d41d8cd98f00b204e9800998ecf8427e"),
    (Algorithm::Sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    (
        Algorithm::Sha224,
        "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f",
    ),
    (
        Algorithm::Sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
    (
        Algorithm::Sha384,
        "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b",
    ),
    (
        Algorithm::Sha512,
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
    ),
];

/// If `hex` (lower-case) is the digest of empty input for some algorithm, says which.
pub fn empty_input_placeholder(hex: &str) -> Option<&'static str> {
    EMPTY_INPUT_DIGESTS
        .iter()
        .find(|(_, d)| *d == hex)
        .map(|(a, _)| match a {
            Algorithm::Md5 => "d41d8cd98f00b204e9800998ecf8427e (the MD5 of empty input)",
            Algorithm::Sha1 => "the SHA-1 of empty input",
            Algorithm::Sha224 => "the SHA-224 of empty input",
            Algorithm::Sha256 => "the SHA-256 of empty input",
            Algorithm::Sha384 => "the SHA-384 of empty input",
            Algorithm::Sha512 => "the SHA-512 of empty input (cf83e135...927da3e)",
        })
}

/// Normalises a recorded hex digest: trimmed, lower-case, checked to be `expected_len` hex
/// digits (`None` accepts any even length of a supported algorithm), and turned into an
/// [`Absence::Placeholder`] when it is a digest of empty input.
pub fn normalise_digest(raw: Recorded<String>, expected_len: Option<usize>) -> Recorded<String> {
    match raw {
        Recorded::Value(s) => {
            let hex = s.trim().to_ascii_lowercase();
            if hex.is_empty() {
                return Recorded::Absent(Absence::Empty);
            }
            let length_ok = match expected_len {
                Some(n) => hex.len() == n,
                None => Algorithm::ALL
                    .into_iter()
                    .any(|a| a.output_len() * 2 == hex.len()),
            };
            if !length_ok || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Recorded::Invalid(s);
            }
            match empty_input_placeholder(&hex) {
                Some(what) => Recorded::Absent(Absence::Placeholder { what }),
                None => Recorded::Value(hex),
            }
        }
        other => other,
    }
}

/// Normalises a recorded format or status name: trimmed and lower-case.
pub fn normalise_name(raw: Recorded<String>) -> Recorded<String> {
    match raw {
        Recorded::Value(s) => {
            let t = s.trim().to_ascii_lowercase();
            if t.is_empty() {
                Recorded::Absent(Absence::Empty)
            } else {
                Recorded::Value(t)
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestSet;

    #[test]
    fn empty_input_digests_are_what_the_digest_engine_computes_for_nothing() {
        for (algorithm, hex) in EMPTY_INPUT_DIGESTS {
            let digests = DigestSet::new(&[algorithm]).finish();
            assert_eq!(
                digests.get(algorithm).map(|d| d.hex()).as_deref(),
                Some(hex),
                "{algorithm}"
            );
        }
    }

    #[test]
    fn a_digest_of_empty_input_is_a_placeholder_not_a_value() {
        let r = normalise_digest(
            Recorded::Value("D41D8CD98F00B204E9800998ECF8427E".into()),
            Some(32),
        );
        assert!(matches!(r, Recorded::Absent(Absence::Placeholder { .. })));
    }

    #[test]
    fn a_digest_of_the_wrong_length_or_alphabet_is_invalid() {
        assert!(matches!(
            normalise_digest(Recorded::Value("abc".into()), Some(32)),
            Recorded::Invalid(_)
        ));
        assert!(matches!(
            normalise_digest(Recorded::Value("z".repeat(32)), Some(32)),
            Recorded::Invalid(_)
        ));
        assert_eq!(
            normalise_digest(Recorded::Value("  ".into()), Some(32)),
            Recorded::Absent(Absence::Empty)
        );
    }

    #[test]
    fn the_os_hash_algorithm_is_inferred_from_the_value_length_only_when_undeclared() {
        let mut r = ImageRecord::empty(RecordSource::Glance);
        r.os_hash_value = Recorded::Value("a".repeat(64));
        assert_eq!(r.os_hash_algorithm(), Some(Algorithm::Sha256));
        r.os_hash_algo = Recorded::Value("sha3_512".into());
        assert_eq!(r.os_hash_algorithm(), None);
        r.os_hash_algo = Recorded::Value("SHA512".into());
        assert_eq!(r.os_hash_algorithm(), Some(Algorithm::Sha512));
    }
}
