//! The digest algorithms a cloud image service records, and their names.

use std::fmt;

use serde::Serialize;

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

    /// The algorithm whose hex digest has `hex_len` characters. Every supported algorithm has
    /// a distinct length, which is how untagged (`hex  name`) manifest lines are read.
    pub fn from_hex_len(hex_len: usize) -> Option<Self> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.output_len() * 2 == hex_len)
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

/// Parses a comma-separated list (`md5,sha256`); duplicates are dropped, order is kept.
pub fn parse_list(list: &str) -> Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let a = Algorithm::from_name(name).ok_or_else(|| {
            format!(
                "unknown digest algorithm '{name}' (known: {})",
                Algorithm::ALL.map(Algorithm::name).join(", ")
            )
        })?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err("no digest algorithm given".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tags_and_lengths_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
            assert_eq!(Algorithm::from_name(a.tag()), Some(a));
            assert_eq!(Algorithm::from_hex_len(a.output_len() * 2), Some(a));
        }
        assert_eq!(Algorithm::from_name("SHA-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::from_name("crc32"), None);
    }

    #[test]
    fn algorithm_lists_keep_order_and_drop_duplicates() {
        assert_eq!(
            parse_list("sha256, md5,sha256").unwrap(),
            vec![Algorithm::Sha256, Algorithm::Md5]
        );
        assert!(parse_list("md5,whirlpool").is_err());
        assert!(parse_list(",").is_err());
    }
}
