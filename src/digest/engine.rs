//! The one-pass engine: one byte stream fed to every requested algorithm at once.
//!
//! MD5 and SHA-512 are chains (SPEC "What a cloud records"): one file's digest cannot be split
//! across cores, but two *algorithms* can run on two cores. [`DigestSet`] gathers the stream
//! into fixed-size chunks; each full chunk is shared (an `Arc`, never copied) with one worker
//! thread per algorithm, and the producer goes on filling the next chunk meanwhile, so reading
//! overlaps hashing. Chunks come from a small pool: when every chunk is in flight the producer
//! waits, so memory is `max_buffers * chunk_size` whatever the stream's length (8 MiB by
//! default), and a slow algorithm slows the reader instead of growing a queue.
//!
//! Streams shorter than one chunk never start a thread: they are hashed inline at
//! [`DigestSet::finish`]. If the operating system refuses a thread, the set hashes inline too.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use super::algorithm::Algorithm;
use super::backend::Hasher;
use super::digests::{Digest, Digests};

/// Bytes per chunk by default: fits a core's 2 MiB L2 cache here, large enough that the
/// per-chunk hand-off (a channel send per algorithm) is noise. Chosen with
/// `benches/digest.rs` (`engine/chunk-size`).
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;

/// Chunks in flight by default: enough that a worker never waits for the reader while the
/// other worker is one or two chunks behind. Memory is this times the chunk size.
pub const DEFAULT_MAX_BUFFERS: usize = 8;

/// Smallest chunk accepted, so that a misconfiguration cannot turn into a thread hand-off per
/// byte.
pub const MIN_CHUNK_SIZE: usize = 4096;

/// How the engine cuts and buffers the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Bytes per chunk handed to the workers (at least [`MIN_CHUNK_SIZE`]).
    pub chunk_size: usize,
    /// Chunks in flight at most (at least 2): the memory bound.
    pub max_buffers: usize,
    /// Whether to use worker threads at all; `false` hashes on the caller's thread.
    pub threads: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_buffers: DEFAULT_MAX_BUFFERS,
            threads: true,
        }
    }
}

/// A filled chunk shared by every worker; its buffer goes back to the pool when the last
/// worker is done with it.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
    recycle: Sender<Vec<u8>>,
}

impl Chunk {
    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // The pool may be gone (the set was dropped mid-stream): then the buffer is freed.
        let _ = self.recycle.send(std::mem::take(&mut self.buf));
    }
}

/// The worker threads of a set that has outgrown one chunk.
struct Workers {
    senders: Vec<Sender<Arc<Chunk>>>,
    handles: Vec<JoinHandle<Hasher>>,
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    /// Returned buffers not yet reused.
    free: Vec<Vec<u8>>,
    allocated: usize,
}

enum State {
    /// No thread yet (or threads unavailable): hashers run on the caller's thread.
    Inline(Vec<Hasher>),
    /// One worker per algorithm.
    Threaded(Workers),
}

/// Several algorithms fed the same byte stream, each on its own core once the stream is
/// longer than a chunk.
///
/// ```
/// use vmimage::digest::{Algorithm, DigestSet};
/// let mut set = DigestSet::new(&Algorithm::DEFAULT);
/// set.update(b"hello\n");
/// let digests = set.finish();
/// assert_eq!(digests.get(Algorithm::Md5).unwrap().hex(), "b1946ac92492d2347c6235b4d2611184");
/// ```
pub struct DigestSet {
    algorithms: Vec<Algorithm>,
    config: EngineConfig,
    state: State,
    /// The chunk being filled: always `config.chunk_size` long, `filled` bytes valid.
    buf: Vec<u8>,
    filled: usize,
    len: u64,
}

/// `algorithms` without repeats, in the order of their first mention: the digests a set
/// returns.
pub(crate) fn unique_algorithms(algorithms: &[Algorithm]) -> Vec<Algorithm> {
    let mut unique = Vec::with_capacity(algorithms.len());
    for a in algorithms {
        if !unique.contains(a) {
            unique.push(*a);
        }
    }
    unique
}

impl DigestSet {
    /// A set computing `algorithms` (duplicates are ignored), with the default engine.
    pub fn new(algorithms: &[Algorithm]) -> Self {
        Self::with_config(algorithms, EngineConfig::default())
    }

    /// A set computing `algorithms` with an explicit chunk size, pool size and threading.
    pub fn with_config(algorithms: &[Algorithm], config: EngineConfig) -> Self {
        let unique = unique_algorithms(algorithms);
        let config = EngineConfig {
            chunk_size: config.chunk_size.max(MIN_CHUNK_SIZE),
            max_buffers: config.max_buffers.max(2),
            threads: config.threads,
        };
        Self {
            state: State::Inline(unique.iter().map(|a| Hasher::new(*a)).collect()),
            algorithms: unique,
            config,
            buf: Vec::new(),
            filled: 0,
            len: 0,
        }
    }

