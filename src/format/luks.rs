//! LUKS version 1 headers, in a raw LUKS container (QEMU's `luks` driver) or inside a qcow2
//! image (`encrypt.format=luks`), read the way QEMU's `crypto/block-luks.c` reads them
//! without a key (`QCRYPTO_BLOCK_OPEN_NO_IO`, which is what `qemu-img info` does).
//!
//! The 592-byte big-endian header (cryptsetup's "LUKS On-Disk Format Specification" 1.2.1)
//! names the cipher, mode, IV generator and hash as strings, and describes eight key slots.
//! [`LuksHeader::parse`] applies QEMU's `qcrypto_block_luks_check_header()` and
//! `qcrypto_block_luks_parse_header()`, and [`LuksHeader::info`] builds what
//! `qcrypto_block_luks_get_info()` reports. Nothing is decrypted.

use std::io;

use serde::Serialize;

use super::bytes::{be16, be32};
use super::{FormatReport, FormatSpecific, Probe, c_string};
use crate::safety::{Check, Finding, Rule};
use crate::source::ReadAt;

const HEADER_LENGTH: Rule = Rule::error(
    "luks.header-length",
    Check::Truncated,
    "the LUKS header is shorter than its 592 bytes",
);
const MAGIC_RULE: Rule = Rule::error(
    "luks.magic",
    Check::InvalidHeader,
    "a LUKS header (inside a qcow2 image) does not start with `LUKS\\xba\\xbe`",
);
const VERSION_RULE: Rule = Rule::error(
    "luks.version",
    Check::UnsupportedVersion,
    "the LUKS version is not 1: QEMU cannot open LUKS2",
);
const STRING_FIELD: Rule = Rule::error(
    "luks.string-field",
    Check::InvalidHeader,
    "the cipher name, cipher mode or hash spec field is not NUL-terminated",
);
const PAYLOAD_OVERLAPS_HEADER: Rule = Rule::error(
    "luks.payload-overlaps-header",
    Check::InvalidHeader,
    "the payload offset lies inside the header's 4 KiB",
);
const MASTER_KEY_ITERATIONS: Rule = Rule::error(
    "luks.master-key-iterations",
    Check::InvalidHeader,
    "the master key iteration count is zero",
);
const SLOT_STRIPES: Rule = Rule::error(
    "luks.slot-stripes",
    Check::InvalidHeader,
    "a key slot's anti-forensic stripe count is not 4000",
);
const SLOT_STATE: Rule = Rule::error(
    "luks.slot-state",
    Check::InvalidHeader,
    "a key slot's state is neither enabled (0x00ac71f3) nor disabled (0x0000dead)",
);
const SLOT_ITERATIONS: Rule = Rule::error(
    "luks.slot-iterations",
    Check::InvalidHeader,
    "an enabled key slot has an iteration count of zero",
);
const SLOT_OVERLAPS_HEADER: Rule = Rule::error(
    "luks.slot-overlaps-header",
    Check::InvalidHeader,
    "a key slot's key material starts inside the header",
);
const SLOT_OVERLAPS_PAYLOAD: Rule = Rule::error(
    "luks.slot-overlaps-payload",
    Check::InvalidHeader,
    "a key slot's key material runs into the payload",
);
const SLOTS_OVERLAP: Rule = Rule::error(
    "luks.slots-overlap",
    Check::InvalidHeader,
    "the key material of two key slots overlaps",
);
const CIPHER_MODE_SYNTAX: Rule = Rule::error(
    "luks.cipher-mode-syntax",
    Check::InvalidHeader,
    "the cipher mode is not of the form `<mode>-<ivgen>[:<hash>]`",
);
const HASH: Rule = Rule::error(
    "luks.hash",
    Check::InvalidHeader,
    "the hash spec or the IV generator's hash is not a hash QEMU knows",
);
const CIPHER_MODE: Rule = Rule::error(
    "luks.cipher-mode",
    Check::InvalidHeader,
    "the cipher mode is not ecb, cbc, xts or ctr",
);
const IVGEN: Rule = Rule::error(
    "luks.ivgen",
    Check::InvalidHeader,
    "the IV generator is not plain, plain64 or essiv",
);
const CIPHER: Rule = Rule::error(
    "luks.cipher",
    Check::InvalidHeader,
    "the cipher name with the master key size is not a cipher QEMU knows",
);
const ESSIV_HASH_MISSING: Rule = Rule::error(
    "luks.essiv-hash-missing",
    Check::InvalidHeader,
    "the essiv IV generator names no hash",
);
const ESSIV_KEY_SIZE: Rule = Rule::error(
    "luks.essiv-key-size",
    Check::InvalidHeader,
    "the essiv hash's digest length is no key size of the cipher's family",
);
const ENCRYPTED: Rule = Rule::warning(
    "luks.encrypted",
    Check::Encrypted,
    "the file is a LUKS container: the cloud needs the key to boot it",
);
const PAYLOAD_PAST_EOF: Rule = Rule::error(
    "luks.payload-past-eof",
    Check::Truncated,
    "the payload offset lies past the end of the file",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[
    HEADER_LENGTH,
    MAGIC_RULE,
    VERSION_RULE,
    STRING_FIELD,
    PAYLOAD_OVERLAPS_HEADER,
    MASTER_KEY_ITERATIONS,
    SLOT_STRIPES,
    SLOT_STATE,
    SLOT_ITERATIONS,
    SLOT_OVERLAPS_HEADER,
    SLOT_OVERLAPS_PAYLOAD,
    SLOTS_OVERLAP,
    CIPHER_MODE_SYNTAX,
    HASH,
    CIPHER_MODE,
    IVGEN,
    CIPHER,
    ESSIV_HASH_MISSING,
    ESSIV_KEY_SIZE,
    ENCRYPTED,
    PAYLOAD_PAST_EOF,
];

/// `LUKS\xba\xbe`.
pub const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// The only version QEMU reads.
const VERSION: u16 = 1;
/// The size of the binary header (`QCryptoBlockLUKSHeader`).
pub const HEADER_LEN: usize = 592;
/// Sector size of key material and payload offsets.
const SECTOR: u64 = 512;
/// Key material starts after this many bytes (`QCRYPTO_BLOCK_LUKS_KEY_SLOT_OFFSET`).
const KEY_SLOT_OFFSET: u64 = 4096;
/// Number of key slots.
const NUM_KEY_SLOTS: usize = 8;
/// The only anti-forensic stripe count QEMU accepts (`QCRYPTO_BLOCK_LUKS_STRIPES`).
const STRIPES: u32 = 4000;
/// Key slot states.
const SLOT_ENABLED: u32 = 0x00ac_71f3;
const SLOT_DISABLED: u32 = 0x0000_dead;

/// Header field offsets.
mod off {
    pub const VERSION: usize = 6;
    pub const CIPHER_NAME: usize = 8;
    pub const CIPHER_MODE: usize = 40;
    pub const HASH_SPEC: usize = 72;
    pub const STRING_LEN: usize = 32;
    pub const PAYLOAD_OFFSET: usize = 104;
    pub const KEY_BYTES: usize = 108;
    pub const MASTER_KEY_ITERATIONS: usize = 164;
    pub const UUID: usize = 168;
    pub const UUID_LEN: usize = 40;
    pub const KEY_SLOTS: usize = 208;
    pub const KEY_SLOT_LEN: usize = 48;
    /// Within a key slot.
    pub const SLOT_ACTIVE: usize = 0;
    pub const SLOT_ITERATIONS: usize = 4;
    pub const SLOT_KEY_OFFSET: usize = 40;
    pub const SLOT_STRIPES: usize = 44;
}

/// Why a LUKS header cannot be used, in QEMU's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LuksError {
    /// Fewer than 592 bytes.
    #[error("the LUKS header is {0} bytes, shorter than 592")]
    TooShort(usize),
    /// The magic is not `LUKS\xba\xbe`.
    #[error("the LUKS magic is missing")]
    BadMagic,
    /// A version other than 1 (LUKS2 headers are JSON-based; QEMU does not read them).
    #[error("the LUKS version is {0}; only LUKS1 is supported (QEMU cannot open LUKS2)")]
    UnsupportedVersion(u16),
    /// Any other header field out of range: the rule it breaks, and what was found.
    #[error("{1}")]
    Invalid(Rule, String),
}

