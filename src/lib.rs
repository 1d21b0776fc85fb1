//! `vmimage`: inspect, hash, verify and convert VM disk images for cloud image services.
//!
//! The library is what the `vmimage` command runs; every command is a thin layer over it.
//!
//! - [`inspect`](mod@inspect): detect an image's format from its content and describe it (`vmimage info`),
//!   with the [`safety`] verdict a cloud image service needs.
//! - [`format`](mod@format): one module per image format; [`format::qcow2`] holds the qcow2 header, table
//!   and snapshot parsers shared by `check` and `convert`.
//! - [`source`]: bounds-checked positional reads, the only way parsers touch a file.
//!
//! Nothing in the library prints; errors are typed ([`Error`]) and content problems are
//! findings in the reports.

pub mod cloud;
pub mod convert;
pub mod digest;
pub mod error;
pub mod format;
pub mod inspect;
pub mod safety;
pub mod signing;
pub mod source;
pub mod verify;

pub use error::Error;
pub use format::ImageFormat;
pub use inspect::{ImageInfo, inspect, inspect_path};
