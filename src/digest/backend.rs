//! One running digest computation per algorithm, and the implementation chosen for each.
//!
//! Chosen by CPU feature, from measurements on every machine kind the project has run on (a Zen 5
//! and a Zen 4 EPYC; `benches/digest.rs`, `benches/digest-backends/`, docs/benchmarks.md "Speed:
//! hash"): MD5 is this crate's own [`super::md5`] (OpenSSL's speed in Rust); SHA-512 and SHA-384
//! are this crate's [`super::sha512`] where the CPU has AVX2 and BMI (with an AVX-512 message
//! schedule where it also has AVX-512F and VL), else RustCrypto's; SHA-1, SHA-224 and SHA-256 are
//! RustCrypto's `sha1`/`sha2` (which use SHA-NI when the CPU has it). Everything is Rust: a build
//! needs nothing but cargo. The `rustcrypto` feature uses RustCrypto for every
//! algorithm (the unit tests of `md5` and `sha512` check that both give the same digests).

use sha2::Digest as _;

use super::algorithm::Algorithm;

/// A digest computation in progress.
#[derive(Clone)]
pub(crate) enum Hasher {
    #[cfg(not(feature = "rustcrypto"))]
    Md5(super::md5::Md5),
    #[cfg(feature = "rustcrypto")]
    Md5(md5::Md5),
    /// SHA-512 or SHA-384 on the accelerated path.
    Sha512Accel(super::sha512::Sha512),
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
            #[cfg(not(feature = "rustcrypto"))]
            Algorithm::Md5 => Hasher::Md5(super::md5::Md5::new()),
            #[cfg(feature = "rustcrypto")]
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => match accelerated(super::sha512::Sha512::new_384) {
                Some(h) => Hasher::Sha512Accel(h),
                None => Hasher::Sha384(sha2::Sha384::new()),
            },
            Algorithm::Sha512 => match accelerated(super::sha512::Sha512::new_512) {
                Some(h) => Hasher::Sha512Accel(h),
                None => Hasher::Sha512(sha2::Sha512::new()),
            },
        }
    }

    /// Feeds the next bytes.
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha512Accel(h) => h.update(data),
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
            Hasher::Sha512Accel(h) => h.finalize(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// This crate's SHA-512/384 unless the `rustcrypto` feature asks for RustCrypto's.
fn accelerated(new: fn() -> Option<super::sha512::Sha512>) -> Option<super::sha512::Sha512> {
    if cfg!(feature = "rustcrypto") {
        None
    } else {
        new()
    }
}
