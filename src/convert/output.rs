//! The converted output, digested while written: [`HashedOutput`] writes front to back
//! (positional writes, holes skipped for sparse raw output) and feeds every byte of the file,
//! holes as zeros, to one digest thread per algorithm. The digests therefore cover exactly the
//! bytes of OUT in file order, and OUT is never read back. The writes themselves run on a
//! writer thread, so that producing the next buffer (reading the input) overlaps writing the
//! last one, as qemu-img overlaps its requests. Large buffers (whole chunks read from the
//! input) are handed to the writer and the digests as they are, never copied into a write
//! buffer. When the output must be durable (`--sync`), the writer starts the kernel's
//! write-back every [`WRITE_BACK_BYTES`] as it writes, so the final `fsync` before the rename
//! has little left to wait for.
//!
//! Where the bytes go is an [`OutputSink`]: a file ([`FileSink`], positional writes that leave
//! holes unwritten), or a stream that takes every byte in order, holes as zeros
//! ([`StreamSink`]: standard output, or an upload's parts). Every writer produces its output
//! front to back, so any of them can be streamed.
//!
//! A file written is a [`crate::atomic::TempFile`]: where it lives, its clean-up and its
//! rename into place are [`crate::atomic`]'s, as are the fault hook's `enospc-after`,
//! `stall-after` and `fail-io` points consulted here.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::buffers::{BufferPool, PooledBuffer};
use crate::atomic::fault::{self, io_point};
use crate::digest::{Algorithm, Digest, Digester, Digests};

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

enum DigestMsg {
    Data(Arc<PooledBuffer>),
    Zeros(u64),
}

/// One buffer for the writer thread: `buf` goes at file offset `at`, except the `holes`
/// (start, len) ranges of it, which hold zeros and may be left unwritten.
struct WriteJob {
    at: u64,
    buf: Arc<PooledBuffer>,
    holes: Vec<(usize, usize)>,
}

/// What the writer thread is told.
enum WriterMsg {
    Write(WriteJob),
    /// The output is complete and `len` bytes long.
    End(u64),
}

/// Where a converted output's bytes go, front to back: every `write_at` starts at or after
/// the end of the one before, and the bytes between (holes) read as zeros.
pub trait OutputSink: Send {
    /// Writes `buf` at offset `at`. Its `holes` (start, len) ranges, in order, hold zeros
    /// that a sink able to leave holes need not write.
    fn write_at(&mut self, at: u64, buf: &[u8], holes: &[(usize, usize)]) -> io::Result<()>;
    /// The output ends at `len`: zeros from the last byte written to there.
    fn finish(&mut self, len: u64) -> io::Result<()>;
}

/// A regular file written in place: holes left unwritten, the length set at the end. With
/// `write_back`, the kernel is asked to start writing the output to the disk every
/// [`WRITE_BACK_BYTES`], for a final `fsync` with little left to do.
pub struct FileSink {
    file: File,
    write_back: bool,
    /// Written bytes whose write-back is not started yet: kicked WRITE_BACK_BYTES at a time,
    /// since a call per buffer makes the file system allocate and submit in small pieces.
    unflushed: Option<(u64, u64)>,
}

impl FileSink {
    /// Writes into `file` (a clone of the temporary file's handle).
    pub fn new(file: File, write_back: bool) -> Self {
        Self {
            file,
            write_back,
            unflushed: None,
        }
    }
}

impl OutputSink for FileSink {
    fn write_at(&mut self, at: u64, buf: &[u8], holes: &[(usize, usize)]) -> io::Result<()> {
        let tail = (buf.len(), 0);
        let mut from = 0usize;
        for &(start, len) in holes.iter().chain(std::iter::once(&tail)) {
            if start > from {
                io_point()?;
                let at = at + from as u64;
                let end = at + (start - from) as u64;
                self.file.write_all_at(&buf[from..start], at)?;
                if self.write_back {
                    let (first, _) = *self.unflushed.get_or_insert((at, end));
                    if end - first >= WRITE_BACK_BYTES {
                        start_write_back(&self.file, first, end - first);
                        self.unflushed = None;
                    } else {
                        self.unflushed = Some((first, end));
                    }
                }
            }
            from = start + len;
        }
        Ok(())
    }