    /// The algorithms, in the order their digests will be returned.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feeds the next bytes of the stream (copied into the current chunk).
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            self.ensure_buffer();
            let room = self.config.chunk_size - self.filled;
            let n = room.min(data.len());
            let (head, rest) = data.split_at(n);
            self.buf[self.filled..self.filled + n].copy_from_slice(head);
            self.filled += n;
            self.len += n as u64;
            data = rest;
            if self.filled == self.config.chunk_size {
                self.dispatch();
            }
        }
    }

    /// Reads `reader` to its end straight into the chunks (no extra copy), calling `progress`
    /// with the size of every read. Returns the bytes read.
    pub fn read_from<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> io::Result<u64> {
        let start = self.len;
        loop {
            self.ensure_buffer();
            let n = match reader.read(&mut self.buf[self.filled..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.filled += n;
            self.len += n as u64;
            if let Some(p) = progress {
                p(n as u64);
            }
            if self.filled == self.config.chunk_size {
                self.dispatch();
            }
        }
        Ok(self.len - start)
    }

    /// Finishes every algorithm; digests come in the order the algorithms were given.
    pub fn finish(mut self) -> Digests {
        let hashers = match std::mem::replace(&mut self.state, State::Inline(Vec::new())) {
            State::Inline(mut hashers) => {
                let data = &self.buf[..self.filled];
                for h in &mut hashers {
                    h.update(data);
                }
                hashers
            }
            State::Threaded(workers) => {
                let mut workers = workers;
                if self.filled > 0 {
                    let buf = std::mem::take(&mut self.buf);
                    send_chunk(&mut workers, buf, self.filled);
                }
                let Workers {
                    senders, handles, ..
                } = workers;
                // Closing the channels ends each worker's loop once it has drained its queue.
                drop(senders);
                handles
                    .into_iter()
                    .map(|h| match h.join() {
                        Ok(hasher) => hasher,
                        // A worker only runs the hash functions, which do not panic; if one
                        // did, that is a bug to surface, not a digest to make up.
                        Err(panic) => std::panic::resume_unwind(panic),
                    })
                    .collect()
            }
        };
        Digests {
            size: self.len,
            digests: self
                .algorithms
                .iter()
                .zip(hashers)
                .map(|(algorithm, h)| Digest {
                    algorithm: *algorithm,
                    bytes: h.finish(),
                })
                .collect(),
        }
    }

    /// Makes sure the current chunk buffer exists (it is allocated on first use).
    fn ensure_buffer(&mut self) {
        if self.buf.len() != self.config.chunk_size {
            self.buf = vec![0; self.config.chunk_size];
            self.filled = 0;
        }
    }

    /// Hands the full current chunk to the workers (starting them on the first chunk) and
    /// takes an empty one from the pool.
    fn dispatch(&mut self) {
        if let State::Inline(hashers) = &mut self.state {
            let spawned = if self.config.threads {
                spawn_workers(hashers)
            } else {
                None
            };
            match spawned {
                Some(workers) => self.state = State::Threaded(workers),
                None => {
                    let data = &self.buf[..self.filled];
                    for h in hashers.iter_mut() {
                        h.update(data);
                    }
                    self.filled = 0;
                    return;
                }
            }
        }
        if let State::Threaded(workers) = &mut self.state {
            let next = take_free(workers, &self.config);
            let full = std::mem::replace(&mut self.buf, next);
            send_chunk(workers, full, self.filled);
            self.filled = 0;
        }
    }
}

/// One algorithm over a byte stream, computed on the caller's thread with no buffering but
/// the algorithm's own block: for callers that already give each algorithm its own thread
/// (`convert` hashes its output this way), where a [`DigestSet`] would add a copy and a
/// second thread per algorithm.
///
/// ```
/// use vmimage::digest::{Algorithm, Digester};
/// let mut md5 = Digester::new(Algorithm::Md5);
/// md5.update(b"hello\n");
/// assert_eq!(md5.finish().hex(), "b1946ac92492d2347c6235b4d2611184");
/// ```
#[derive(Clone)]
pub struct Digester {
    algorithm: Algorithm,
    hasher: Hasher,
}

impl Digester {
    /// A fresh computation of `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            hasher: Hasher::new(algorithm),
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest {
            algorithm: self.algorithm,
            bytes: self.hasher.finish(),
        }
    }
}

