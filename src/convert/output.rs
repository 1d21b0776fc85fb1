//! The output file: written aside, digested while written, renamed when complete.
//!
//! - [`TempFile`]: a file created beside OUT (same directory, so the final rename is atomic),
//!   registered in a process-wide list so that [`remove_temporary_files`] (called by the CLI's
//!   SIGINT/SIGTERM handler) can delete it, and deleted on drop unless persisted.
//! - [`HashedOutput`]: writes front to back (positional writes, holes skipped for sparse raw
//!   output) and feeds every byte of the file, holes as zeros, to one digest thread per
//!   algorithm. The digests therefore cover exactly the bytes of OUT in file order, and OUT is
//!   never read back. The writes themselves run on a writer thread, so that producing the next
//!   buffer (reading the input) overlaps writing the last one, as qemu-img overlaps its
//!   requests. Large buffers (whole chunks read from the input) are handed to the writer and
//!   the digests as they are, never copied into a write buffer. When the output must be
//!   durable (`--sync`), the writer starts the kernel's write-back every
//!   [`WRITE_BACK_BYTES`] as it writes, so the final `fsync` before the rename has little left
//!   to wait for.
//!
//! Test hook: the environment variable `VMIMAGE_TEST_FAULT` (read only here, documented for
//! the test suite; comma-separated settings) injects failures that are hard to cause otherwise:
//! - `enospc-after=N` fails the first write that would take the output past N bytes with
//!   `ENOSPC`;
//! - `stall-after=N` stops making progress once N bytes are written (the tests then interrupt
//!   the process to check the clean-up);
//! - `fail-io=N` fails the N-th write-side operation of the conversion (counting from 1) with
//!   `EIO`: creating the temporary output or spill file, each write to either, setting the
//!   output's length, syncing it, renaming it into place (and, with `--metadata`, creating,
//!   writing, syncing and renaming each metadata file). The tests try every N until the
//!   conversion succeeds, so every write of a conversion is a tested failure point;
//! - `metadata-rule` makes `convert --metadata` find, once the output is written, that the
//!   metadata breaks a rule (its virtual size unknown): no rule the output's bytes decide can
//!   break otherwise, since the virtual size the rules read is known before converting;
//! - `spill-limit=N` keeps at most N bytes of compressed clusters in memory instead of
//!   [`super::spill::SPILL_MEMORY_LIMIT`], so that small tests exercise the spill file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use super::buffers::{BufferPool, PooledBuffer};
use crate::digest::{Algorithm, Digest, Digester, Digests};

/// The environment variable of the test-only fault hook.
pub const FAULT_ENV: &str = "VMIMAGE_TEST_FAULT";
/// Bytes gathered before one write system call and one hand-off to the digest threads.
pub const WRITE_BUFFER: usize = 4 * 1024 * 1024;
/// Buffers smaller than this are copied into the write buffer rather than handed over: a
/// system call per few kilobytes would cost more than the copy.
const HANDOFF_MIN: usize = 256 * 1024;
/// Buffers queued per digest thread and for the writer thread: bounds memory at
/// `WRITE_BUFFER` times this, per thread.
pub const OUTPUT_QUEUE: usize = 8;
/// With `--sync`, the writer starts the kernel's write-back every this many bytes.
pub const WRITE_BACK_BYTES: u64 = 16 * 1024 * 1024;
/// Zeros fed to the digests per update for holes.
const ZERO_BLOCK: usize = 1024 * 1024;

/// Temporary files that must not survive the process, and whether an interrupt is being handled.
struct Registry {
    paths: Vec<PathBuf>,
    aborted: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    paths: Vec::new(),
    aborted: false,
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Deletes every temporary file of conversions in progress and makes later ones fail; for a
/// signal handler, which then exits. Holding the registry lock while deleting means no
/// temporary file can be created or renamed into place concurrently. Returns how many files
/// were removed: none when no conversion had started writing, or when its output had already
/// been renamed into place, complete.
pub fn remove_temporary_files() -> usize {
    let mut reg = registry();
    reg.aborted = true;
    let removed = reg.paths.len();
    for p in reg.paths.drain(..) {
        let _ = std::fs::remove_file(&p);
    }
    removed
}

/// A file beside the output that is removed unless [`TempFile::persist`] renames it.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Creates `.<name>.<tag>.<pid>` beside `target`, exclusively (an existing file of that
    /// name is an error, never overwritten).
    pub fn create_beside(target: &Path, tag: &str) -> io::Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{tag}.{}", std::process::id()));
        let path = dir.join(tmp_name);
        let mut reg = registry();
        if reg.aborted {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        io_point()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        reg.paths.push(path.clone());
        Ok(Self {
            path,
            file: Some(file),
        })
    }