/// One key slot, as `qemu-img info` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LuksSlot {
    /// Whether the slot holds a key.
    pub active: bool,
    /// PBKDF2 iterations (active slots only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iters: Option<u32>,
    /// Anti-forensic stripes (active slots only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripes: Option<u32>,
    /// Offset of the key material in bytes.
    pub key_offset: u64,
}

/// `qemu-img info`'s LUKS `format-specific.data` (QAPI `QCryptoBlockInfoLUKS`), also nested in
/// a qcow2 image's `encrypt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LuksSpecific {
    /// Cipher algorithm, QEMU's spelling (`aes-256`).
    pub cipher_alg: String,
    /// Cipher mode (`xts`, `cbc`, ...).
    pub cipher_mode: String,
    /// IV generator (`plain64`, `essiv`, ...).
    pub ivgen_alg: String,
    /// IV generator hash, for `essiv` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivgen_hash_alg: Option<String>,
    /// PBKDF2 hash.
    pub hash_alg: String,
    /// Whether the header is detached from the payload (payload offset 0).
    pub detached_header: bool,
    /// Offset of the encrypted payload in bytes.
    pub payload_offset: u64,
    /// PBKDF2 iterations of the master key digest.
    pub master_key_iters: u32,
    /// Volume UUID.
    pub uuid: String,
    /// The eight key slots.
    pub slots: Vec<LuksSlot>,
}