/// Starts one worker per hasher; `None` (and the hashers untouched) if any spawn fails.
fn spawn_workers(hashers: &mut Vec<Hasher>) -> Option<Workers> {
    let (free_tx, free_rx) = mpsc::channel();
    let mut senders = Vec::with_capacity(hashers.len());
    let mut handles = Vec::with_capacity(hashers.len());
    for hasher in hashers.iter() {
        let (tx, rx) = mpsc::channel::<Arc<Chunk>>();
        let mut hasher = hasher.clone();
        let handle = std::thread::Builder::new()
            .name("vmimage-digest".into())
            .spawn(move || {
                for chunk in rx {
                    hasher.update(chunk.data());
                }
                hasher
            });
        match handle {
            Ok(h) => {
                senders.push(tx);
                handles.push(h);
            }
            Err(_) => {
                // Close the channels of the workers already started; they end at once, and
                // the caller's own hashers (still intact) carry on inline.
                drop(senders);
                for h in handles {
                    let _ = h.join();
                }
                return None;
            }
        }
    }
    // The clones now live in the threads; the originals hold only the state before the first
    // chunk, which the threads also have, so they are no longer needed.
    hashers.clear();
    Some(Workers {
        senders,
        handles,
        free_tx,
        free_rx,
        free: Vec::new(),
        allocated: 1,
    })
}

/// An empty chunk buffer: a returned one, a new one while under the pool size, or else it
/// waits for the workers (back-pressure: the reader runs at the slowest algorithm's speed).
///
/// When it must wait, it waits until half the pool is free, not just one buffer: the reader
/// then refills in bursts and sleeps once per burst instead of once per chunk, and the workers
/// always have a queue. On a loaded machine every wake-up costs a scheduling delay, and a
/// per-chunk ping-pong between reader and workers measured several times slower.
fn take_free(workers: &mut Workers, config: &EngineConfig) -> Vec<u8> {
    workers.free.extend(workers.free_rx.try_iter());
    if let Some(buf) = workers.free.pop() {
        return buf;
    }
    if workers.allocated < config.max_buffers {
        workers.allocated += 1;
        return vec![0; config.chunk_size];
    }
    let wanted = (config.max_buffers / 2).max(1);
    while workers.free.len() < wanted {
        // `free_tx` lives in `workers`, so the channel cannot close; a buffer comes back
        // whenever every worker is done with some chunk.
        match workers.free_rx.recv() {
            Ok(buf) => workers.free.push(buf),
            Err(_) => break,
        }
    }
    workers
        .free
        .pop()
        .unwrap_or_else(|| vec![0; config.chunk_size])
}

fn send_chunk(workers: &mut Workers, buf: Vec<u8>, len: usize) {
    let chunk = Arc::new(Chunk {
        buf,
        len,
        recycle: workers.free_tx.clone(),
    });
    for tx in &workers.senders {
        // A closed channel means that worker panicked; `finish` reports it when joining.
        let _ = tx.send(Arc::clone(&chunk));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(algs: &[Algorithm], data: &[u8]) -> Digests {
        let mut set = DigestSet::with_config(
            algs,
            EngineConfig {
                threads: false,
                ..EngineConfig::default()
            },
        );
        set.update(data);
        set.finish()
    }

    #[test]
    fn threaded_and_inline_sets_agree_around_chunk_boundaries() {
        let chunk = MIN_CHUNK_SIZE;
        let data: Vec<u8> = (0..chunk * 5 + 3).map(|i| (i * 31 % 251) as u8).collect();
        let config = EngineConfig {
            chunk_size: chunk,
            max_buffers: 2,
            threads: true,
        };
        for len in [
            0,
            1,
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk,
            3 * chunk + 7,
            data.len(),
        ] {
            let want = inline(&Algorithm::ALL, &data[..len]);
            // Fed in odd pieces, so that chunk edges fall inside updates.
            let mut set = DigestSet::with_config(&Algorithm::ALL, config);
            for piece in data[..len].chunks(1000) {
                set.update(piece);
            }
            assert_eq!(set.finish(), want, "length {len}");
            // Read through `read_from`.
            let mut set = DigestSet::with_config(&Algorithm::ALL, config);
            let mut reader = &data[..len];
            assert_eq!(set.read_from(&mut reader, None).unwrap(), len as u64);
            assert_eq!(set.finish(), want, "length {len} via read_from");
        }
    }

    #[test]
    fn duplicate_algorithms_are_computed_once_in_the_given_order() {
        let d = inline(
            &[Algorithm::Sha256, Algorithm::Md5, Algorithm::Sha256],
            b"abc",
        );
        let algs: Vec<_> = d.digests.iter().map(|d| d.algorithm).collect();
        assert_eq!(algs, vec![Algorithm::Sha256, Algorithm::Md5]);
        assert_eq!(d.size, 3);
    }

    #[test]
    fn a_set_dropped_mid_stream_stops_its_workers_without_blocking() {
        let mut set = DigestSet::with_config(
            &Algorithm::DEFAULT,
            EngineConfig {
                chunk_size: MIN_CHUNK_SIZE,
                max_buffers: 2,
                threads: true,
            },
        );
        set.update(&vec![7u8; MIN_CHUNK_SIZE * 10]);
        drop(set);
    }
}
