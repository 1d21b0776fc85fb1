//! `vmimage`: inspect, hash, verify and convert VM disk images for cloud image services.
//!
//! The library is what the `vmimage` command runs; every command is a thin layer over it.
//!
//! - [`inspect`](mod@inspect): detect an image's format from its content and describe it (`vmimage info`),
//!   with the [`safety`] verdict a cloud image service needs.
//! - [`format`](mod@format): one module per image format; [`format::qcow2`] holds the qcow2 header, table
//!   and snapshot parsers shared by `check` and `convert`.
//! - [`source`]: bounds-checked positional reads, the only way parsers touch a file.
//! - [`facts`]: what vmimage measures about a local image file ([`facts::ImageFacts`]: format,
//!   sizes, safety, digests), which [`cloud`]'s metadata and [`verify`](mod@verify) read.
//! - [`digest`]: MD5, SHA-1 and SHA-2 of files in one read each (`vmimage hash`).
//! - [`guest_hash`]: the guest-content hash of an image file (blkhash, as `blksum`; `vmimage hash
//!   --guest`), the same for every format of one disk; the construction is [`digest::guest`].
//! - [`convert`](mod@convert): raw, qcow2, VHD, VHDX, VMDK and VDI to qcow2 v3, sparse raw, VHD,
//!   VMDK or VHDX, digested while written (`vmimage convert`).
//! - [`cloud`]: what clouds record about images (Glance, SCP, IMS), and the upload metadata
//!   that registers one; [`verify`](mod@verify) compares a file with such a record.
//! - [`atomic`]: every file vmimage writes (converted images, metadata, sidecars, JUnit
//!   reports) is written aside and renamed into place when complete; a process's signal
//!   handler calls [`atomic::remove_temporary_files`].
//!
//! Nothing in the library prints; errors are typed ([`Error`]) and content problems are
//! findings in the reports.

pub mod atomic;
pub mod cloud;
pub mod convert;
pub mod digest;
pub mod error;
pub mod facts;
pub mod format;
pub mod guest_hash;
pub mod inspect;
pub mod remote;
pub mod safety;
pub mod signing;
pub mod source;
pub mod verify;

pub use error::{Error, ErrorKind};
pub use format::ImageFormat;
pub use inspect::{ImageInfo, inspect, inspect_path};
