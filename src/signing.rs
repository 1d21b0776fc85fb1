//! Glance image signatures: the `img_signature*` properties that Glance checks on upload and
//! Nova on boot (`verify_glance_signatures`), both through the `cursive` library.
//!
//! The scheme (cursive 0.3.1 `signature_utils.py` and `verifiers.py`; openstacksdk's
//! `ImageSigner`, which `openstack image create --sign-key-path` runs):
//! - The signed message is the image file exactly as uploaded, hashed with
//!   `img_signature_hash_method` (`SHA-224`, `SHA-256`, `SHA-384`, `SHA-512`); the signature is
//!   over that digest (`Prehashed`), so it is an ordinary signature of the file's bytes and the
//!   digest can come from the same single read as `checksum` and `os_hash_value`.
//! - `RSA-PSS`: MGF1 with the same hash, salt length the maximum, `emLen - hLen - 2` bytes
//!   (`PSS.MAX_LENGTH`). cursive on `cryptography` 41 and older rejects any other salt length.
//! - `ECC_SECP384R1`, `ECC_SECP521R1`: ECDSA, DER-encoded `(r, s)`. `DSA`: DER as well.
//!   cursive registers no P-256 type, and the binary `SECT*` curves are gone from current
//!   `cryptography`, so those are refused.
//! - `img_signature` is standard base64, padded, without newlines.
//!
//! The cryptography is OpenSSL's (the `openssl` crate): the same library `cryptography` wraps,
//! so a combination such as ECDSA P-521 over SHA-256 (the digest truncated as FIPS 186-4 §6.4
//! says) is computed exactly as the verifier computes it.

use std::fmt;

use openssl::md::{Md, MdRef};
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::RsaPssSaltlen;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509StoreContext};
use serde::Serialize;

use crate::digest::{Algorithm, Digests};

/// Glance's documentation (`doc/source/user/signature.rst`) gives `img_signature` a
/// 255-character limit, from the Image API v1 era; an RSA-2048 signature is 344 characters.
pub const DOCUMENTED_SIGNATURE_LIMIT: usize = 255;

/// The names of the four properties, in the order Glance's documentation lists them.
pub const PROPERTY_NAMES: [&str; 4] = [
    "img_signature",
    "img_signature_hash_method",
    "img_signature_key_type",
    "img_signature_certificate_uuid",
];

/// An `img_signature_key_type` that current cursive registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA with PSS padding, maximum salt length.
    RsaPss,
    /// ECDSA on NIST P-384.
    EccSecp384r1,
    /// ECDSA on NIST P-521.
    EccSecp521r1,
    /// DSA.
    Dsa,
}

impl KeyType {
    /// Every type, in the order the messages list them.
    pub const ALL: [KeyType; 4] = [
        KeyType::RsaPss,
        KeyType::EccSecp384r1,
        KeyType::EccSecp521r1,
        KeyType::Dsa,
    ];

