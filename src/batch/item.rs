//! Running one item: where its bytes are ([`open_source`]), what is done with them (`--op`),
//! and the result line ([`ItemResult`]).
//!
//! Every op calls the library entry point of the command it stands for: `hash` the digest
//! engine of `vmimage hash` ([`crate::digest::hash_path_with`]), `verify` the
//! [`crate::verify::verify_path`] of `vmimage verify`, `audit` that plus `vmimage info`'s
//! [`crate::inspect_path`] (the safety verdict, every finding with its rule id) and the guest
//! hash of `hash --guest` ([`crate::guest_hash::hash_path`]) when asked or recorded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::manifest::{Expect, Item, ItemBody, Job};
use super::shard::Shard;
use crate::cloud::{ImageRecord, RecordSelector, RecordSource, Recorded, parse_record};
use crate::digest::engine::EngineConfig;
use crate::digest::guest::GuestHash;
use crate::digest::source::hash_path_reusing;
use crate::digest::{Algorithm, HashOptions};
use crate::safety::Safety;
use crate::verify::{CheckResult, Status, Verdict, verify_path};

/// What is done with each item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The file's digests (`vmimage hash`).
    #[default]
    Hash,
    /// The file against its expectations and record (`vmimage verify`).
    Verify,
    /// `verify`, with `info`'s safety findings and the guest hash.
    Audit,
}

impl Op {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Op::Hash => "hash",
            Op::Verify => "verify",
            Op::Audit => "audit",
        }
    }
}

/// How items are run.
#[derive(Debug, Clone)]
pub struct ItemOptions {
    /// The op.
    pub op: Op,
    /// The digests of `--op hash`.
    pub algorithms: Vec<Algorithm>,
    /// `--guest`: compute the guest hash in `audit` even when the record states none.
    pub guest: bool,
    /// Threads a guest hash may use (`None`: every core).
    pub guest_threads: Option<usize>,
    /// `--op hash`: whether one file's digests may run on threads of their own (the engine's
    /// one worker per algorithm, [`crate::digest::engine`]). Off when the items already keep
    /// every core busy (`-j` at least the number of cores): each file is then read and
    /// digested on its worker's thread, each chunk hashed while it is in that core's cache,
    /// with no hand-off, no thread started per file and one buffer per worker.
    pub digest_threads: bool,
}

impl Default for ItemOptions {
    fn default() -> Self {
        Self {
            op: Op::Hash,
            algorithms: Algorithm::DEFAULT.to_vec(),
            guest: false,
            guest_threads: None,
            digest_threads: true,
        }
    }
}

/// The outcome of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Done, and (verify, audit) verified.
    Ok,
    /// Nothing could be compared: the item states no usable expectation (verify's
    /// `unverified`). A failure, like a mismatch: exit status 1.
    Skipped,
    /// The file does not match what was expected, or is unsafe (audit, verify).
    Mismatch,
    /// The item could not be done: unreadable source, malformed line, unusable record.
    Error,
}

impl ItemStatus {
    /// The name used in results.
    pub fn name(self) -> &'static str {
        match self {
            ItemStatus::Ok => "ok",
            ItemStatus::Skipped => "skipped",
            ItemStatus::Mismatch => "mismatch",
            ItemStatus::Error => "error",
        }
    }

    /// The exit status of a run whose worst item has this status: 0 ok, 1 mismatch or
    /// skipped, 2 error.
    pub fn exit_status(self) -> u8 {
        match self {
            ItemStatus::Ok => 0,
            ItemStatus::Skipped | ItemStatus::Mismatch => 1,
            ItemStatus::Error => 2,
        }
    }
}

/// One line of a results file.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    /// The item's id.
    pub id: String,
    /// The shard that ran it, `m/N`.
    pub shard: String,
    /// The outcome.
    pub status: ItemStatus,
    /// The op that ran.
    pub op: Op,
    /// Where the bytes were read from.
    pub source: Option<String>,
    /// The digests computed, by algorithm name.
    pub digests: BTreeMap<String, String>,
    /// The guest-content hash, when computed.
    pub guest_hash: Option<GuestHash>,
    /// The file's length in bytes.
    pub size: Option<u64>,
    /// The guest-visible size in bytes (verify, audit).
    pub virtual_size: Option<u64>,
    /// The format detected from content (verify, audit).
    pub format: Option<String>,
    /// `verify`'s checks (verify, audit).
    pub checks: Vec<CheckResult>,
    /// `info`'s safety verdict (audit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety: Option<Safety>,
    /// Why the item is an error, or (skipped, mismatch) what failed: one sentence each.
    pub errors: Vec<String>,
    /// Wall time spent on the item, in seconds.
    pub elapsed_s: f64,
}