/// A validated LUKS1 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksHeader {
    info: LuksSpecific,
}

/// Cipher names QEMU maps to QAPI algorithms, with the key sizes each allows
/// (`qcrypto_block_luks_cipher_name_map`).
const CIPHERS: &[(&str, &[(u32, &str)])] = &[
    ("aes", &[(16, "aes-128"), (24, "aes-192"), (32, "aes-256")]),
    ("cast5", &[(16, "cast5-128")]),
    (
        "serpent",
        &[
            (16, "serpent-128"),
            (24, "serpent-192"),
            (32, "serpent-256"),
        ],
    ),
    (
        "twofish",
        &[
            (16, "twofish-128"),
            (24, "twofish-192"),
            (32, "twofish-256"),
        ],
    ),
    ("sm4", &[(16, "sm4")]),
];
/// QAPI `QCryptoCipherMode`.
const CIPHER_MODES: &[&str] = &["ecb", "cbc", "xts", "ctr"];
/// QAPI `QCryptoIVGenAlgo`.
const IVGENS: &[&str] = &["plain", "plain64", "essiv"];
/// QAPI `QCryptoHashAlgo`, with digest lengths (for ESSIV).
const HASHES: &[(&str, u32)] = &[
    ("md5", 16),
    ("sha1", 20),
    ("sha224", 28),
    ("sha256", 32),
    ("sha384", 48),
    ("sha512", 64),
    ("ripemd160", 20),
    ("sm3", 32),
];

fn invalid(rule: Rule, detail: impl Into<String>) -> LuksError {
    LuksError::Invalid(rule, detail.into())
}

fn hash_digest_len(name: &str) -> Result<u32, LuksError> {
    HASHES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, len)| *len)
        .ok_or_else(|| {
            invalid(
                HASH,
                format!("the LUKS hash algorithm {name:?} is not supported"),
            )
        })
}

/// The NUL-terminated string in a 32-byte header field, or why it is not one.
fn string_field(b: &[u8], at: usize, what: &str) -> Result<String, LuksError> {
    let raw = &b[at..at + off::STRING_LEN];
    if !raw.contains(&0) {
        return Err(invalid(
            STRING_FIELD,
            format!("the LUKS {what} is not NUL-terminated"),
        ));
    }
    Ok(c_string(raw))
}

/// `qcrypto_block_luks_splitkeylen_sectors()`: sectors of key material per slot, aligned to
/// the header size, as cryptsetup lays them out.
fn split_key_sectors(key_bytes: u32, stripes: u32) -> u64 {
    let header_sectors = KEY_SLOT_OFFSET / SECTOR;
    (u64::from(key_bytes) * u64::from(stripes))
        .div_ceil(SECTOR)
        .next_multiple_of(header_sectors)
}