    fn finish(&mut self, len: u64) -> io::Result<()> {
        if let Some((first, end)) = self.unflushed.take() {
            start_write_back(&self.file, first, end - first);
        }
        io_point()?;
        self.file.set_len(len)
    }
}

/// Where a stream's bytes go, in order: a pipe, or the parts of an upload.
pub trait StreamOut: Send {
    /// Writes all of `data`.
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// Everything is written: flush, send what is pending, and wait until it is stored.
    fn end(&mut self) -> io::Result<()>;
}

impl StreamOut for File {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        io::Write::write_all(self, data)
    }

    fn end(&mut self) -> io::Result<()> {
        io::Write::flush(self)
    }
}

/// A stream that takes every byte in order (a pipe, an upload): holes are written as zeros.
pub struct StreamSink<W: StreamOut> {
    out: W,
    /// Bytes written so far.
    position: u64,
}

impl<W: StreamOut> StreamSink<W> {
    /// Writes to `out` from its current position, taken as offset 0.
    pub fn new(out: W) -> Self {
        Self { out, position: 0 }
    }

    /// Writes zeros up to offset `to`.
    fn zeros_to(&mut self, to: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        while self.position < to {
            let n = (to - self.position).min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..n])?;
            self.position += n as u64;
        }
        Ok(())
    }
}

impl<W: StreamOut> OutputSink for StreamSink<W> {
    fn write_at(&mut self, at: u64, buf: &[u8], _holes: &[(usize, usize)]) -> io::Result<()> {
        if at < self.position {
            return Err(io::Error::other(format!(
                "a stream cannot go back from offset {} to {at}",
                self.position
            )));
        }
        self.zeros_to(at)?;
        io_point()?;
        self.out.write_all(buf)?;
        self.position += buf.len() as u64;
        Ok(())
    }

    fn finish(&mut self, len: u64) -> io::Result<()> {
        self.zeros_to(len)?;
        io_point()?;
        self.out.end()
    }
}

/// An output written front to back, with the digests of its bytes computed on the way.
pub struct HashedOutput {
    /// Where `pending` starts in the file.
    pending_at: u64,
    pending: PooledBuffer,
    /// Where written-out buffers return once the writer and the digests are done with them.
    pool: BufferPool,
    /// Ranges of `pending` (start, len) that are holes: digested as zeros, not written.
    holes: Vec<(usize, usize)>,
    senders: Vec<SyncSender<DigestMsg>>,
    threads: Vec<JoinHandle<Digest>>,
    writer: Option<(SyncSender<WriterMsg>, JoinHandle<io::Result<()>>)>,
    /// How far the writer thread has written.
    mark: Arc<WriteMark>,
}

/// How far the writer thread has written the output: every byte before [`WriteMark::wait_for`]'s
/// offset is in the file (its `pwrite` returned), so another descriptor of the file reads it.
/// `convert --verify` reads a qcow2 OUT back through its reader while later parts are still
/// being written, each part only once it is there.
#[derive(Debug, Default)]
pub struct WriteMark {
    /// (bytes written from offset 0 on, whether the writer thread has stopped).
    state: Mutex<(u64, bool)>,
    moved: Condvar,
}

