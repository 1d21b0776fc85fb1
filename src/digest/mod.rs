//! Digests of whole files, as cloud image services record them: MD5 for Glance's `checksum`,
//! SHA-512 (by default) for `os_hash_value`, and the other `os_hash_algo` values.
//!
//! - [`algorithm`]: the algorithms and their names; [`Digest`] and [`Digests`], what a run
//!   computes (`digests.rs`).
//! - [`engine`]: [`DigestSet`], one byte stream fed to every algorithm at once, one worker
//!   thread per algorithm, in bounded memory; [`Digester`], one algorithm on the caller's
//!   thread.
//! - [`source`]: where bytes come from ([`hash_path`], [`hash_reader`], standard input), and
//!   the check that a file did not change while it was read.
//! - [`guest`]: the guest-content hash (blkhash), the same for every container of one disk.
//! - [`parallel`]: many files across cores, results in argument order.
//! - [`manifest`] and [`check`]: coreutils-compatible checksum manifests and `--check`.
//! - [`md5`], [`sha512`]: this crate's MD5 and (on x86-64 with AVX2) SHA-512/384, chosen
//!   over RustCrypto's by measurement (see `backend`).
//! - [`sha256_multi`]: SHA-256 of several equal-length messages at once (SHA-NI), for the
//!   guest hash's independent block digests; [`sha256_x16`]: sixteen at once on AVX-512.

pub mod algorithm;
mod backend;
mod block;
pub mod check;
mod digests;
pub mod engine;
pub mod guest;
pub mod manifest;
pub mod md5;
pub mod parallel;
pub mod sha256_multi;
pub mod sha256_x16;
pub mod sha512;
pub mod source;

pub use algorithm::Algorithm;
pub use digests::{Digest, Digests};
pub use engine::{DigestSet, Digester, EngineConfig};
pub use parallel::hash_inputs;
pub use source::{HashOptions, Input, hash_input, hash_path, hash_path_with, hash_reader};