impl ItemResult {
    fn new(item: &Item, shard: Shard, op: Op) -> Self {
        let source = match &item.body {
            ItemBody::Job(j) => j.source.clone(),
            ItemBody::Malformed(_) => None,
        };
        Self {
            id: item.id.clone(),
            shard: shard.to_string(),
            status: ItemStatus::Ok,
            op,
            source,
            digests: BTreeMap::new(),
            guest_hash: None,
            size: None,
            virtual_size: None,
            format: None,
            checks: Vec::new(),
            safety: None,
            errors: Vec::new(),
            elapsed_s: 0.0,
        }
    }

    fn error(&mut self, sentence: impl Into<String>) {
        self.status = ItemStatus::Error;
        self.errors.push(sentence.into());
    }
}

/// Where an item's bytes are, as this build can read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemSource {
    /// A local file.
    Local(PathBuf),
    /// An object in S3-compatible storage or on a web server (`s3://`, `https://`, and
    /// `http://` when [`crate::remote::options`] allow it), read in place as every command
    /// reads one ([`crate::remote`]).
    Remote(String),
}

impl ItemSource {
    /// The path the library's entry points take: they read a URL-shaped path remotely.
    fn as_path(&self) -> &std::path::Path {
        match self {
            ItemSource::Local(p) => p,
            ItemSource::Remote(url) => std::path::Path::new(url),
        }
    }
}

/// The one place an item's `source` becomes something to read: every op goes through it, so
/// that remote sources (`s3://`, `https://`) are added here and nowhere else.
pub fn open_source(source: &str) -> Result<ItemSource, String> {
    if crate::remote::is_remote(std::ffi::OsStr::new(source)) {
        return Ok(ItemSource::Remote(source.to_string()));
    }
    if let Some((scheme, _)) = source.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(format!(
            "{source}: {scheme}:// sources are not supported; give a local path, s3://bucket/key or https://..."
        ));
    }
    if source.is_empty() {
        return Err("the item's source is empty".into());
    }
    Ok(ItemSource::Local(PathBuf::from(source)))
}

/// Runs one item of `shard`. `buf` is the calling worker's read buffer, kept from item to
/// item (`--op hash` reads into it; see [`hash_path_reusing`]).
pub fn run_item(item: &Item, shard: Shard, options: &ItemOptions, buf: &mut Vec<u8>) -> ItemResult {
    let started = Instant::now();
    let mut result = ItemResult::new(item, shard, options.op);
    match &item.body {
        ItemBody::Malformed(sentence) => result.error(sentence.clone()),
        ItemBody::Job(job) => run_job(job, options, &mut result, buf),
    }
    result.elapsed_s = started.elapsed().as_secs_f64();
    result
}

fn run_job(job: &Job, options: &ItemOptions, result: &mut ItemResult, buf: &mut Vec<u8>) {
    let Some(source) = &job.source else {
        result.error("the item has no source: give one, or --source-template / --source-dir");
        return;
    };
    let item_source = match open_source(source) {
        Ok(s) => s,
        Err(sentence) => {
            result.error(sentence);
            return;
        }
    };
    let local = item_source.as_path().to_path_buf();
    match options.op {
        Op::Hash => hash_local(&local, options, result, buf),
        Op::Verify | Op::Audit => verify_local(&local, job, options, result),
    }
}

/// `--op hash`: the digests of `vmimage hash`, change check included. A file smaller than a
/// chunk, and every file when `digest_threads` is off, is read into the worker's `buf` and
/// digested on the worker's thread: a tiny file costs an `open`, two `fstat`s, one `read`
/// and a `close` (docs/batch.md, "Speed and memory").
fn hash_local(
    path: &std::path::Path,
    options: &ItemOptions,
    result: &mut ItemResult,
    buf: &mut Vec<u8>,
) {
    let hash_options = HashOptions {
        engine: EngineConfig {
            threads: options.digest_threads,
            ..EngineConfig::default()
        },
        progress: None,
        remote: None,
    };
    match hash_path_reusing(path, &options.algorithms, &hash_options, buf) {
        Ok(d) => {
            result.size = Some(d.size);
            result.digests = d
                .digests
                .iter()
                .map(|d| (d.algorithm.name().to_string(), d.hex()))
                .collect();
        }
        Err(e) => result.error(e.to_string()),
    }
}

/// The record an item is verified against: its `record` (any shape `verify --against`
/// reads), with its `expect` values replacing the record's.
fn record_of(job: &Job) -> Result<Option<ImageRecord>, String> {
    let mut record = match &job.record {
        Some(v) => {
            let bytes = serde_json::to_vec(v).map_err(|e| format!("the record: {e}"))?;
            Some(
                parse_record(&bytes, &RecordSelector::default())
                    .map_err(|e| format!("the record {e}"))?,
            )
        }
        None => None,
    };
    if let Some(expect) = &job.expect {
        let expectations = expectations(expect)?;
        let r = record.get_or_insert_with(|| ImageRecord::empty(RecordSource::Flags));
        expectations
            .apply(r)
            .map_err(|e| format!("expect: {}", e.to_string().replace("--", "")))?;
    }
    Ok(record)
}

