//! Running a shard: the manifest streamed, `jobs` items at a time, results written in manifest
//! order, whole lines only, each written as soon as it and every item before it are done.
//!
//! Memory is flat in the number of items: the manifest is read only as far as the reorder
//! window ([`WINDOW_PER_JOB`] × `jobs` items past the oldest unwritten one) allows, and a result
//! leaves memory when its line is written. Workers are started once per run, not per item, and
//! each keeps one read buffer for all its items.
//!
//! A worker takes one item at a time while items are slow, and runs of up to
//! 64 (`RunLength::MOST`) while they are quick (tiny files), whose results it files together.
//! The lines that are next in order when a worker files its results are written together with
//! one `write(2)` (one line for a big image; several for a run of tiny files, or when a slow
//! item held the ones after it), so a
//! process killed at any moment leaves complete lines only (a full disk can still cut the last
//! one short: the resume reader ignores a torn last line). `--resume` ([`prepare_resume`])
//! keeps the `ok` lines of an earlier run aside ([`Kept`]) and writes each again at its item's
//! place, so a resumed results file is in manifest order too.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::item::{ItemOptions, ItemStatus, run_item};
use super::manifest::Item;
use super::shard::{Shard, ShardBy};

/// Items a worker may run ahead of the oldest unwritten one, per job. Results are small (a few
/// hundred bytes), so the window costs little memory, and a wide one means a worker seldom
/// sleeps waiting for a slow item's line: with tiny files, each such sleep and wake-up costs
/// more than the item itself.
pub const WINDOW_PER_JOB: usize = 128;

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

    fn add(&mut self, other: &RunSummary) {
        self.ok += other.ok;
        self.mismatch += other.mismatch;
        self.error += other.error;
        self.skipped += other.skipped;
        self.resumed += other.resumed;
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

/// The `ok` lines of an earlier run, for a resumed run: their ids (what the run skips) and
/// where each line is in the aside file [`prepare_resume`] wrote. Memory is one id and one
/// position per kept line; the lines stay on disk.
#[derive(Debug, Default)]
pub struct Kept {
    /// Id → the line's offset and length in `file`; `None` once the line was given out (a
    /// manifest naming an id twice gets its kept line once).
    lines: HashMap<String, Option<(u64, usize)>>,
    file: Option<File>,
    aside: Option<PathBuf>,
}

impl Kept {
    /// Ids kept.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Whether `id` has a kept `ok` line.
    pub fn contains(&self, id: &str) -> bool {
        self.lines.contains_key(id)
    }

    /// The kept line at `pos` (with its `\n`).
    fn read(&self, (offset, len): (u64, usize)) -> io::Result<Vec<u8>> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no kept lines"))?;
        let mut line = vec![0; len];
        file.read_exact_at(&mut line, offset)?;
        Ok(line)
    }

    /// Removes the aside file: to be called once the run has written every line, kept ones
    /// included. (A run that stops before leaves it, and the next `--resume` reads it.)
    pub fn finish(self) -> io::Result<()> {
        drop(self.file);
        match self.aside {
            Some(p) => match std::fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }
}

/// Where [`prepare_resume`] keeps the `ok` lines of the results `out` while a resumed run
/// rewrites `out`: `.NAME.kept` beside it.
pub fn aside_path(out: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(out.file_name().unwrap_or(std::ffi::OsStr::new("results")));
    name.push(".kept");
    out.with_file_name(name)
}

/// The manifest side, shared by the workers: the next item to take.
struct Feed<'k, I> {
    items: I,
    kept: &'k mut Kept,
    next_seq: u64,
    exhausted: bool,
    /// Workers waiting for room in the reorder window.
    waiters: usize,
}

/// What a worker took from the feed.
enum Taken {
    /// An item to run.
    Run(u64, Item),
    /// An item whose kept line (at this position of the aside file) is written instead.
    Kept(u64, (u64, usize)),
}

/// The lines of a run of items (consecutive in the shard: [`take`] numbers them as it takes
/// them), serialized by the worker that ran them, outside the results' lock, waiting for the
/// lines before them.
struct Filed {
    /// How many items (lines).
    items: u64,
    /// Their lines, each with its newline.
    lines: Vec<u8>,
    /// Their statuses.
    counts: RunSummary,
}

/// The results side: lines not yet written, and where writing is.
struct Sink<'w, W> {
    out: &'w mut W,
    waiting: BTreeMap<u64, Filed>,
    written: RunSummary,
    failed: Option<io::Error>,
    lines: Vec<u8>,
}