    /// The property value.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::RsaPss => "RSA-PSS",
            KeyType::EccSecp384r1 => "ECC_SECP384R1",
            KeyType::EccSecp521r1 => "ECC_SECP521R1",
            KeyType::Dsa => "DSA",
        }
    }

    /// Parses a property value; exact, as cursive's `SignatureKeyType.lookup`.
    pub fn from_name(name: &str) -> Option<Self> {
        KeyType::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The type a public or private key signs as, or why cursive cannot verify it.
    fn of_key<T: HasPublic>(key: &PKeyRef<T>) -> Result<Self, SignError> {
        match key.id() {
            Id::RSA => Ok(KeyType::RsaPss),
            Id::DSA => Ok(KeyType::Dsa),
            Id::EC => {
                let ec = key.ec_key().map_err(crypto)?;
                match ec.group().curve_name() {
                    Some(Nid::SECP384R1) => Ok(KeyType::EccSecp384r1),
                    Some(Nid::SECP521R1) => Ok(KeyType::EccSecp521r1),
                    Some(Nid::X9_62_PRIME256V1) => Err(SignError::UnsupportedKey(
                        "an ECDSA P-256 key: cursive registers no ECC_SECP256R1 key type, only ECC_SECP384R1 and ECC_SECP521R1".into(),
                    )),
                    Some(nid) => Err(SignError::UnsupportedKey(format!(
                        "an ECDSA key on curve {}: cursive verifies P-384 (ECC_SECP384R1) and P-521 (ECC_SECP521R1) only",
                        nid.short_name().unwrap_or("(unnamed)")
                    ))),
                    None => Err(SignError::UnsupportedKey(
                        "an ECDSA key with explicit curve parameters: cursive verifies the named curves P-384 and P-521 only".into(),
                    )),
                }
            }
            Id::RSA_PSS => Err(SignError::UnsupportedKey(
                "an RSASSA-PSS-restricted key: cursive expects a plain RSA key (rsaEncryption) and applies PSS itself".into(),
            )),
            other => Err(SignError::UnsupportedKey(format!(
                "a key of type {} (OpenSSL id {}): Glance signatures are RSA-PSS, ECDSA P-384/P-521 or DSA",
                Nid::from_raw(other.as_raw())
                    .short_name()
                    .unwrap_or("unknown"),
                other.as_raw()
            ))),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `img_signature_hash_method` names cursive accepts (its `HASH_METHODS`), with the
/// digest algorithm each means.
pub const HASH_METHODS: [(&str, Algorithm); 4] = [
    ("SHA-224", Algorithm::Sha224),
    ("SHA-256", Algorithm::Sha256),
    ("SHA-384", Algorithm::Sha384),
    ("SHA-512", Algorithm::Sha512),
];

/// Parses an `img_signature_hash_method`; exact, as cursive's `get_hash_method`.
pub fn parse_hash_method(name: &str) -> Option<Algorithm> {
    HASH_METHODS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
}

/// The `img_signature_hash_method` for `algorithm`, when cursive has one.
pub fn hash_method_name(algorithm: Algorithm) -> Option<&'static str> {
    HASH_METHODS
        .iter()
        .find(|(_, a)| *a == algorithm)
        .map(|(n, _)| *n)
}

/// Why a key, certificate or signature could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key is encrypted and no passphrase was given.
    #[error(
        "the private key is encrypted: give its passphrase with --passphrase-file FILE or in the environment variable VMIMAGE_KEY_PASSPHRASE"
    )]
    PassphraseNeeded,
    /// The PEM could not be read as a private key (wrong passphrase, not a key, damaged).
    #[error("cannot read the private key ({0}); expected a PEM private key")]
    BadKey(String),
    /// A key cursive cannot verify signatures of.
    #[error("the key is {0}")]
    UnsupportedKey(String),
    /// A certificate that cannot be read.
    #[error("cannot read the certificate ({0}); expected an X.509 certificate in PEM or DER")]
    BadCertificate(String),
    /// A combination of key and hash that cannot be signed exactly as cursive verifies.
    #[error("{0}")]
    Unsupported(String),
    /// OpenSSL failed.
    #[error("OpenSSL failed: {0}")]
    Crypto(String),
    /// The digest the hash method names was not among those computed.
    #[error("the {0} digest to sign was not computed")]
    DigestMissing(Algorithm),
}

fn crypto(e: openssl::error::ErrorStack) -> SignError {
    SignError::Crypto(describe(&e))
}

/// OpenSSL's reasons, without the library and function codes.
fn describe(e: &openssl::error::ErrorStack) -> String {
    let reasons: Vec<&str> = e.errors().iter().filter_map(|e| e.reason()).collect();
    if reasons.is_empty() {
        "no reason given".into()
    } else {
        reasons.join("; ")
    }
}

fn message_digest(algorithm: Algorithm) -> Result<&'static MdRef, SignError> {
    match algorithm {
        Algorithm::Sha224 => Ok(Md::sha224()),
        Algorithm::Sha256 => Ok(Md::sha256()),
        Algorithm::Sha384 => Ok(Md::sha384()),
        Algorithm::Sha512 => Ok(Md::sha512()),
        other => Err(SignError::Unsupported(format!(
            "{other} is not a Glance signature hash method (SHA-224, SHA-256, SHA-384, SHA-512)"
        ))),
    }
}