impl LuksHeader {
    /// Parses and validates a LUKS1 header from its first [`HEADER_LEN`] bytes (extra bytes
    /// are ignored), applying every check QEMU makes before it would ask for a key.
    pub fn parse(bytes: &[u8]) -> Result<Self, LuksError> {
        let b = bytes
            .get(..HEADER_LEN)
            .ok_or(LuksError::TooShort(bytes.len()))?;
        if !b.starts_with(MAGIC) {
            return Err(LuksError::BadMagic);
        }
        let version = be16(b, off::VERSION);
        if version != VERSION {
            return Err(LuksError::UnsupportedVersion(version));
        }
        let cipher_name = string_field(b, off::CIPHER_NAME, "cipher name")?;
        let cipher_mode_spec = string_field(b, off::CIPHER_MODE, "cipher mode")?;
        let hash_spec = string_field(b, off::HASH_SPEC, "hash spec")?;
        let payload_sector = be32(b, off::PAYLOAD_OFFSET);
        let key_bytes = be32(b, off::KEY_BYTES);
        let master_key_iters = be32(b, off::MASTER_KEY_ITERATIONS);

        let header_sectors = KEY_SLOT_OFFSET / SECTOR;
        if u64::from(payload_sector) < header_sectors {
            return Err(invalid(
                PAYLOAD_OVERLAPS_HEADER,
                format!("the LUKS payload offset (sector {payload_sector}) overlaps the header"),
            ));
        }
        if master_key_iters == 0 {
            return Err(invalid(
                MASTER_KEY_ITERATIONS,
                "the LUKS master key iteration count is zero",
            ));
        }
        let slots = Self::check_slots(b, key_bytes, payload_sector)?;

        let (ivgen_alg, ivgen_hash_alg, cipher_mode) =
            Self::parse_mode(&cipher_mode_spec, &hash_spec)?;
        let cipher_alg = Self::cipher_alg(&cipher_name, &cipher_mode, key_bytes)?;
        if ivgen_alg == "essiv" {
            let hash = ivgen_hash_alg.as_deref().ok_or_else(|| {
                invalid(
                    ESSIV_HASH_MISSING,
                    "the LUKS essiv IV generator names no hash",
                )
            })?;
            Self::check_essiv(&cipher_name, &cipher_alg, hash)?;
        }

        let payload_offset = u64::from(payload_sector) * SECTOR;
        Ok(Self {
            info: LuksSpecific {
                cipher_alg,
                cipher_mode,
                ivgen_hash_alg: if ivgen_alg == "essiv" {
                    ivgen_hash_alg
                } else {
                    None
                },
                ivgen_alg,
                hash_alg: hash_spec,
                detached_header: payload_offset == 0,
                payload_offset,
                master_key_iters,
                uuid: c_string(&b[off::UUID..off::UUID + off::UUID_LEN]),
                slots,
            },
        })
    }

    /// The key slot checks of `qcrypto_block_luks_check_header()`.
    fn check_slots(
        b: &[u8],
        key_bytes: u32,
        payload_sector: u32,
    ) -> Result<Vec<LuksSlot>, LuksError> {
        let header_sectors = KEY_SLOT_OFFSET / SECTOR;
        let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(NUM_KEY_SLOTS);
        let mut slots = Vec::with_capacity(NUM_KEY_SLOTS);
        for i in 0..NUM_KEY_SLOTS {
            let s = off::KEY_SLOTS + i * off::KEY_SLOT_LEN;
            let active = be32(b, s + off::SLOT_ACTIVE);
            let iterations = be32(b, s + off::SLOT_ITERATIONS);
            let start = u64::from(be32(b, s + off::SLOT_KEY_OFFSET));
            let stripes = be32(b, s + off::SLOT_STRIPES);
            let len = split_key_sectors(key_bytes, stripes);
            if stripes != STRIPES {
                return Err(invalid(
                    SLOT_STRIPES,
                    format!("LUKS key slot {i} has {stripes} stripes, not {STRIPES}"),
                ));
            }
            if active != SLOT_ENABLED && active != SLOT_DISABLED {
                return Err(invalid(
                    SLOT_STATE,
                    format!(
                        "LUKS key slot {i} has state {active:#010x}, neither enabled nor disabled"
                    ),
                ));
            }
            if active == SLOT_ENABLED && iterations == 0 {
                return Err(invalid(
                    SLOT_ITERATIONS,
                    format!("LUKS key slot {i} is enabled with an iteration count of zero"),
                ));
            }
            if start < header_sectors {
                return Err(invalid(
                    SLOT_OVERLAPS_HEADER,
                    format!("LUKS key slot {i} (sector {start}) overlaps the header"),
                ));
            }
            if start + len > u64::from(payload_sector) {
                return Err(invalid(
                    SLOT_OVERLAPS_PAYLOAD,
                    format!(
                        "LUKS key slot {i} (sectors {start}..{}) overlaps the payload at sector {payload_sector}",
                        start + len
                    ),
                ));
            }
            if let Some(j) = ranges
                .iter()
                .position(|&(s2, l2)| start < s2 + l2 && s2 < start + len)
            {
                return Err(invalid(
                    SLOTS_OVERLAP,
                    format!("LUKS key slots {j} and {i} overlap in the header"),
                ));
            }
            ranges.push((start, len));
            let enabled = active == SLOT_ENABLED;
            slots.push(LuksSlot {
                active: enabled,
                iters: enabled.then_some(iterations),
                stripes: enabled.then_some(stripes),
                key_offset: start * SECTOR,
            });
        }
        Ok(slots)
    }