/// Runs the items of `options.shard` from `items`, writing one result line per item to `out` in
/// manifest order; an item `kept` holds is not run, its kept line is written in its place.
/// Returns when every item is written, or at the first failed write (its error).
///
/// There is no coordinator thread: each of the `jobs` workers takes the next item from the
/// manifest, runs it, files the result and writes every line that is now next in order. A
/// small item thus costs two uncontended locks and no thread hand-off; a worker waits only
/// when it is a whole window ahead of the oldest unwritten item.
pub fn run_shard<I, W>(
    items: I,
    kept: &mut Kept,
    options: &RunOptions,
    out: &mut W,
) -> io::Result<RunSummary>
where
    I: Iterator<Item = Item> + Send,
    W: Write + Send,
{
    let jobs = options.jobs.max(1);
    let window = (jobs * WINDOW_PER_JOB) as u64;
    let items = items.filter(|item| options.shard.holds(options.by, item.index, &item.id));
    let duplicates = AtomicU64::new(0);
    let file = kept.file.take();
    let reader = Kept {
        file,
        ..Kept::default()
    };
    let feed = Mutex::new(Feed {
        items,
        kept,
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
        lines: Vec::with_capacity(1024),
    });
    let worker = || {
        let mut buf = Vec::new();
        let mut run = RunLength::default();
        loop {
            let taken = take(
                &feed,
                &room,
                &next_out,
                &stop,
                window,
                &duplicates,
                run.items(),
            );
            if taken.is_empty() {
                return;
            }
            let started = Instant::now();
            let ran = taken.len();
            let (first, filed) = run_taken(taken, &reader, options, &mut buf);
            run.adapt(ran, started.elapsed());
            let Ok(mut s) = sink.lock() else {
                stop.store(true, Ordering::SeqCst);
                return;
            };
            match filed {
                Ok(filed) => {
                    s.waiting.insert(first, filed);
                }
                Err(e) => {
                    if s.failed.is_none() {
                        s.failed = Some(e);
                    }
                    stop.store(true, Ordering::SeqCst);
                }
            }
            if s.failed.is_none() {
                write_ready(&mut s, &next_out, &stop);
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
    let feed = feed
        .into_inner()
        .map_err(|_| io::Error::other("a batch worker panicked"))?;
    feed.kept.file = reader.file;
    let sink = sink
        .into_inner()
        .map_err(|_| io::Error::other("a batch worker panicked"))?;
    if let Some(e) = sink.failed {
        return Err(e);
    }
    let mut written = sink.written;
    written.resumed += duplicates.load(Ordering::Relaxed);
    Ok(written)
}

/// Runs what a worker took (items, and kept lines read back), returning the first one's
/// sequence number and their lines.
fn run_taken(
    taken: Vec<Taken>,
    reader: &Kept,
    options: &RunOptions,
    buf: &mut Vec<u8>,
) -> (u64, io::Result<Filed>) {
    let first = match taken.first() {
        Some(Taken::Run(seq, _) | Taken::Kept(seq, _)) => *seq,
        None => 0,
    };
    let mut filed = Filed {
        items: taken.len() as u64,
        lines: Vec::with_capacity(256 * taken.len()),
        counts: RunSummary::default(),
    };
    for taken in taken {
        match taken {
            Taken::Run(_, item) => {
                let result = run_item(&item, options.shard, &options.item, buf);
                if let Err(e) = serde_json::to_writer(&mut filed.lines, &result) {
                    return (first, Err(io::Error::other(e)));
                }
                filed.lines.push(b'\n');
                filed.counts.count(result.status);
            }
            Taken::Kept(_, pos) => match reader.read(pos) {
                Ok(line) => {
                    filed.lines.extend_from_slice(&line);
                    filed.counts.resumed += 1;
                }
                Err(e) => return (first, Err(e)),
            },
        }
    }
    (first, Ok(filed))
}

/// Writes every line that is now next in order, all with one `write(2)`.
fn write_ready<W: Write>(s: &mut Sink<'_, W>, next_out: &AtomicU64, stop: &AtomicBool) {
    let mut next = next_out.load(Ordering::SeqCst);
    s.lines.clear();
    let mut counts = RunSummary::default();
    while let Some(filed) = s.waiting.remove(&next) {
        s.lines.extend_from_slice(&filed.lines);
        counts.add(&filed.counts);
        next += filed.items;
    }
    if s.lines.is_empty() {
        return;
    }
    let Sink {
        out,
        lines,
        written,
        ..
    } = s;
    match out.write_all(lines).and_then(|()| out.flush()) {
        Ok(()) => {
            written.add(&counts);
            next_out.store(next, Ordering::SeqCst);
        }
        Err(e) => {
            s.failed = Some(e);
            stop.store(true, Ordering::SeqCst);
        }
    }
}

/// The next items (or kept lines), at most `most` and at least one, with their sequence
/// numbers in the shard, once the first is inside the reorder window (the others too); none
/// when the manifest is done or the run stops.
fn take<I: Iterator<Item = Item>>(
    feed: &Mutex<Feed<'_, I>>,
    room: &Condvar,
    next_out: &AtomicU64,
    stop: &AtomicBool,
    window: u64,
    duplicates: &AtomicU64,
    most: usize,
) -> Vec<Taken> {
    let mut taken = Vec::new();
    let Ok(mut f) = feed.lock() else {
        return taken;
    };
    loop {
        if f.exhausted || stop.load(Ordering::SeqCst) {
            return taken;
        }
        if f.next_seq < next_out.load(Ordering::SeqCst) + window {
            break;
        }
        f.waiters += 1;
        let Ok(g) = room.wait(f) else {
            return taken;
        };
        f = g;
        f.waiters -= 1;
    }
    let limit = next_out.load(Ordering::SeqCst) + window;
    while taken.len() < most.max(1) && f.next_seq < limit {
        let Some(item) = f.items.next() else {
            f.exhausted = true;
            break;
        };
        let seq = f.next_seq;
        let kept = match f.kept.lines.get_mut(&item.id) {
            None => {
                f.next_seq += 1;
                taken.push(Taken::Run(seq, item));
                continue;
            }
            Some(entry) => entry.take(),
        };
        match kept {
            Some(pos) => {
                f.next_seq += 1;
                taken.push(Taken::Kept(seq, pos));
            }
            // The same id again: its kept line is already placed; as before resuming, the
            // item is not run again.
            None => {
                duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    taken
}

/// How many items a worker takes at once: one while items take long (a big image each, so
/// that both workers share them evenly and each line is written as soon as its item is
/// done), more while they are quick (tiny files, where one lock, one wake-up and one
/// `write(2)` per item cost more than the item itself: a run of quick items shares them).
#[derive(Debug)]
struct RunLength {
    items: usize,
}

impl RunLength {
    /// Items a run never exceeds: a run of quick items stays well under a millisecond or two.
    const MOST: usize = 64;
    /// Below this time per item, runs grow; above [`Self::SLOW`], they go back to one item.
    const QUICK: Duration = Duration::from_micros(100);
    const SLOW: Duration = Duration::from_millis(1);

    fn items(&self) -> usize {
        self.items
    }

    /// Learns from a run of `ran` items that took `took`.
    fn adapt(&mut self, ran: usize, took: Duration) {
        let per_item = took / u32::try_from(ran.max(1)).unwrap_or(u32::MAX);
        if per_item < Self::QUICK {
            self.items = (self.items * 2).min(Self::MOST);
        } else if per_item > Self::SLOW {
            self.items = 1;
        }
    }
}

impl Default for RunLength {
    fn default() -> Self {
        Self { items: 1 }
    }
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

/// Prepares a run that resumes `resume` into `out`: the `ok` lines of `resume` (and of the
/// aside file an interrupted resumed run left, [`aside_path`]) are copied to the aside file,
/// replacing it atomically; only then is `out` truncated (so `resume` may be `out` itself, and
/// a kill at any moment loses no `ok` line). Returns the kept lines, for [`run_shard`] to skip
/// their items and write each line again at its item's place, and `out`, open for writing. A
/// `resume` file that does not exist yet (the first attempt of an indexed job) resumes nothing.
/// Other lines (errors, mismatches, a torn last line) are dropped: their items run again. Kept
/// lines whose id is not in the shard's manifest any more are dropped too.
pub fn prepare_resume(resume: &Path, out: &Path) -> io::Result<(Kept, File)> {
    let aside = aside_path(out);
    let tmp = crate::atomic::TempFile::create_beside(out, "resume")?;
    let mut lines = HashMap::new();
    {
        let mut writer = io::BufWriter::new(tmp.file()?);
        let mut offset = 0u64;
        for source in [resume, aside.as_path()] {
            let input = match File::open(source) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut reader = BufReader::new(input);
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
                    && !lines.contains_key(&key.id)
                {
                    writer.write_all(&line)?;
                    lines.insert(key.id, Some((offset, line.len())));
                    offset += line.len() as u64;
                }
            }
        }
        writer.flush()?;
    }
    tmp.persist(&aside)?;
    let file = File::open(&aside)?;
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)?;
    Ok((
        Kept {
            lines,
            file: Some(file),
            aside: Some(aside),
        },
        out,
    ))
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
            // Enough quick items (missing files) for runs to grow to their longest and for
            // the reorder window to fill.
            let summary = run_shard(
                items(3000).into_iter(),
                &mut Kept::default(),
                &options,
                &mut out,
            )
            .unwrap();
            let want: Vec<String> = (0..3000)
                .filter(|i| i % 3 == 1)
                .map(|i| format!("item-{i}"))
                .collect();
            assert_eq!(ids(&out), want, "jobs {jobs}");
            assert_eq!(summary.error, want.len() as u64);
            assert_eq!(summary.worst(), ItemStatus::Error);
        }
    }

    #[test]
    fn runs_grow_while_items_are_quick_and_drop_to_one_on_a_slow_item() {
        let mut run = RunLength::default();
        assert_eq!(run.items(), 1);
        for _ in 0..10 {
            let n = run.items();
            run.adapt(n, Duration::from_micros(10) * u32::try_from(n).unwrap());
        }
        assert_eq!(run.items(), RunLength::MOST);
        // Between quick and slow: unchanged.
        run.adapt(
            RunLength::MOST,
            Duration::from_micros(300) * u32::try_from(RunLength::MOST).unwrap(),
        );
        assert_eq!(run.items(), RunLength::MOST);
        // One big image among tiny files: back to one item at a time.
        run.adapt(RunLength::MOST, Duration::from_millis(200));
        assert_eq!(run.items(), 1);
        run.adapt(0, Duration::ZERO);
        assert_eq!(run.items(), 2);
    }

    #[test]
    fn kept_lines_are_written_at_their_items_places_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        // An earlier run's lines, out of order, one of them not ok.
        std::fs::write(
            &path,
            "{\"id\":\"item-5\",\"status\":\"ok\",\"mark\":1}\n{\"id\":\"item-1\",\"status\":\"error\"}\n{\"id\":\"item-0\",\"status\":\"ok\",\"mark\":1}\n",
        )
        .unwrap();
        for jobs in [1, 3] {
            let (mut kept, mut file) = prepare_resume(&path, &path).unwrap();
            assert_eq!(kept.len(), 2);
            assert!(aside_path(&path).exists());
            let options = RunOptions {
                shard: Shard::ALL,
                by: ShardBy::Hash,
                jobs,
                item: ItemOptions::default(),
            };
            // The manifest names item-5 twice: its kept line is written once.
            let mut manifest = items(10);
            manifest.push(manifest[5].clone());
            let summary = run_shard(manifest.into_iter(), &mut kept, &options, &mut file).unwrap();
            kept.finish().unwrap();
            assert!(!aside_path(&path).exists());
            assert_eq!(summary.resumed, 3, "jobs {jobs}");
            let text = std::fs::read(&path).unwrap();
            let want: Vec<String> = (0..10).map(|i| format!("item-{i}")).collect();
            assert_eq!(ids(&text), want, "jobs {jobs}");
            let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            assert_eq!(
                lines[0],
                b"{\"id\":\"item-0\",\"status\":\"ok\",\"mark\":1}"
            );
            assert_eq!(
                lines[5],
                b"{\"id\":\"item-5\",\"status\":\"ok\",\"mark\":1}"
            );
        }
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
        let (kept, _) = prepare_resume(&path, &path).unwrap();
        assert_eq!(kept.len(), 2);
        assert!(kept.contains("a") && kept.contains("c") && !kept.contains("b"));
        // Truncated only once the kept lines are aside.
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(
            std::fs::read_to_string(aside_path(&path)).unwrap(),
            "{\"id\":\"a\",\"status\":\"ok\"}\n{\"id\":\"c\",\"status\":\"ok\"}\n"
        );
        // Killed before anything was written: the next resume still has both.
        drop(kept);
        std::fs::write(&path, "{\"id\":\"b\",\"status\":\"ok\"}\n").unwrap();
        let (again, _) = prepare_resume(&path, &path).unwrap();
        assert_eq!(again.len(), 3);
        let (none, _) = prepare_resume(&dir.path().join("missing"), &dir.path().join("o")).unwrap();
        assert!(none.is_empty());
    }
}
