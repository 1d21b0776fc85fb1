//! One running digest computation per algorithm, and the implementation chosen for each.
//!
//! Chosen by measurement (`benches/digest.rs`, README "Speed: hash"): MD5 is this crate's own
//! [`super::md5`] (OpenSSL's speed in safe Rust; RustCrypto's `md-5` with the
//! `rustcrypto-md5` feature), the SHA family is RustCrypto's `sha1`/`sha2` (SHA-NI for SHA-1
//! and SHA-256, AVX2 for SHA-512, detected at run time). Everything is pure Rust: a build
//! needs nothing but cargo.

use sha2::Digest as _;

use super::Algorithm;

/// A digest computation in progress.
#[derive(Clone)]
pub(crate) enum Hasher {
    #[cfg(not(feature = "rustcrypto-md5"))]
    Md5(super::md5::Md5),
    #[cfg(feature = "rustcrypto-md5")]
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh computation of `algorithm`.
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            #[cfg(not(feature = "rustcrypto-md5"))]
            Algorithm::Md5 => Hasher::Md5(super::md5::Md5::new()),
            #[cfg(feature = "rustcrypto-md5")]
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds the next bytes.
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The finished digest.
    pub(crate) fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}
