//! Running a shard: the manifest streamed, `jobs` items at a time, results written in manifest
//! order, one whole line per item, each flushed as soon as it and every item before it are
//! done.
//!
//! Memory is flat in the number of items: the manifest is read only as far as the reorder
//! window (`4 × jobs` items past the oldest unwritten one) allows, and a result leaves memory
//! when its line is written. Workers are started once per run, not per item.
//!
//! A result is written with one `write(2)` of the whole line, so a process killed at any
//! moment leaves complete lines only (a full disk can still cut the last one short: the
//! resume reader ignores a torn last line). `--resume` ([`prepare_resume`]) keeps the `ok`
//! lines of an earlier run and the run skips their items.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use serde::Deserialize;

use super::item::{ItemOptions, ItemResult, ItemStatus, run_item};
use super::manifest::Item;
use super::shard::{Shard, ShardBy};

/// How a shard runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Which shard.
    pub shard: Shard,
    /// How items are dealt to shards.
    pub by: ShardBy,
    /// Items in flight at once (at least 1).
    pub jobs: usize,
    /// What each item does.
    pub item: ItemOptions,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Items of the shard run now, by status.
    pub ok: u64,
    /// See [`ItemStatus::Mismatch`].
    pub mismatch: u64,
    /// See [`ItemStatus::Error`].
    pub error: u64,
    /// See [`ItemStatus::Skipped`].
    pub skipped: u64,
    /// Items of the shard not run because the resumed results hold them `ok`.
    pub resumed: u64,
}

impl RunSummary {
    /// The worst status of the shard (resumed items are `ok`).
    pub fn worst(&self) -> ItemStatus {
        if self.error > 0 {
            ItemStatus::Error
        } else if self.mismatch > 0 {
            ItemStatus::Mismatch
        } else if self.skipped > 0 {
            ItemStatus::Skipped
        } else {
            ItemStatus::Ok
        }
    }

    fn count(&mut self, status: ItemStatus) {
        let n = match status {
            ItemStatus::Ok => &mut self.ok,
            ItemStatus::Mismatch => &mut self.mismatch,
            ItemStatus::Error => &mut self.error,
            ItemStatus::Skipped => &mut self.skipped,
        };
        *n += 1;
    }
}

/// The manifest side, shared by the workers: the next item to take.
struct Feed<I> {
    items: I,
    next_seq: u64,
    exhausted: bool,
    /// Workers waiting for room in the reorder window.
    waiters: usize,
}

/// The results side: lines not yet written, and where writing is.
struct Sink<'w, W> {
    out: &'w mut W,
    waiting: BTreeMap<u64, ItemResult>,
    written: RunSummary,
    failed: Option<io::Error>,
    line: Vec<u8>,
}