fn expectations(expect: &Expect) -> Result<crate::verify::Expectations, String> {
    let guest_hash = match &expect.guest_hash {
        Some(g) => Some(GuestHash::parse(g).map_err(|e| format!("expect: guest_hash: {e}"))?),
        None => None,
    };
    Ok(crate::verify::Expectations {
        checksum: expect.checksum.clone(),
        os_hash_algo: expect.os_hash_algo.clone(),
        os_hash_value: expect.os_hash_value.clone(),
        size: expect.size,
        virtual_size: expect.virtual_size,
        disk_format: expect.disk_format.clone(),
        guest_hash,
    })
}

/// `--op verify` and `--op audit`.
fn verify_local(path: &std::path::Path, job: &Job, options: &ItemOptions, result: &mut ItemResult) {
    let record = match record_of(job) {
        Ok(Some(r)) => r,
        Ok(None) => {
            // An unreadable image is an error whatever else is missing.
            if let Err(e) = std::fs::File::open(path) {
                result.error(crate::Error::io(path, e).to_string());
                return;
            }
            result.status = ItemStatus::Skipped;
            result.errors.push(format!(
                "nothing to {}: the item has no expect and no record",
                options.op.name()
            ));
            return;
        }
        Err(sentence) => {
            result.error(sentence);
            return;
        }
    };
    let report = match verify_path(path, &record) {
        Ok(r) => r,
        Err(e) => {
            result.error(e.to_string());
            return;
        }
    };
    result.size = Some(report.image.size);
    result.virtual_size = report.image.virtual_size;
    result.format = Some(report.image.format.clone());
    result.digests = report.image.digests.clone();
    result.status = match report.verdict {
        Verdict::Verified => ItemStatus::Ok,
        Verdict::Failed => ItemStatus::Mismatch,
        Verdict::Unverified => ItemStatus::Skipped,
    };
    match report.verdict {
        Verdict::Verified => {}
        Verdict::Failed => {
            let failed: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.id)
                .collect();
            result
                .errors
                .push(format!("verification failed: {}", failed.join(", ")));
        }
        Verdict::Unverified => result
            .errors
            .push("unverified: no digest could be compared with the record".into()),
    }
    let recorded_guest = matches!(record.guest_hash, Recorded::Value(_));
    result.checks = report.checks;
    if recorded_guest {
        result.guest_hash = result
            .checks
            .iter()
            .find(|c| c.id == "guest_hash")
            .and_then(|c| c.actual.as_str())
            .and_then(|s| GuestHash::parse(s).ok());
    }
    if options.op != Op::Audit {
        return;
    }
    match crate::inspect_path(path) {
        Ok(info) => result.safety = Some(info.safety),
        Err(e) => result.error(e.to_string()),
    }
    if options.guest && !recorded_guest {
        let guest_options = crate::guest_hash::GuestHashOptions {
            threads: options.guest_threads,
            ..Default::default()
        };
        match crate::guest_hash::hash_path(path, &guest_options) {
            Ok(h) => result.guest_hash = Some(h),
            // No guest reader for the format, or a refused image: the check says so; the
            // safety check reports an unsafe image.
            Err(e) => result.checks.push(CheckResult {
                id: "guest_hash",
                status: Status::Skip,
                expected: Value::Null,
                actual: Value::Null,
                message: format!("the guest hash could not be computed: {e}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_sources_are_read_in_place_and_other_schemes_refused() {
        assert_eq!(
            open_source("s3://bucket/a.qcow2"),
            Ok(ItemSource::Remote("s3://bucket/a.qcow2".into()))
        );
        assert_eq!(
            open_source("https://example.com/a.qcow2"),
            Ok(ItemSource::Remote("https://example.com/a.qcow2".into()))
        );
        let e = open_source("ftp://example.com/a.qcow2").unwrap_err();
        assert!(e.contains("ftp:// sources are not supported"), "{e}");
        assert_eq!(
            open_source("/data/a:b.qcow2"),
            Ok(ItemSource::Local("/data/a:b.qcow2".into()))
        );
    }

    #[test]
    fn statuses_order_by_severity() {
        let mut v = [
            ItemStatus::Error,
            ItemStatus::Ok,
            ItemStatus::Mismatch,
            ItemStatus::Skipped,
        ];
        v.sort();
        assert_eq!(v.last(), Some(&ItemStatus::Error));
        assert_eq!(v.first(), Some(&ItemStatus::Ok));
    }
}