    /// The open file.
    pub fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("temporary file already closed"))
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the file's data and metadata to the disk.
    pub fn sync(&self) -> io::Result<()> {
        io_point()?;
        self.file()?.sync_all()
    }

    /// Renames the file to `target` (replacing it), unless an interrupt came first.
    pub fn persist(mut self, target: &Path) -> io::Result<()> {
        let mut reg = registry();
        if reg.aborted {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        io_point()?;
        self.file = None;
        std::fs::rename(&self.path, target)?;
        reg.paths.retain(|p| p != &self.path);
        // Nothing left to remove on drop.
        self.path = PathBuf::new();
        Ok(())
    }
}

/// How one file of [`persist_all`] went into place, so that it can be undone.
enum Placed {
    /// The target did not exist: undo by renaming it back.
    Created,
    /// Exchanged with an existing target, whose old content now sits at the temporary path:
    /// undo by exchanging again.
    Exchanged,
    /// Renamed over an existing target on a file system that cannot exchange: cannot be undone.
    Replaced,
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: swaps two paths atomically.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves every temporary file to its target, all or none: a failure part way puts back every
/// target already replaced (an existing target is exchanged with its temporary file, not
/// overwritten, so its old content stays at hand until every file is in place) and removes the
/// new files. This is how OUT and its metadata appear together or not at all (issue 13,
/// defect 6). On a file system without `RENAME_EXCHANGE`, an existing target is renamed over
/// and that one replacement cannot be undone.
pub fn persist_all(files: Vec<(TempFile, &Path)>) -> io::Result<()> {
    let mut reg = registry();
    if reg.aborted {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
    }
    let mut files = files;
    let mut placed: Vec<Placed> = Vec::new();
    let mut failure = None;
    for (tmp, target) in &mut files {
        tmp.file = None;
        let result = io_point().and_then(|()| {
            let existing = std::fs::symlink_metadata(*target).ok();
            match existing {
                Some(m) if !m.is_dir() => match exchange(&tmp.path, target) {
                    Ok(()) => Ok(Placed::Exchanged),
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                        ) =>
                    {
                        std::fs::rename(&tmp.path, *target).map(|()| Placed::Replaced)
                    }
                    Err(e) => Err(e),
                },
                Some(_) => std::fs::rename(&tmp.path, *target).map(|()| Placed::Replaced),
                None => std::fs::rename(&tmp.path, *target).map(|()| Placed::Created),
            }
        });
        match result {
            Ok(p) => placed.push(p),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        // Undo in reverse order; each temporary path then holds a new file again, which the
        // drop of its `TempFile` removes.
        for (p, (tmp, target)) in placed.iter().zip(&files).rev() {
            let _ = match p {
                Placed::Created => std::fs::rename(target, &tmp.path),
                Placed::Exchanged => exchange(&tmp.path, target),
                Placed::Replaced => Ok(()),
            };
        }
        drop(reg);
        return Err(e);
    }
    for (p, (tmp, _)) in placed.iter().zip(&mut files) {
        if matches!(p, Placed::Exchanged) {
            // The old content of the target.
            let _ = std::fs::remove_file(&tmp.path);
        }
        let path = std::mem::take(&mut tmp.path);
        reg.paths.retain(|q| q != &path);
    }
    drop(reg);
    Ok(())
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        self.file = None;
        let mut reg = registry();
        let _ = std::fs::remove_file(&self.path);
        reg.paths.retain(|p| p != &self.path);
    }
}

