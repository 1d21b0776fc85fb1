//! Digests of whole files, as cloud image services record them: MD5 for Glance's `checksum`,
//! SHA-512 (by default) for `os_hash_value`, and the other `os_hash_algo` values.
//!
//! [`DigestSet`] feeds one byte stream to several algorithms; [`hash_path`] digests a file in
//! one read. (The one-pass parallel engine lands with the digest work; this first version
//! updates the algorithms in turn on each buffer.)

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::Serialize;

use crate::error::Error;

/// A digest algorithm Glance accepts as `os_hash_algo` (plus MD5 for `checksum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// MD5 (Glance `checksum`).
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512 (Glance's default `os_hash_algo`).
    Sha512,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha224,
        Algorithm::Sha256,
        Algorithm::Sha384,
        Algorithm::Sha512,
    ];

    /// What a cloud records: `checksum` (MD5) and `os_hash_value` (SHA-512).
    pub const DEFAULT: [Algorithm; 2] = [Algorithm::Md5, Algorithm::Sha512];

    /// Lower-case name, as in `os_hash_algo`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha224 => "sha224",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The tag of BSD-style lines (`MD5 (file) = ...`), as coreutils writes it.
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha224 => "SHA224",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha384 => "SHA384",
            Algorithm::Sha512 => "SHA512",
        }
    }

    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha224 => 28,
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    /// Parses a name as written in `os_hash_algo`, `--algo` or a BSD tag (case-insensitive;
    /// `sha-256` and `sha256` are the same).
    pub fn from_name(name: &str) -> Option<Self> {
        let n: String = name
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Algorithm::ALL.into_iter().find(|a| a.name() == n)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One finished digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The raw digest bytes.
    pub bytes: Vec<u8>,
}

impl Digest {
    /// Lower-case hex, as `md5sum` and Glance print it.
    pub fn hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(self.bytes.len() * 2);
        for b in &self.bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(a: Algorithm) -> Self {
        use sha2::Digest as _;
        match a {
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        use sha2::Digest as _;
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

/// Several algorithms fed the same byte stream.
pub struct DigestSet {
    hashers: Vec<(Algorithm, Hasher)>,
    len: u64,
}

impl DigestSet {
    /// A set computing `algorithms` (duplicates are ignored).
    pub fn new(algorithms: &[Algorithm]) -> Self {
        let mut seen = Vec::new();
        for a in algorithms {
            if !seen.contains(a) {
                seen.push(*a);
            }
        }
        Self {
            hashers: seen.into_iter().map(|a| (a, Hasher::new(a))).collect(),
            len: 0,
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, data: &[u8]) {
        for (_, h) in &mut self.hashers {
            h.update(data);
        }
        self.len += data.len() as u64;
    }

    /// Finishes every algorithm.
    pub fn finish(self) -> Digests {
        Digests {
            size: self.len,
            digests: self
                .hashers
                .into_iter()
                .map(|(algorithm, h)| Digest {
                    algorithm,
                    bytes: h.finish(),
                })
                .collect(),
        }
    }
}

/// The digests of one stream, in the order the algorithms were requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Bytes digested.
    pub size: u64,
    /// One digest per algorithm.
    pub digests: Vec<Digest>,
}

impl Digests {
    /// The digest for `algorithm`, if it was computed.
    pub fn get(&self, algorithm: Algorithm) -> Option<&Digest> {
        self.digests.iter().find(|d| d.algorithm == algorithm)
    }
}

/// Digests everything `reader` yields.
pub fn hash_reader<R: Read>(mut reader: R, algorithms: &[Algorithm]) -> io::Result<Digests> {
    let mut set = DigestSet::new(algorithms);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        set.update(&buf[..n]);
    }
    Ok(set.finish())
}

/// Digests the file at `path` in one read.
pub fn hash_path(path: &Path, algorithms: &[Algorithm]) -> Result<Digests, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    hash_reader(file, algorithms).map_err(|e| Error::io(path, e))
}
