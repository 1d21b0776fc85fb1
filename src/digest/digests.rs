//! A finished digest and the digests of one stream.

use super::algorithm::Algorithm;

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
        hex::encode(&self.bytes)
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