/// Runs the items of `options.shard` from `items` (minus those `done` holds), writing one
/// result line per item to `out` in manifest order. Returns when every item is written, or at
/// the first failed write (its error).
///
/// There is no coordinator thread: each of the `jobs` workers takes the next item from the
/// manifest, runs it, files the result and writes every line that is now next in order. A
/// small item thus costs two uncontended locks and no thread hand-off; a worker waits only
/// when it is a whole window ahead of the oldest unwritten item.
pub fn run_shard<I, W>(
    items: I,
    done: &HashSet<String>,
    options: &RunOptions,
    out: &mut W,
) -> io::Result<RunSummary>
where
    I: Iterator<Item = Item> + Send,
    W: Write + Send,
{
    let jobs = options.jobs.max(1);
    let window = (jobs * 4).max(2) as u64;
    let resumed = AtomicU64::new(0);
    let items = items.filter(|item| {
        if !options.shard.holds(options.by, item.index, &item.id) {
            return false;
        }
        if done.contains(&item.id) {
            resumed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    });
    let feed = Mutex::new(Feed {
        items,
        next_seq: 0,
        exhausted: false,
        waiters: 0,
    });
    let room = Condvar::new();
    let next_out = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let sink = Mutex::new(Sink {
        out,
        waiting: BTreeMap::new(),
        written: RunSummary::default(),
        failed: None,
        line: Vec::with_capacity(1024),
    });
    let worker = || {
        loop {
            let Some((seq, item)) = take(&feed, &room, &next_out, &stop, window) else {
                return;
            };
            let result = run_item(&item, options.shard, &options.item);
            drop(item);
            let Ok(mut s) = sink.lock() else {
                stop.store(true, Ordering::SeqCst);
                return;
            };
            s.waiting.insert(seq, result);
            let mut next = next_out.load(Ordering::SeqCst);
            while s.failed.is_none() {
                let Some(result) = s.waiting.remove(&next) else {
                    break;
                };
                if let Err(e) = write_line(&mut s, &result) {
                    s.failed = Some(e);
                    stop.store(true, Ordering::SeqCst);
                    break;
                }
                s.written.count(result.status);
                next += 1;
                next_out.store(next, Ordering::SeqCst);
            }
            drop(s);
            // Taking the feed's lock before notifying means a worker that saw the window
            // full is already waiting, so it cannot miss this.
            if let Ok(f) = feed.lock()
                && f.waiters > 0
            {
                room.notify_all();
            }
        }
    };
    std::thread::scope(|scope| -> io::Result<()> {
        for n in 1..jobs {
            std::thread::Builder::new()
                .name(format!("vmimage-batch-{n}"))
                .spawn_scoped(scope, worker)?;
        }
        worker();
        Ok(())
    })?;
    let sink = sink
        .into_inner()
        .map_err(|_| io::Error::other("a batch worker panicked"))?;
    if let Some(e) = sink.failed {
        return Err(e);
    }
    let mut written = sink.written;
    written.resumed = resumed.load(Ordering::Relaxed);
    Ok(written)
}

/// The next item and its sequence number in the shard, once it is inside the reorder window;
/// `None` when the manifest is done or the run stops.
fn take<I: Iterator<Item = Item>>(
    feed: &Mutex<Feed<I>>,
    room: &Condvar,
    next_out: &AtomicU64,
    stop: &AtomicBool,
    window: u64,
) -> Option<(u64, Item)> {
    let mut f = feed.lock().ok()?;
    loop {
        if f.exhausted || stop.load(Ordering::SeqCst) {
            return None;
        }
        if f.next_seq < next_out.load(Ordering::SeqCst) + window {
            break;
        }
        f.waiters += 1;
        f = room.wait(f).ok()?;
        f.waiters -= 1;
    }
    match f.items.next() {
        Some(item) => {
            let seq = f.next_seq;
            f.next_seq += 1;
            Some((seq, item))
        }
        None => {
            f.exhausted = true;
            None
        }
    }
}

/// Writes one result as one line with one `write(2)`.
fn write_line<W: Write>(s: &mut Sink<'_, W>, result: &ItemResult) -> io::Result<()> {
    s.line.clear();
    serde_json::to_writer(&mut s.line, result).map_err(io::Error::other)?;
    s.line.push(b'\n');
    let Sink { out, line, .. } = s;
    out.write_all(line)?;
    out.flush()
}

/// The fields of a result line that resuming and merging read.
#[derive(Debug, Deserialize)]
pub struct ResultKey {
    /// The item's id.
    pub id: String,
    /// Its status.
    pub status: ItemStatus,
    /// Its error sentences.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Parses one results line; `None` for a line that is not a complete result (a torn last
/// line, garbage).
pub fn parse_result_line(line: &[u8]) -> Option<ResultKey> {
    serde_json::from_slice(line.trim_ascii()).ok()
}

/// Opens `out` for a run that resumes `resume`: `out` becomes the `ok` lines of `resume`
/// (written aside and renamed, so `resume` may be `out` itself), open for appending; their
/// ids are returned so the run skips them. A `resume` file that does not exist yet (the first
/// attempt of an indexed job) resumes nothing. Other lines (errors, mismatches, a torn last
/// line) are dropped: their items run again.
pub fn prepare_resume(resume: &Path, out: &Path) -> io::Result<(HashSet<String>, File)> {
    let mut done = HashSet::new();
    let input = match File::open(resume) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let tmp = crate::atomic::TempFile::create_beside(out, "resume")?;
    if let Some(input) = input {
        let mut reader = BufReader::new(input);
        let mut writer = io::BufWriter::new(tmp.file()?);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if !line.ends_with(b"\n") {
                // Torn: the run that wrote it was stopped mid-line.
                break;
            }
            if let Some(key) = parse_result_line(&line)
                && key.status == ItemStatus::Ok
                && done.insert(key.id)
            {
                writer.write_all(&line)?;
            }
        }
        writer.flush()?;
    }
    tmp.persist(out)?;
    let file = OpenOptions::new().append(true).open(out)?;
    Ok((done, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::manifest::{ItemBody, Job};

    fn items(n: u64) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                index: i,
                line: i + 1,
                id: format!("item-{i}"),
                body: if i % 7 == 3 {
                    ItemBody::Malformed(format!("line {} is bad", i + 1))
                } else {
                    ItemBody::Job(Box::new(Job {
                        source: Some(format!("/nonexistent/vmimage-batch/{i}")),
                        ..Job::default()
                    }))
                },
            })
            .collect()
    }

    fn ids(out: &[u8]) -> Vec<String> {
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_result_line(l).unwrap().id)
            .collect()
    }

    #[test]
    fn results_come_in_manifest_order_whatever_the_jobs() {
        for jobs in [1, 2, 5] {
            let options = RunOptions {
                shard: Shard { index: 2, count: 3 },
                by: ShardBy::Slice,
                jobs,
                item: ItemOptions::default(),
            };
            let mut out = Vec::new();
            let summary =
                run_shard(items(50).into_iter(), &HashSet::new(), &options, &mut out).unwrap();
            let want: Vec<String> = (0..50)
                .filter(|i| i % 3 == 1)
                .map(|i| format!("item-{i}"))
                .collect();
            assert_eq!(ids(&out), want, "jobs {jobs}");
            assert_eq!(summary.error, want.len() as u64);
            assert_eq!(summary.worst(), ItemStatus::Error);
        }
    }

    #[test]
    fn resumed_items_are_skipped_and_counted() {
        let options = RunOptions {
            shard: Shard::ALL,
            by: ShardBy::Hash,
            jobs: 2,
            item: ItemOptions::default(),
        };
        let done: HashSet<String> = ["item-0".to_string(), "item-5".to_string()].into();
        let mut out = Vec::new();
        let summary = run_shard(items(10).into_iter(), &done, &options, &mut out).unwrap();
        assert_eq!(summary.resumed, 2);
        assert_eq!(ids(&out).len(), 8);
    }

    #[test]
    fn resume_keeps_ok_lines_and_drops_the_rest_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"status\":\"ok\"}\n{\"id\":\"b\",\"status\":\"error\"}\n{\"id\":\"c\",\"status\":\"ok\"}\n{\"id\":\"d\",\"sta",
        )
        .unwrap();
        let (done, mut file) = prepare_resume(&path, &path).unwrap();
        assert_eq!(done, ["a".to_string(), "c".to_string()].into());
        file.write_all(b"{\"id\":\"b\",\"status\":\"ok\"}\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":\"a\",\"status\":\"ok\"}\n{\"id\":\"c\",\"status\":\"ok\"}\n{\"id\":\"b\",\"status\":\"ok\"}\n"
        );
        let (none, _) = prepare_resume(&dir.path().join("missing"), &dir.path().join("o")).unwrap();
        assert!(none.is_empty());
    }
}