/// The test-only fault hook (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
struct Fault {
    enospc_after: Option<u64>,
    stall_after: Option<u64>,
    fail_io: Option<u64>,
    spill_limit: Option<usize>,
    metadata_rule: bool,
}

/// Write-side operations so far, for `fail-io=N`.
static IO_OPERATIONS: AtomicU64 = AtomicU64::new(0);

/// The hook's settings, read once per process.
fn fault() -> &'static Fault {
    static FAULT: OnceLock<Fault> = OnceLock::new();
    FAULT.get_or_init(Fault::from_env)
}

/// Whether `metadata-rule` asks the conversion to see its metadata break a rule once the
/// output is written.
pub(crate) fn fault_breaks_metadata_rule() -> bool {
    fault().metadata_rule
}

/// A write-side operation on the output or the spill file is about to happen: `fail-io=N`
/// fails the N-th one.
pub(crate) fn io_point() -> io::Result<()> {
    if let Some(n) = fault().fail_io {
        let this = IO_OPERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        if this == n {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
    }
    Ok(())
}

/// The memory limit of the compressed-cluster store: `spill-limit=N`, or the default.
pub(crate) fn spill_memory_limit() -> usize {
    fault()
        .spill_limit
        .unwrap_or(super::spill::SPILL_MEMORY_LIMIT)
}

impl Fault {
    fn from_env() -> Self {
        let mut f = Fault::default();
        if let Ok(v) = std::env::var(FAULT_ENV) {
            for part in v.split(',') {
                if let Some(n) = part.strip_prefix("enospc-after=") {
                    f.enospc_after = n.parse().ok();
                } else if let Some(n) = part.strip_prefix("stall-after=") {
                    f.stall_after = n.parse().ok();
                } else if let Some(n) = part.strip_prefix("fail-io=") {
                    f.fail_io = n.parse().ok();
                } else if let Some(n) = part.strip_prefix("spill-limit=") {
                    f.spill_limit = n.parse().ok();
                } else if part == "metadata-rule" {
                    f.metadata_rule = true;
                }
            }
        }
        f
    }

    fn check(&self, end: u64) -> io::Result<()> {
        if self.enospc_after.is_some_and(|n| end > n) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if self.stall_after.is_some_and(|n| end > n) {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        Ok(())
    }
}

enum DigestMsg {
    Data(Arc<PooledBuffer>),
    Zeros(u64),
}

/// One buffer for the writer thread: `buf` goes at file offset `at`, except the `holes`
/// (start, len) ranges of it, which are left unwritten.
struct WriteJob {
    at: u64,
    buf: Arc<PooledBuffer>,
    holes: Vec<(usize, usize)>,
}

/// An output file written front to back, with the digests of its bytes computed on the way.
pub struct HashedOutput<'f> {
    file: &'f File,
    /// Where `pending` starts in the file.
    pending_at: u64,
    pending: PooledBuffer,
    /// Where written-out buffers return once the writer and the digests are done with them.
    pool: BufferPool,
    /// Ranges of `pending` (start, len) that are holes: digested as zeros, not written.
    holes: Vec<(usize, usize)>,
    senders: Vec<SyncSender<DigestMsg>>,
    threads: Vec<JoinHandle<Digest>>,
    writer: Option<(SyncSender<WriteJob>, JoinHandle<io::Result<()>>)>,
    fault: &'static Fault,
}

impl<'f> HashedOutput<'f> {
    /// Starts writing `file` at offset 0, digesting with `algorithms` (one thread each: MD5
    /// and SHA-512 are sequential, so two algorithms run on two cores at once). With
    /// `write_back`, the kernel is asked to start writing the output to the disk every
    /// [`WRITE_BACK_BYTES`], for a final `fsync` with little left to do.
    pub fn new(file: &'f File, algorithms: &[Algorithm], write_back: bool) -> io::Result<Self> {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        let mut seen = Vec::new();
        for &a in algorithms {
            if seen.contains(&a) {
                continue;
            }
            seen.push(a);
            let (tx, rx) = sync_channel(OUTPUT_QUEUE);
            let handle = std::thread::Builder::new()
                .name(format!("digest-{a}"))
                .spawn(move || digest_thread(a, rx))?;
            senders.push(tx);
            threads.push(handle);
        }
        let (tx, rx) = sync_channel(OUTPUT_QUEUE);
        let owned = file.try_clone()?;
        let handle = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || writer_thread(owned, rx, write_back))?;
        // Buffers in flight: one pending, and a queue's worth each for the writer and the
        // digest threads (which share them).
        let pool = BufferPool::new(2 * OUTPUT_QUEUE + 2);
        let mut pending = pool.take(0);
        pending.reserve(WRITE_BUFFER);
        Ok(Self {
            file,
            pending_at: 0,
            pending,
            pool,
            holes: Vec::new(),
            senders,
            threads,
            writer: Some((tx, handle)),
            fault: fault(),
        })
    }

    /// The offset the next byte goes to.
    pub fn position(&self) -> u64 {
        self.pending_at + self.pending.len() as u64
    }

    /// Appends `data`.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = WRITE_BUFFER - self.pending.len();
            let n = room.min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() == WRITE_BUFFER {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Appends `len` zero bytes.
    pub fn write_zeros(&mut self, mut len: u64) -> io::Result<()> {
        static ZEROS: [u8; 4096] = [0; 4096];
        while len > 0 {
            let n = len.min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..n])?;
            len -= n as u64;
        }
        Ok(())
    }

    /// Leaves a hole of `len` bytes (they read as zeros, and are digested as zeros). Small
    /// holes ride in the write buffer (as zeros for the digests, skipped by the writes); large
    /// ones are sent to the digest threads as a count.
    pub fn skip_zeros(&mut self, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        if len < ZERO_BLOCK as u64 && self.pending.len() + (len as usize) <= WRITE_BUFFER {
            let at = self.pending.len();
            match self.holes.last_mut() {
                Some((s, l)) if *s + *l == at => *l += len as usize,
                _ => self.holes.push((at, len as usize)),
            }
            self.pending.resize(at + len as usize, 0);
            if self.pending.len() == WRITE_BUFFER {
                self.flush()?;
            }
            return Ok(());
        }
        self.flush()?;
        self.send(DigestMsg::Zeros(len))?;
        self.pending_at = self
            .pending_at
            .checked_add(len)
            .ok_or_else(|| io::Error::other("output offset overflow"))?;
        Ok(())
    }

    /// Appends `buf` without copying it when it is large: it goes to the writer and the
    /// digests as it is. Its `holes` (start, len) ranges, in order, apart and within `buf`,
    /// must hold zeros: they are left unwritten, as by [`HashedOutput::skip_zeros`].
    pub fn write_buffer(
        &mut self,
        buf: PooledBuffer,
        holes: Vec<(usize, usize)>,
    ) -> io::Result<()> {
        if buf.len() < HANDOFF_MIN {
            let mut from = 0;
            for &(start, len) in &holes {
                self.write(&buf[from..start])?;
                self.skip_zeros(len as u64)?;
                from = start + len;
            }
            return self.write(&buf[from..]);
        }
        self.flush()?;
        self.dispatch(buf, holes)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut next = self.pool.take(0);
        next.reserve(WRITE_BUFFER);
        let full = std::mem::replace(&mut self.pending, next);
        let holes = std::mem::take(&mut self.holes);
        self.dispatch(full, holes)
    }

    /// Sends `buf`, which goes at the current position, to the writer and the digests.
    fn dispatch(&mut self, buf: PooledBuffer, holes: Vec<(usize, usize)>) -> io::Result<()> {
        let end = self
            .pending_at
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::other("output offset overflow"))?;
        self.fault.check(end)?;
        let full = Arc::new(buf);
        let job = WriteJob {
            at: self.pending_at,
            buf: Arc::clone(&full),
            holes,
        };
        let sent = match &self.writer {
            Some((tx, _)) => tx.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.writer_error());
        }
        self.pending_at = end;
        self.send(DigestMsg::Data(full))
    }

    /// The writer thread stopped early: its error.
    fn writer_error(&mut self) -> io::Error {
        match self.writer.take() {
            Some((tx, handle)) => {
                drop(tx);
                match handle.join() {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => io::Error::other("the writer thread stopped"),
                    Err(_) => io::Error::other("the writer thread panicked"),
                }
            }
            None => io::Error::other("the writer thread stopped"),
        }
    }

    fn send(&mut self, msg: DigestMsg) -> io::Result<()> {
        let lost = || io::Error::other("a digest thread stopped");
        match msg {
            DigestMsg::Data(buf) => {
                for tx in &self.senders {
                    tx.send(DigestMsg::Data(Arc::clone(&buf)))
                        .map_err(|_| lost())?;
                }
            }
            DigestMsg::Zeros(n) => {
                for tx in &self.senders {
                    tx.send(DigestMsg::Zeros(n)).map_err(|_| lost())?;
                }
            }
        }
        Ok(())
    }

    /// Writes what is pending, sets the file length to `len` (extending with a hole, which
    /// is digested as zeros), and returns the digests of the whole file.
    pub fn finish(mut self, len: u64) -> io::Result<Digests> {
        self.flush()?;
        let pos = self.position();
        if len < pos {
            return Err(io::Error::other(format!(
                "output length {len} is shorter than the {pos} bytes written"
            )));
        }
        self.skip_zeros(len - pos)?;
        // A short tail hole rides in the buffer: flush it to the digests too.
        self.flush()?;
        if let Some((tx, handle)) = self.writer.take() {
            drop(tx);
            handle
                .join()
                .map_err(|_| io::Error::other("the writer thread panicked"))??;
        }
        io_point()?;
        self.file.set_len(len)?;
        self.senders.clear();
        let mut digests = Vec::new();
        for t in self.threads.drain(..) {
            digests.push(
                t.join()
                    .map_err(|_| io::Error::other("a digest thread panicked"))?,
            );
        }
        Ok(Digests { size: len, digests })
    }
}