/// The RSA-PSS maximum salt length for a `modulus_bits` key and an `h_len`-byte hash:
/// `emLen - hLen - 2` with `emLen = ceil((modBits - 1) / 8)` (RFC 8017 §9.1.1), which is
/// what `PSS.MAX_LENGTH` signs and what cursive on `cryptography` 41 requires.
pub fn pss_max_salt_len(modulus_bits: u32, h_len: usize) -> Option<usize> {
    let em_len = (modulus_bits as usize).checked_sub(1)?.div_ceil(8);
    em_len.checked_sub(h_len)?.checked_sub(2)
}

/// A private key to sign with.
#[derive(Clone)]
pub struct SigningKey {
    key: PKey<Private>,
    key_type: KeyType,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PEM private key (PKCS#8, PKCS#1, SEC1 or DSA; encrypted ones with
    /// `passphrase`). The key type comes from the key.
    pub fn from_pem(pem: &[u8], passphrase: Option<&[u8]>) -> Result<Self, SignError> {
        let mut asked = false;
        let key = PKey::private_key_from_pem_callback(pem, |buf| {
            asked = true;
            match passphrase {
                Some(p) if p.len() <= buf.len() => {
                    buf[..p.len()].copy_from_slice(p);
                    Ok(p.len())
                }
                // No passphrase (or one longer than OpenSSL's buffer): fail the decryption
                // rather than let OpenSSL prompt on the terminal.
                _ => Ok(0),
            }
        });
        let key = match key {
            Ok(k) => k,
            Err(_) if asked && passphrase.is_none() => return Err(SignError::PassphraseNeeded),
            Err(e) if asked => {
                return Err(SignError::BadKey(format!(
                    "wrong passphrase, or a damaged key: {}",
                    describe(&e)
                )));
            }
            Err(e) => return Err(SignError::BadKey(describe(&e))),
        };
        let key_type = KeyType::of_key(&key)?;
        Ok(Self { key, key_type })
    }

    /// The `img_signature_key_type` this key signs as.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Signs the digest of the image computed with `algorithm` (which must be one of
    /// [`HASH_METHODS`]), returning the raw signature (DER for ECDSA and DSA).
    pub fn sign_digest(&self, algorithm: Algorithm, digest: &[u8]) -> Result<Vec<u8>, SignError> {
        let md = message_digest(algorithm)?;
        if digest.len() != md.size() {
            return Err(SignError::Unsupported(format!(
                "a {algorithm} digest has {} bytes, not {}",
                md.size(),
                digest.len()
            )));
        }
        let mut ctx = PkeyCtx::new(&self.key).map_err(crypto)?;
        ctx.sign_init().map_err(crypto)?;
        ctx.set_signature_md(md).map_err(crypto)?;
        if self.key_type == KeyType::RsaPss {
            let salt = pss_max_salt_len(self.key.bits(), md.size()).ok_or_else(|| {
                SignError::Unsupported(format!(
                    "a {}-bit RSA key is too short for RSA-PSS with {}",
                    self.key.bits(),
                    hash_method_name(algorithm).unwrap_or("this hash")
                ))
            })?;
            set_pss(&mut ctx, md, salt)?;
        }
        let mut signature = Vec::new();
        ctx.sign_to_vec(digest, &mut signature).map_err(crypto)?;
        Ok(signature)
    }
}

/// A salt length that means "recover it from the signature" when verifying.
const PSS_SALT_AUTO: usize = usize::MAX;

fn set_pss<T>(ctx: &mut PkeyCtx<T>, md: &MdRef, salt: usize) -> Result<(), SignError> {
    let salt = if salt == PSS_SALT_AUTO {
        // RSA_PSS_SALTLEN_AUTO (-2) when verifying (OpenSSL 3 `EVP_PKEY_CTX_set_rsa_pss_saltlen`).
        RsaPssSaltlen::MAXIMUM_LENGTH
    } else {
        RsaPssSaltlen::custom(
            i32::try_from(salt)
                .map_err(|_| SignError::Unsupported("the RSA key is too large".into()))?,
        )
    };
    ctx.set_rsa_padding(Padding::PKCS1_PSS).map_err(crypto)?;
    ctx.set_rsa_mgf1_md(md).map_err(crypto)?;
    ctx.set_rsa_pss_saltlen(salt).map_err(crypto)?;
    Ok(())
}

/// A key with the choices Glance's properties record: what signs an image from the digests of
/// the single read that hashes it (`vmimage sign`, `metadata --sign-key`, and
/// `convert --metadata --sign-key` over the output as it is written).
#[derive(Debug, Clone)]
pub struct ImageSigner {
    /// The private key; the key type comes from it.
    pub key: SigningKey,
    /// The hash method: the digest that is signed.
    pub algorithm: Algorithm,
    /// Barbican's ID of the signing certificate, when known.
    pub certificate_uuid: Option<String>,
}

impl ImageSigner {
    /// Adds the digest the signature needs to `algorithms` (the single read's), unless it is
    /// there already.
    pub fn add_algorithm_to(&self, algorithms: &mut Vec<Algorithm>) {
        if !algorithms.contains(&self.algorithm) {
            algorithms.push(self.algorithm);
        }
    }