    /// Splits `<mode>-<ivgen>[:<hash>]` (`xts-plain64`, `cbc-essiv:sha256`) and checks each
    /// part and the PBKDF hash against QEMU's names. Returns (ivgen, ivgen hash, mode).
    fn parse_mode(
        spec: &str,
        hash_spec: &str,
    ) -> Result<(String, Option<String>, String), LuksError> {
        let (mode, ivgen_part) = spec.split_once('-').ok_or_else(|| {
            invalid(
                CIPHER_MODE_SYNTAX,
                format!("the LUKS cipher mode {spec:?} is not of the form <mode>-<ivgen>"),
            )
        })?;
        let (ivgen, ivhash) = match ivgen_part.split_once(':') {
            Some((g, h)) => (g, Some(h)),
            None => (ivgen_part, None),
        };
        // QEMU parses the IV hash (even for ivgens that ignore it) before anything else.
        if let Some(h) = ivhash {
            hash_digest_len(h)?;
        }
        if !CIPHER_MODES.contains(&mode) {
            return Err(invalid(
                CIPHER_MODE,
                format!("the LUKS cipher mode {mode:?} is not supported"),
            ));
        }
        hash_digest_len(hash_spec)?;
        if !IVGENS.contains(&ivgen) {
            return Err(invalid(
                IVGEN,
                format!("the LUKS IV generator {ivgen:?} is not supported"),
            ));
        }
        Ok((
            ivgen.to_string(),
            ivhash.map(str::to_string),
            mode.to_string(),
        ))
    }

    /// `qcrypto_block_luks_cipher_name_lookup()`: the QAPI algorithm for a cipher name and
    /// master key size (halved for XTS, which uses two keys).
    fn cipher_alg(name: &str, mode: &str, key_bytes: u32) -> Result<String, LuksError> {
        let key = if mode == "xts" {
            key_bytes / 2
        } else {
            key_bytes
        };
        CIPHERS
            .iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, sizes)| sizes.iter())
            .find(|(bytes, _)| *bytes == key)
            .map(|(_, alg)| (*alg).to_string())
            .ok_or_else(|| {
                invalid(
                    CIPHER,
                    format!("the LUKS cipher {name:?} with a {key}-byte key is not supported"),
                )
            })
    }

    /// `qcrypto_block_luks_essiv_cipher()`: ESSIV needs a cipher whose key length matches
    /// the hash digest, in the same cipher family.
    fn check_essiv(name: &str, alg: &str, hash: &str) -> Result<(), LuksError> {
        let digest = hash_digest_len(hash)?;
        let key_len = CIPHERS
            .iter()
            .flat_map(|(_, sizes)| sizes.iter())
            .find(|(_, a)| *a == alg)
            .map_or(0, |(k, _)| *k);
        if digest == key_len {
            return Ok(());
        }
        let family_has_digest = matches!(name, "aes" | "serpent" | "twofish")
            && CIPHERS
                .iter()
                .any(|(n, sizes)| *n == name && sizes.iter().any(|(k, _)| *k == digest));
        if family_has_digest {
            Ok(())
        } else {
            Err(invalid(
                ESSIV_KEY_SIZE,
                format!(
                    "the LUKS essiv IV generator cannot use {alg} with the {digest}-byte {hash} digest"
                ),
            ))
        }
    }

    /// What `qemu-img info` reports for this header.
    pub fn info(&self) -> &LuksSpecific {
        &self.info
    }

    /// Offset of the encrypted payload in bytes.
    pub fn payload_offset(&self) -> u64 {
        self.info.payload_offset
    }
}