/// Writes the jobs in order; the first error ends the thread (the producer then sees its
/// channel closed and collects the error).
fn writer_thread(file: File, rx: Receiver<WriteJob>, write_back: bool) -> io::Result<()> {
    // Written bytes whose write-back is not started yet: kicked WRITE_BACK_BYTES at a time,
    // since a call per buffer makes the file system allocate and submit in small pieces.
    let mut unflushed: Option<(u64, u64)> = None;
    for job in rx {
        let tail = (job.buf.len(), 0);
        let mut from = 0usize;
        for &(start, len) in job.holes.iter().chain(std::iter::once(&tail)) {
            if start > from {
                io_point()?;
                let at = job.at + from as u64;
                let end = at + (start - from) as u64;
                file.write_all_at(&job.buf[from..start], at)?;
                if write_back {
                    let (first, _) = *unflushed.get_or_insert((at, end));
                    if end - first >= WRITE_BACK_BYTES {
                        start_write_back(&file, first, end - first);
                        unflushed = None;
                    } else {
                        unflushed = Some((first, end));
                    }
                }
            }
            from = start + len;
        }
    }
    if let Some((first, end)) = unflushed {
        start_write_back(&file, first, end - first);
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `at` to the disk now, without waiting:
/// dirty pages of a multi-gigabyte output then do not pile up for the final `fsync`. Only a
/// hint, so its failure (a file system without the call) is ignored: the `fsync` still makes
/// the output durable.
fn start_write_back(file: &File, at: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(nbytes)) = (i64::try_from(at), i64::try_from(len)) else {
            return;
        };
        // SAFETY: the descriptor is open for the duration of the call; the call reads no
        // user memory.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset,
                nbytes,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, at, len);
}

fn digest_thread(algorithm: Algorithm, rx: Receiver<DigestMsg>) -> Digest {
    let zeros = vec![0u8; ZERO_BLOCK];
    let mut digester = Digester::new(algorithm);
    for msg in rx {
        match msg {
            DigestMsg::Data(buf) => digester.update(&buf),
            DigestMsg::Zeros(mut n) => {
                while n > 0 {
                    let k = n.min(ZERO_BLOCK as u64) as usize;
                    digester.update(&zeros[..k]);
                    n -= k as u64;
                }
            }
        }
    }
    digester.finish()
}