    /// Signs the image whose digests are `digests`.
    pub fn sign(&self, digests: &Digests) -> Result<SignatureProperties, SignError> {
        let digest = digests
            .get(self.algorithm)
            .ok_or(SignError::DigestMissing(self.algorithm))?;
        SignatureProperties::sign(
            &self.key,
            self.algorithm,
            &digest.bytes,
            self.certificate_uuid.as_deref(),
        )
    }
}

/// The four properties, as `vmimage sign` prints them and the Glance body carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureProperties {
    /// Standard base64 of the raw signature, padded, without newlines.
    pub img_signature: String,
    /// `SHA-224`, `SHA-256`, `SHA-384` or `SHA-512`.
    pub img_signature_hash_method: String,
    /// `RSA-PSS`, `ECC_SECP384R1`, `ECC_SECP521R1` or `DSA`.
    pub img_signature_key_type: String,
    /// The signing certificate's ID in Barbican, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub img_signature_certificate_uuid: Option<String>,
}

impl SignatureProperties {
    /// Signs `digest` (the file's digest with `algorithm`) with `key`.
    pub fn sign(
        key: &SigningKey,
        algorithm: Algorithm,
        digest: &[u8],
        certificate_uuid: Option<&str>,
    ) -> Result<Self, SignError> {
        let method = hash_method_name(algorithm).ok_or_else(|| {
            SignError::Unsupported(format!(
                "{algorithm} is not a Glance signature hash method (SHA-224, SHA-256, SHA-384, SHA-512)"
            ))
        })?;
        let signature = key.sign_digest(algorithm, digest)?;
        Ok(Self {
            img_signature: base64_encode(&signature),
            img_signature_hash_method: method.into(),
            img_signature_key_type: key.key_type().name().into(),
            img_signature_certificate_uuid: certificate_uuid.map(str::to_string),
        })
    }

    /// `(name, value)` pairs in [`PROPERTY_NAMES`] order, the certificate ID when present.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("img_signature", self.img_signature.as_str()),
            (
                "img_signature_hash_method",
                self.img_signature_hash_method.as_str(),
            ),
            (
                "img_signature_key_type",
                self.img_signature_key_type.as_str(),
            ),
        ];
        if let Some(uuid) = &self.img_signature_certificate_uuid {
            out.push(("img_signature_certificate_uuid", uuid.as_str()));
        }
        out
    }

    /// True when `img_signature` is longer than Glance's documented limit.
    pub fn exceeds_documented_limit(&self) -> bool {
        self.img_signature.len() > DOCUMENTED_SIGNATURE_LIMIT
    }
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 §4), padded, without line breaks: Python's `b64encode`, which
/// openstacksdk uses.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64_ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard, padded base64 strictly: any other character, a missing or misplaced
/// `=`, or non-zero bits in the padding is an error. (cursive's decoder would skip stray
/// characters; a property written by a tool never has them.)
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| {
        BASE64_ALPHABET
            .iter()
            .position(|&a| a == c)
            .map(|p| p as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let last = bytes.len() / 4 - 1;
    for (i, quad) in bytes.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i != last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        // The bits the padding drops must be zero (RFC 4648 §3.5, canonical encoding).
        if decoded[keep..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&decoded[..keep]);
    }
    Some(out)
}