impl WriteMark {
    /// Waits until the first `end` bytes are written: `true`, or `false` when the writer
    /// thread stopped first (the conversion failed, or the output ended before `end`).
    pub fn wait_for(&self, end: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match *state {
                (written, _) if written >= end => return true,
                (_, true) => return false,
                _ => {
                    state = self.moved.wait(state).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    fn set(&self, written: Option<u64>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match written {
            Some(w) => state.0 = state.0.max(w),
            None => state.1 = true,
        }
        self.moved.notify_all();
    }
}

/// Tells the waiters that the writer thread stopped, however it stops.
struct MarkStopped(Arc<WriteMark>);

impl Drop for MarkStopped {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

impl HashedOutput {
    /// Starts writing to `sink` at offset 0, digesting with `algorithms` (one thread each:
    /// MD5 and SHA-512 are sequential, so two algorithms run on two cores at once).
    pub fn new(sink: Box<dyn OutputSink>, algorithms: &[Algorithm]) -> io::Result<Self> {
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
        let mark = Arc::new(WriteMark::default());
        let writer_mark = Arc::clone(&mark);
        let handle = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || writer_thread(sink, rx, writer_mark))?;
        // Buffers in flight: one pending, and a queue's worth each for the writer and the
        // digest threads (which share them).
        let pool = BufferPool::new(2 * OUTPUT_QUEUE + 2);
        let mut pending = pool.take(0);
        pending.reserve(WRITE_BUFFER);
        Ok(Self {
            pending_at: 0,
            pending,
            pool,
            holes: Vec::new(),
            senders,
            threads,
            writer: Some((tx, handle)),
            mark,
        })
    }

    /// How far the writer thread has written (see [`WriteMark`]).
    pub fn mark(&self) -> Arc<WriteMark> {
        Arc::clone(&self.mark)
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

    /// Appends guest data (not metadata), as [`HashedOutput::write`]; the test fault
    /// `corrupt-data` may flip one of its bits.
    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        if fault::corrupts_data() {
            let mut copy = data.to_vec();
            fault::corrupt_data(&mut copy);
            return self.write(&copy);
        }
        self.write(data)
    }

    /// Appends `buf` without copying it when it is large: it goes to the writer and the
    /// digests as it is. Its `holes` (start, len) ranges, in order, apart and within `buf`,
    /// must hold zeros: they are left unwritten, as by [`HashedOutput::skip_zeros`].
    pub fn write_buffer(
        &mut self,
        mut buf: PooledBuffer,
        holes: Vec<(usize, usize)>,
    ) -> io::Result<()> {
        fault::corrupt_data(&mut buf);
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
        fault::output_grows_to(end)?;
        let full = Arc::new(buf);
        let job = WriteJob {
            at: self.pending_at,
            buf: Arc::clone(&full),
            holes,
        };
        let sent = match &self.writer {
            Some((tx, _)) => tx.send(WriterMsg::Write(job)).is_ok(),
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

    /// Writes what is pending, ends the output at `len` (extending it with zeros, a hole in
    /// a file), and returns the digests of the whole output.
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
        if self
            .writer
            .as_ref()
            .is_some_and(|(tx, _)| tx.send(WriterMsg::End(len)).is_err())
        {
            return Err(self.writer_error());
        }
        if let Some((tx, handle)) = self.writer.take() {
            drop(tx);
            handle
                .join()
                .map_err(|_| io::Error::other("the writer thread panicked"))??;
        }
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

/// Writes the jobs in order, then ends the output; the first error ends the thread (the
/// producer then sees its channel closed and collects the error). Closed without an end (the
/// conversion failed), the sink is dropped unfinished.
/// The bytes before a job's end are in the file once its `write_at` returned: `mark` says so.
fn writer_thread(
    mut sink: Box<dyn OutputSink>,
    rx: Receiver<WriterMsg>,
    mark: Arc<WriteMark>,
) -> io::Result<()> {
    let stopped = MarkStopped(mark);
    for msg in rx {
        match msg {
            WriterMsg::Write(job) => {
                sink.write_at(job.at, &job.buf, &job.holes)?;
                stopped.0.set(Some(job.at + job.buf.len() as u64));
            }
            WriterMsg::End(len) => return sink.finish(len),
        }
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
