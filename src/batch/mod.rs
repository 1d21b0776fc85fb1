//! Auditing a catalogue: many images, one result line each, sharded across the machines of an
//! array-job engine (Kubernetes Indexed Jobs, Slurm job arrays, AWS Batch array jobs, GNU
//! parallel), then merged (`vmimage batch`, `vmimage merge`; issue 19, docs/batch.md).
//!
//! - [`manifest`]: the items, read from JSON Lines, a service listing, a checksum file or a
//!   directory, in order, streamed where the format allows.
//! - [`shard`]: which items one shard runs (`m/N`, from the engine's environment; by a stable
//!   hash of the id or by index).
//! - [`item`]: one item: its source ([`item::open_source`], the one place a source becomes
//!   something to read), the op (`hash`, `verify`, `audit`), its result line.
//! - [`runner`]: a shard's items, `jobs` at a time, results in manifest order, and `--resume`
//!   (kept lines rewritten at their items' places).
//! - [`merge`](mod@merge): every shard's results against the manifest: totals, missing and
//!   duplicate items, the worst status.

pub mod item;
pub mod manifest;
pub mod merge;
pub mod runner;
pub mod shard;

pub use item::{ItemOptions, ItemResult, ItemStatus, Op, open_source};
pub use manifest::{Item, ManifestReader, SourceMap};
pub use runner::{Kept, RunOptions, RunSummary, aside_path, prepare_resume, run_shard};
pub use shard::{Shard, ShardBy};