/// A signing certificate, as Barbican stores it and Nova checks it.
pub struct SigningCertificate {
    cert: X509,
}

impl fmt::Debug for SigningCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningCertificate")
            .field("subject", &self.subject())
            .finish()
    }
}

/// How a signature compared with a file's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMatch {
    /// Valid, as every cursive verifies it.
    Valid,
    /// A valid RSA-PSS signature whose salt is shorter than the maximum: cursive on
    /// `cryptography` 42 and newer accepts it, on 41 and older rejects it.
    ShortSalt {
        /// The salt length the signature carries, in bytes, when it is the digest length.
        salt: Option<usize>,
        /// The maximum, which every verifier accepts.
        max: usize,
    },
    /// Not a signature of this digest with this key.
    Invalid,
}

impl SigningCertificate {
    /// Reads a PEM (the first certificate, text before it allowed) or DER certificate.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, SignError> {
        // A PEM file may start with text (`openssl x509 -text`, `openssl ca` output).
        let is_pem = bytes.windows(10).any(|w| w == b"-----BEGIN");
        let cert = if is_pem {
            X509::from_pem(bytes)
        } else {
            X509::from_der(bytes)
        }
        .map_err(|e| SignError::BadCertificate(describe(&e)))?;
        Ok(Self { cert })
    }

    /// The subject, one line (`CN=..., O=...`).
    pub fn subject(&self) -> String {
        self.cert
            .subject_name()
            .entries()
            .map(|e| {
                let key = e.object().nid().short_name().unwrap_or("?");
                let value = e.data().to_string().unwrap_or_else(|_| "?".into());
                format!("{key}={value}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key type of the certificate's public key, or why no Glance type fits it.
    pub fn key_type(&self) -> Result<KeyType, SignError> {
        let key = self
            .cert
            .public_key()
            .map_err(|e| SignError::BadCertificate(describe(&e)))?;
        KeyType::of_key(&key)
    }

    /// `notBefore` and `notAfter` as OpenSSL prints them (`Jan  1 00:00:00 2026 GMT`).
    pub fn validity(&self) -> (String, String) {
        (
            self.cert.not_before().to_string(),
            self.cert.not_after().to_string(),
        )
    }

    /// Whether now lies within `notBefore..=notAfter` (Nova's `is_within_valid_dates`):
    /// `Ok(())`, or the sentence saying which bound is broken.
    pub fn check_dates(&self) -> Result<(), String> {
        let now = openssl::asn1::Asn1Time::days_from_now(0).map_err(|e| describe(&e))?;
        let (not_before, not_after) = self.validity();
        if self.cert.not_before() > now {
            return Err(format!("the certificate is not valid before {not_before}"));
        }
        if self.cert.not_after() < now {
            return Err(format!("the certificate expired on {not_after}"));
        }
        Ok(())
    }

    /// Checks the certificate's chain to one of `trusted` (a CA bundle), with OpenSSL's
    /// verifier: signatures, validity dates and CA constraints of every link.
    pub fn check_chain(&self, trusted: &CaBundle) -> Result<(), String> {
        let run = || -> Result<Result<(), String>, openssl::error::ErrorStack> {
            let mut store = X509StoreBuilder::new()?;
            for ca in &trusted.certs {
                store.add_cert(ca.clone())?;
            }
            let store = store.build();
            let chain = Stack::new()?;
            let mut ctx = X509StoreContext::new()?;
            ctx.init(&store, &self.cert, &chain, |c| {
                Ok(if c.verify_cert()? {
                    Ok(())
                } else {
                    Err(format!(
                        "the certificate does not chain to --trusted-ca: {} (depth {})",
                        c.error().error_string(),
                        c.error_depth()
                    ))
                })
            })
        };
        run().map_err(|e| format!("the chain could not be checked: {}", describe(&e)))?
    }

    /// Checks `signature` over `digest` (the file's digest with `algorithm`) as cursive's
    /// verifier for `key_type` does.
    pub fn verify_digest(
        &self,
        key_type: KeyType,
        algorithm: Algorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<SignatureMatch, SignError> {
        let key = self
            .cert
            .public_key()
            .map_err(|e| SignError::BadCertificate(describe(&e)))?;
        let md = message_digest(algorithm)?;
        if key_type != KeyType::RsaPss {
            return Ok(if verify_with(&key, md, None, digest, signature)? {
                SignatureMatch::Valid
            } else {
                SignatureMatch::Invalid
            });
        }
        let Some(max) = pss_max_salt_len(key.bits(), md.size()) else {
            return Ok(SignatureMatch::Invalid);
        };
        if verify_with(&key, md, Some(max), digest, signature)? {
            return Ok(SignatureMatch::Valid);
        }
        // cryptography 42+ verifies with OpenSSL's "auto" salt length (recovered from the
        // signature); say so when that is the only way this signature verifies. The digest
        // length, what RustCrypto's `rsa` and `openssl -sigopt rsa_pss_saltlen:digest` use, is
        // tried first to name the salt.
        if verify_with(&key, md, Some(md.size()), digest, signature)? {
            return Ok(SignatureMatch::ShortSalt {
                salt: Some(md.size()),
                max,
            });
        }
        if verify_with(&key, md, Some(PSS_SALT_AUTO), digest, signature)? {
            return Ok(SignatureMatch::ShortSalt { salt: None, max });
        }
        Ok(SignatureMatch::Invalid)
    }
}

fn verify_with(
    key: &PKey<Public>,
    md: &MdRef,
    pss_salt: Option<usize>,
    digest: &[u8],
    signature: &[u8],
) -> Result<bool, SignError> {
    let mut ctx = PkeyCtx::new(key).map_err(crypto)?;
    ctx.verify_init().map_err(crypto)?;
    ctx.set_signature_md(md).map_err(crypto)?;
    if let Some(salt) = pss_salt {
        set_pss(&mut ctx, md, salt)?;
    }
    // OpenSSL reports a malformed signature (bad DER, wrong length) as an error rather than
    // `false`: both mean the signature is not valid.
    Ok(ctx.verify(digest, signature).unwrap_or(false))
}

/// Trusted certificates for the chain check (Nova's `trusted_certificates`).
pub struct CaBundle {
    certs: Vec<X509>,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({} certificates)", self.certs.len())
    }
}

impl CaBundle {
    /// Reads every PEM certificate of a bundle; one at least.
    pub fn from_pem(pem: &[u8]) -> Result<Self, SignError> {
        let certs =
            X509::stack_from_pem(pem).map_err(|e| SignError::BadCertificate(describe(&e)))?;
        if certs.is_empty() {
            return Err(SignError::BadCertificate(
                "no PEM certificate in the bundle".into(),
            ));
        }
        Ok(Self { certs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_what_is_not_canonical() {
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_encode(&data);
            assert!(!text.contains('\n'));
            if len > 0 {
                assert_eq!(base64_decode(&text).as_deref(), Some(&data[..]), "{len}");
            }
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        for bad in [
            "",
            "Zm8",
            "Zm9=",
            "Zm8=Zm8=",
            "Z===",
            "Zm*v",
            "Zm9v\nYmFy",
            "Zm-_",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_pss_maximum_salt_is_em_len_minus_h_len_minus_2() {
        assert_eq!(pss_max_salt_len(2048, 32), Some(222));
        assert_eq!(pss_max_salt_len(1024, 32), Some(94));
        // emLen counts the bits after the top one: 2049 bits still fit 256 bytes, 2050 do not.
        assert_eq!(pss_max_salt_len(2049, 64), Some(256 - 64 - 2));
        assert_eq!(pss_max_salt_len(2050, 64), Some(257 - 64 - 2));
        assert_eq!(pss_max_salt_len(512, 64), None);
        assert_eq!(pss_max_salt_len(0, 64), None);
    }

    #[test]
    fn hash_methods_and_key_types_are_exact_names() {
        assert_eq!(parse_hash_method("SHA-512"), Some(Algorithm::Sha512));
        assert_eq!(parse_hash_method("sha512"), None);
        assert_eq!(parse_hash_method("SHA-1"), None);
        assert_eq!(KeyType::from_name("ECC_SECP256R1"), None);
        assert_eq!(KeyType::from_name("RSA-PSS"), Some(KeyType::RsaPss));
    }
}