/// Whether the probe starts with the LUKS magic (any version: a LUKS2 header is reported as
/// an unsupported version rather than taken for raw data).
pub fn detect(probe: &Probe) -> bool {
    probe.head.starts_with(MAGIC)
}

/// Maps a header error to the finding that describes it.
pub(crate) fn finding(e: &LuksError) -> Finding {
    let rule = match e {
        LuksError::TooShort(_) => HEADER_LENGTH,
        LuksError::UnsupportedVersion(_) => VERSION_RULE,
        LuksError::BadMagic => MAGIC_RULE,
        LuksError::Invalid(rule, _) => *rule,
    };
    rule.finding(e.to_string())
}

/// Describes the container as `qemu-img info -f luks` would: the virtual size is the file
/// (in whole sectors) after the payload offset.
pub fn describe<S: ReadAt + ?Sized>(_src: &S, probe: &Probe) -> io::Result<FormatReport> {
    let header = match LuksHeader::parse(&probe.head) {
        Ok(h) => h,
        Err(e) => {
            return Ok(FormatReport {
                encrypted: true,
                findings: vec![finding(&e)],
                ..FormatReport::default()
            });
        }
    };
    let mut report = FormatReport {
        encrypted: true,
        findings: vec![ENCRYPTED.finding(format!(
            "the guest data is LUKS-encrypted ({} {}): the cloud needs the key to boot it",
            header.info.cipher_alg, header.info.cipher_mode
        ))],
        format_specific: Some(FormatSpecific::Luks(header.info.clone())),
        ..FormatReport::default()
    };
    let file_sectors_len = super::raw_virtual_size(probe.len);
    match file_sectors_len.checked_sub(header.payload_offset()) {
        Some(size) => report.virtual_size = Some(size),
        None => report.findings.push(PAYLOAD_PAST_EOF.finding(format!(
            "the LUKS payload offset {:#x} lies past the end of the file ({} bytes)",
            header.payload_offset(),
            probe.len
        ))),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::assert_fires;

    /// A header as `qcrypto_block_luks_create()` writes it with the defaults (aes-256,
    /// xts-plain64, sha256), with slot 0 active.
    pub(crate) fn header() -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[..6].copy_from_slice(MAGIC);
        b[off::VERSION..off::VERSION + 2].copy_from_slice(&1u16.to_be_bytes());
        b[off::CIPHER_NAME..off::CIPHER_NAME + 3].copy_from_slice(b"aes");
        b[off::CIPHER_MODE..off::CIPHER_MODE + 11].copy_from_slice(b"xts-plain64");
        b[off::HASH_SPEC..off::HASH_SPEC + 6].copy_from_slice(b"sha256");
        b[off::PAYLOAD_OFFSET..off::PAYLOAD_OFFSET + 4].copy_from_slice(&4040u32.to_be_bytes());
        b[off::KEY_BYTES..off::KEY_BYTES + 4].copy_from_slice(&64u32.to_be_bytes());
        b[off::MASTER_KEY_ITERATIONS..off::MASTER_KEY_ITERATIONS + 4]
            .copy_from_slice(&1000u32.to_be_bytes());
        b[off::UUID..off::UUID + 36].copy_from_slice(b"b5fe098f-ae9d-4d88-9dfa-01bd7b594cac");
        for i in 0..NUM_KEY_SLOTS {
            let s = off::KEY_SLOTS + i * off::KEY_SLOT_LEN;
            let state = if i == 0 { SLOT_ENABLED } else { SLOT_DISABLED };
            b[s..s + 4].copy_from_slice(&state.to_be_bytes());
            if i == 0 {
                b[s + 4..s + 8].copy_from_slice(&5000u32.to_be_bytes());
            }
            b[s + 40..s + 44].copy_from_slice(&(8 + 504 * i as u32).to_be_bytes());
            b[s + 44..s + 48].copy_from_slice(&STRIPES.to_be_bytes());
        }
        b
    }

    fn put(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }

    fn string(b: &mut [u8], at: usize, s: &str) {
        b[at..at + off::STRING_LEN].fill(0);
        put(b, at, s.as_bytes());
    }

    #[test]
    fn the_default_header_reads_as_qemu_reports_it() {
        let h = LuksHeader::parse(&header()).expect("valid");
        let i = h.info();
        assert_eq!(i.cipher_alg, "aes-256");
        assert_eq!(i.cipher_mode, "xts");
        assert_eq!(i.ivgen_alg, "plain64");
        assert_eq!(i.ivgen_hash_alg, None);
        assert_eq!(i.hash_alg, "sha256");
        assert_eq!(i.payload_offset, 2_068_480);
        assert!(!i.detached_header);
        assert_eq!(i.uuid, "b5fe098f-ae9d-4d88-9dfa-01bd7b594cac");
        assert_eq!(i.slots.len(), 8);
        assert_eq!(i.slots[0].iters, Some(5000));
        assert_eq!(i.slots[0].key_offset, 4096);
        assert_eq!(i.slots[1].iters, None);
        assert_eq!(i.slots[7].key_offset, 1_810_432);
    }

    #[test]
    fn essiv_reports_its_hash_and_checks_the_key_size() {
        let mut b = header();
        string(&mut b, off::CIPHER_MODE, "cbc-essiv:sha256");
        put(&mut b, off::KEY_BYTES, &32u32.to_be_bytes());
        let h = LuksHeader::parse(&b).expect("valid");
        assert_eq!(h.info().cipher_alg, "aes-256");
        assert_eq!(h.info().ivgen_hash_alg.as_deref(), Some("sha256"));
        // aes-128 with essiv:sha256 uses AES-256 for the IVs: allowed.
        put(&mut b, off::KEY_BYTES, &16u32.to_be_bytes());
        assert_eq!(
            LuksHeader::parse(&b).expect("valid").info().cipher_alg,
            "aes-128"
        );
        // cast5 has no 32-byte variant.
        string(&mut b, off::CIPHER_NAME, "cast5");
        assert!(matches!(LuksHeader::parse(&b), Err(LuksError::Invalid(..))));
        // essiv without a hash.
        let mut b = header();
        string(&mut b, off::CIPHER_MODE, "cbc-essiv");
        put(&mut b, off::KEY_BYTES, &32u32.to_be_bytes());
        assert!(matches!(LuksHeader::parse(&b), Err(LuksError::Invalid(..))));
        // plain64 ignores a hash but it must still be a known one.
        let mut b = header();
        string(&mut b, off::CIPHER_MODE, "xts-plain64:sha1");
        assert_eq!(
            LuksHeader::parse(&b).expect("valid").info().ivgen_hash_alg,
            None
        );
        string(&mut b, off::CIPHER_MODE, "xts-plain64:whirlpool");
        assert!(LuksHeader::parse(&b).is_err());
    }

    #[test]
    fn every_header_rule_fires() {
        let broken = |patch: &dyn Fn(&mut Vec<u8>)| {
            let mut b = header();
            patch(&mut b);
            vec![finding(
                &LuksHeader::parse(&b).expect_err("a broken header"),
            )]
        };
        assert_fires(&broken(&|b| b[0] = b'X'), "luks.magic");
        for at in [off::CIPHER_NAME, off::CIPHER_MODE, off::HASH_SPEC] {
            assert_fires(&broken(&|b| b[at..at + 32].fill(b'a')), "luks.string-field");
        }
        let fired = broken(&|b| put(b, off::PAYLOAD_OFFSET, &7u32.to_be_bytes()));
        assert_fires(&fired, "luks.payload-overlaps-header");
        let fired = broken(&|b| put(b, off::PAYLOAD_OFFSET, &4000u32.to_be_bytes()));
        assert_fires(&fired, "luks.slot-overlaps-payload");
        let fired = broken(&|b| put(b, off::MASTER_KEY_ITERATIONS, &0u32.to_be_bytes()));
        assert_fires(&fired, "luks.master-key-iterations");
        let fired = broken(&|b| put(b, off::KEY_SLOTS + 44, &1u32.to_be_bytes()));
        assert_fires(&fired, "luks.slot-stripes");
        let fired = broken(&|b| put(b, off::KEY_SLOTS, &1u32.to_be_bytes()));
        assert_fires(&fired, "luks.slot-state");
        let fired = broken(&|b| put(b, off::KEY_SLOTS + 4, &0u32.to_be_bytes()));
        assert_fires(&fired, "luks.slot-iterations");
        let fired = broken(&|b| put(b, off::KEY_SLOTS + 40, &7u32.to_be_bytes()));
        assert_fires(&fired, "luks.slot-overlaps-header");
        let fired = broken(&|b| put(b, off::KEY_SLOTS + 48 + 40, &8u32.to_be_bytes()));
        assert_fires(&fired, "luks.slots-overlap");
        let fired = broken(&|b| string(b, off::CIPHER_MODE, "xts"));
        assert_fires(&fired, "luks.cipher-mode-syntax");
        let fired = broken(&|b| string(b, off::CIPHER_MODE, "gcm-plain64"));
        assert_fires(&fired, "luks.cipher-mode");
        let fired = broken(&|b| string(b, off::CIPHER_MODE, "xts-benbi"));
        assert_fires(&fired, "luks.ivgen");
        let fired = broken(&|b| string(b, off::HASH_SPEC, "whirlpool"));
        assert_fires(&fired, "luks.hash");
        let fired = broken(&|b| string(b, off::CIPHER_MODE, "xts-plain64:whirlpool"));
        assert_fires(&fired, "luks.hash");
        let fired = broken(&|b| string(b, off::CIPHER_NAME, "blowfish"));
        assert_fires(&fired, "luks.cipher");
        let fired = broken(&|b| put(b, off::KEY_BYTES, &40u32.to_be_bytes()));
        assert_fires(&fired, "luks.cipher");
        let fired = broken(&|b| {
            put(b, off::KEY_BYTES, &32u32.to_be_bytes());
            string(b, off::CIPHER_MODE, "cbc-essiv");
        });
        assert_fires(&fired, "luks.essiv-hash-missing");
        // aes-128 (16-byte key) with ESSIV over SHA-1 (a 20-byte digest, no AES key size).
        let fired = broken(&|b| {
            put(b, off::KEY_BYTES, &16u32.to_be_bytes());
            string(b, off::CIPHER_MODE, "cbc-essiv:sha1");
        });
        assert_fires(&fired, "luks.essiv-key-size");
    }

    #[test]
    fn luks2_and_short_headers_have_their_own_findings() {
        let mut b = header();
        put(&mut b, off::VERSION, &2u16.to_be_bytes());
        let e = LuksHeader::parse(&b).expect_err("luks2");
        assert_eq!(e, LuksError::UnsupportedVersion(2));
        assert_fires(&[finding(&e)], "luks.version");
        for cut in [0, 6, 100, 591] {
            let e = LuksHeader::parse(&header()[..cut]).expect_err("short");
            assert_fires(&[finding(&e)], "luks.header-length");
        }
    }

    #[test]
    fn the_container_size_is_what_follows_the_payload_offset() {
        let mut d = header();
        d.resize(2_068_480 + 1_000_000, 0);
        let r = describe(&d, &Probe::from_bytes(&d)).expect("in-memory");
        assert!(r.encrypted);
        assert_eq!(r.virtual_size, Some(1_000_448));
        assert_eq!(r.findings.len(), 1);
        assert_fires(&r.findings, "luks.encrypted");
        // A payload past the end of the file.
        let d = header();
        let r = describe(&d, &Probe::from_bytes(&d)).expect("in-memory");
        assert_eq!(r.virtual_size, None);
        assert_fires(&r.findings, "luks.payload-past-eof");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x0123_4567_89ab_cdefu64;
        for _ in 0..500 {
            let mut b: Vec<u8> = (0..HEADER_LEN)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            b[..6].copy_from_slice(MAGIC);
            b[6..8].copy_from_slice(&1u16.to_be_bytes());
            let _ = LuksHeader::parse(&b);
        }
    }
}
