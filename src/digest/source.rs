//! Where the bytes come from: a file (read once, checked for changes), standard input or any
//! reader.
//!
//! Files are read with large sequential `read(2)` calls straight into the engine's chunks,
//! not memory-mapped. `benches/digest.rs` (`source/*`) compares the read pipeline with the
//! best case for a mapping (the hashers reading the mapped file directly, no copy): the
//! mapping saves the page-cache copy, but that copy runs on the reader thread while the workers
//! hash, so end to end `vmimage hash` on a warm 2 GiB file already takes about the time of MD5
//! alone over it (docs/benchmarks.md, "Speed: hash"); a mapping could win a few percent at most. It
//! would also bring a failure mode reads do not have: a file truncated while mapped raises SIGBUS
//! and kills the process (b3sum's open issue #488; ripgrep's library defaults to no mmap for this
//! reason). With reads, truncation is an early end of file, which the change
//! check below turns into an error.
//!
//! Change check (SPEC "Honest"): for a regular file, the length and modification time are
//! taken from the open descriptor before the first read and after the last, and the bytes
//! read must equal that length. Any difference of kind [`crate::ErrorKind::Changed`]: no digest is returned.
//! Pipes, character and block devices have no meaningful length; they are read to their end.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::algorithm::Algorithm;
use super::digests::Digests;
use super::engine::{DigestSet, Digester, EngineConfig, unique_algorithms};
use crate::error::Error;
use crate::remote::{RemoteLocation, RemoteOptions, RemoteStore};
use crate::source::FileIdentity;

/// What to digest: a named file, a remote object or the process's standard input (`-` on the
/// command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Standard input, read to its end.
    Stdin,
    /// A file (or device, or named pipe) by path.
    Path(PathBuf),
    /// An `s3://`, `https://` or `http://` URL, as given (parsed when it is read, with the
    /// [`HashOptions::remote`] options), read by one streaming GET.
    Remote(String),
}

impl Input {
    /// `-` is standard input, as in coreutils; `s3://`, `https://` and `http://` URLs are
    /// remote objects; anything else is a path.
    pub fn from_arg(arg: impl Into<PathBuf>) -> Self {
        let path = arg.into();
        if path.as_os_str() == "-" {
            Input::Stdin
        } else if crate::remote::is_remote(path.as_os_str())
            && let Some(url) = path.to_str()
        {
            Input::Remote(url.to_string())
        } else {
            Input::Path(path)
        }
    }

    /// The name to show: the path or URL as given, or `-`.
    pub fn display_name(&self) -> String {
        match self {
            Input::Stdin => "-".to_string(),
            Input::Path(p) => p.display().to_string(),
            Input::Remote(url) => url.clone(),
        }
    }

    /// The length of a regular file, for a progress total; `None` for anything else.
    pub fn regular_len(&self) -> Option<u64> {
        match self {
            Input::Stdin | Input::Remote(_) => None,
            Input::Path(p) => std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
        }
    }
}

/// Options for hashing files.
#[derive(Clone, Copy, Default)]
pub struct HashOptions<'a> {
    /// Chunking, buffering and threading of the engine.
    pub engine: EngineConfig,
    /// Called with the size of every read, from the reading thread (for a progress bar).
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
    /// How to reach [`Input::Remote`] objects; `None`: [`crate::remote::options`].
    pub remote: Option<&'a RemoteOptions>,
}

/// Digests everything `reader` yields.
pub fn hash_reader<R: Read>(mut reader: R, algorithms: &[Algorithm]) -> io::Result<Digests> {
    let mut set = DigestSet::new(algorithms);
    set.read_from(&mut reader, None)?;
    Ok(set.finish())
}

/// Digests the file at `path` in one read; an error if it changed while it was read. An
/// `s3://` or `https://` URL is digested by [`hash_remote`].
pub fn hash_path(path: &Path, algorithms: &[Algorithm]) -> Result<Digests, Error> {
    hash_path_with(path, algorithms, &HashOptions::default())
}

/// [`hash_path`] with engine options and a progress callback.
pub fn hash_path_with(
    path: &Path,
    algorithms: &[Algorithm],
    options: &HashOptions<'_>,
) -> Result<Digests, Error> {
    if crate::remote::is_remote(path.as_os_str())
        && let Some(url) = path.to_str()
    {
        return hash_remote(url, algorithms, options);
    }
    let (file, before) = open_for_hashing(path)?;
    hash_open_file(path, file, &before, algorithms, options)
}

/// [`hash_path_with`] for callers that digest many files one after another on each of their
/// threads (`vmimage batch`): `buf` is the caller's, kept from file to file, so a file costs
/// no allocation. A regular file shorter than one chunk, and every file when
/// `options.engine.threads` is off, is digested on the caller's thread: one `open`, one `fstat`, one `read` for a small file, the change
/// check's second `fstat`, no thread and no buffer zeroed. Other files go to the engine's
/// worker threads as in [`hash_path_with`].
pub fn hash_path_reusing(
    path: &Path,
    algorithms: &[Algorithm],
    options: &HashOptions<'_>,
    buf: &mut Vec<u8>,
) -> Result<Digests, Error> {
    if crate::remote::is_remote(path.as_os_str())
        && let Some(url) = path.to_str()
    {
        return hash_remote(url, algorithms, options);
    }
    let (file, before) = open_for_hashing(path)?;
    let small = before.is_file() && before.len() < options.engine.chunk_size as u64;
    if small || !options.engine.threads {
        hash_open_inline(path, file, &before, algorithms, buf)
    } else {
        hash_open_file(path, file, &before, algorithms, options)
    }
}

/// Bytes per read of a file digested on the caller's thread (at most): a read and the hashing of what it
/// brought stay in one core's L2 cache, as the engine's chunks do ([`super::engine`]).
pub const INLINE_READ_SIZE: usize = super::engine::DEFAULT_CHUNK_SIZE;

/// Opens `path` for digesting; its metadata from the open descriptor (the change check's
/// "before"). A directory is an error.
fn open_for_hashing(path: &Path) -> Result<(File, Metadata), Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let before = file.metadata().map_err(|e| Error::io(path, e))?;
    if before.is_dir() {
        return Err(Error::io(
            path,
            io::Error::new(io::ErrorKind::IsADirectory, "Is a directory"),
        ));
    }
    Ok((file, before))
}

/// Digests the open `file` on the caller's thread, reading into `buf` (grown to at most
/// [`INLINE_READ_SIZE`], or to the file's length and one byte: a small file is one read).
/// A regular file is change-checked as [`hash_path`] does; its reading stops at the first
/// short read that brings the total to the length `fstat` gave, without the read that would
/// return 0: if the file grew meanwhile, the check's second `fstat` sees the new length.
fn hash_open_inline(
    path: &Path,
    mut file: File,
    before: &Metadata,
    algorithms: &[Algorithm],
    buf: &mut Vec<u8>,
) -> Result<Digests, Error> {
    let regular = before.is_file();
    let want = match usize::try_from(before.len()) {
        Ok(len) if regular && len < INLINE_READ_SIZE => len + 1,
        _ => INLINE_READ_SIZE,
    };
    if buf.len() < want {
        buf.resize(want, 0);
    }
    if regular && before.len() >= want as u64 {
        advise_sequential(&file);
    }
    let mut digesters: Vec<Digester> = unique_algorithms(algorithms)
        .into_iter()
        .map(Digester::new)
        .collect();
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e).with_offset(total)),
        };
        for d in &mut digesters {
            d.update(&buf[..n]);
        }
        total += n as u64;
        if regular && n < want && total == before.len() {
            break;
        }
    }
    if regular {
        let after = file.metadata().map_err(|e| Error::io(path, e))?;
        check_unchanged(path, before, &after, total)?;
    }
    Ok(Digests {
        size: total,
        digests: digesters.into_iter().map(Digester::finish).collect(),
    })
}

/// Digests the open `file` with the engine ([`DigestSet`]): one worker thread per algorithm
/// once the file is longer than a chunk.
fn hash_open_file(
    path: &Path,
    mut file: File,
    before: &Metadata,
    algorithms: &[Algorithm],
    options: &HashOptions<'_>,
) -> Result<Digests, Error> {
    if before.is_file() {
        advise_sequential(&file);
    }
    let mut set = DigestSet::with_config(algorithms, options.engine);
    set.read_from(&mut file, options.progress)
        .map_err(|e| Error::io(path, e).with_offset(set.len()))?;
    if before.is_file() {
        let after = file.metadata().map_err(|e| Error::io(path, e))?;
        check_unchanged(path, before, &after, set.len())?;
    }
    Ok(set.finish())
}

/// Digests standard input to its end.
pub fn hash_stdin(algorithms: &[Algorithm], options: &HashOptions<'_>) -> Result<Digests, Error> {
    let mut set = DigestSet::with_config(algorithms, options.engine);
    set.read_from(&mut io::stdin().lock(), options.progress)
        .map_err(|e| Error::io(Path::new("-"), e))?;
    Ok(set.finish())
}

/// Digests the remote object at `url` (`s3://`, `https://`, or `http://` when allowed) in one
/// streaming GET; an error of kind [`crate::ErrorKind::Changed`] if the object changed while it
/// was read (its ETag, Last-Modified or length differs from the HEAD the read started from).
pub fn hash_remote(
    url: &str,
    algorithms: &[Algorithm],
    options: &HashOptions<'_>,
) -> Result<Digests, Error> {
    let global;
    let remote = match options.remote {
        Some(remote) => remote,
        None => {
            global = crate::remote::options();
            &global
        }
    };
    let location = RemoteLocation::parse(url, remote)?;
    let store = RemoteStore::open(&location, remote)?;
    let version = store.head()?;
    let mut reader = store.stream(&version)?;
    let mut set = DigestSet::with_config(algorithms, options.engine);
    set.read_from(&mut reader, options.progress)
        .map_err(|e| crate::remote::into_error(url, e))?;
    Ok(set.finish())
}

/// Digests one input.
pub fn hash_input(
    input: &Input,
    algorithms: &[Algorithm],
    options: &HashOptions<'_>,
) -> Result<Digests, Error> {
    match input {
        Input::Stdin => hash_stdin(algorithms, options),
        Input::Path(p) => hash_path_with(p, algorithms, options),
        Input::Remote(url) => hash_remote(url, algorithms, options),
    }
}

/// The change check: same length and modification time before and after, and exactly that
/// many bytes read.
fn check_unchanged(
    path: &Path,
    before: &Metadata,
    after: &Metadata,
    read: u64,
) -> Result<(), Error> {
    let detail = if after.len() != before.len() {
        Some(format!(
            "its length went from {} to {} bytes",
            before.len(),
            after.len()
        ))
    } else if read != before.len() {
        Some(format!(
            "{read} bytes were read but it is {} bytes long",
            before.len()
        ))
    } else if modified(before) != modified(after) {
        Some("its modification time changed".to_string())
    } else if FileIdentity::of(before) != FileIdentity::of(after) {
        // A write, even one whose author set the modification time back, changes the
        // status-change time, which no user can set.
        Some("it was written to (its status-change time changed)".to_string())
    } else {
        None
    };
    match detail {
        Some(detail) => Err(Error::changed(path, &detail)),
        None => Ok(()),
    }
}

fn modified(m: &Metadata) -> Option<SystemTime> {
    m.modified().ok()
}

/// Tells the kernel the file will be read once from start to end, which doubles its
/// read-ahead on a cold cache. Advice only: failure changes nothing.
fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise reads no memory of ours; the descriptor is open for the call.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A 4 MiB temporary file (several engine chunks) and its path.
    fn temp_file() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![0x5a; 4 << 20]).unwrap();
        f
    }

    /// Hashes `file`, running `change` once, after the first read (from the progress hook).
    fn hash_changing(
        file: &tempfile::NamedTempFile,
        change: impl Fn(&File) + Sync,
    ) -> Result<Digests, Error> {
        let done = AtomicBool::new(false);
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(file.path())
            .unwrap();
        let hook = |_: u64| {
            if !done.swap(true, Ordering::SeqCst) {
                change(&writer);
            }
        };
        let options = HashOptions {
            progress: Some(&hook),
            ..HashOptions::default()
        };
        hash_path_with(file.path(), &Algorithm::DEFAULT, &options)
    }

    /// A read that fails says where: `/proc/self/mem` is a file whose first page is never
    /// mapped, so its first read fails with `EIO`.
    #[test]
    fn a_failed_read_carries_its_offset() {
        let err = hash_path(Path::new("/proc/self/mem"), &Algorithm::DEFAULT).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Io, "{err}");
        assert_eq!(err.context().offset, Some(0), "{err}");
        assert_eq!(
            err.io_error().and_then(io::Error::raw_os_error),
            Some(libc::EIO)
        );
    }

    #[test]
    fn a_file_truncated_during_the_read_is_reported_as_changed() {
        let file = temp_file();
        let err = hash_changing(&file, |f| f.set_len(1000).unwrap()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Changed, "{err}");
        assert!(
            err.to_string()
                .contains("length went from 4194304 to 1000 bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_grows_during_the_read_is_reported_as_changed() {
        let file = temp_file();
        let err = hash_changing(&file, |f| {
            use std::os::unix::fs::FileExt;
            f.write_all_at(b"more", 4 << 20).unwrap();
        })
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Changed, "{err}");
    }

    #[test]
    fn a_file_rewritten_in_place_is_reported_by_its_modification_time() {
        let file = temp_file();
        let err = hash_changing(&file, |f| {
            use std::os::unix::fs::FileExt;
            f.write_all_at(b"x", 3 << 20).unwrap();
            // Make the change visible even on a file system with coarse timestamps.
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
            f.set_modified(later).unwrap();
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("modification time changed"),
            "{err}"
        );
    }

    #[test]
    fn reusing_a_buffer_hashes_like_hash_path_at_every_size_threaded_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        // Sizes around the inline read size, in an order that shrinks and grows the file
        // after the buffer has grown (a stale tail must never be hashed).
        for len in [
            0,
            1,
            4097,
            INLINE_READ_SIZE - 1,
            INLINE_READ_SIZE,
            3,
            INLINE_READ_SIZE + 1,
            2 * INLINE_READ_SIZE + 5,
            100,
        ] {
            let path = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let want = hash_path(&path, &Algorithm::DEFAULT).unwrap();
            for threads in [false, true] {
                let options = HashOptions {
                    engine: EngineConfig {
                        threads,
                        ..EngineConfig::default()
                    },
                    ..HashOptions::default()
                };
                let got = hash_path_reusing(&path, &Algorithm::DEFAULT, &options, &mut buf);
                assert_eq!(got.unwrap(), want, "length {len}, threads {threads}");
            }
            assert!(
                buf.len() <= INLINE_READ_SIZE,
                "the buffer grew to {}",
                buf.len()
            );
        }
        let err = hash_path_reusing(
            dir.path(),
            &Algorithm::DEFAULT,
            &HashOptions::default(),
            &mut buf,
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Io, "{err}");
        // Not a regular file: read to its end whatever fstat says.
        let null = hash_path_reusing(
            Path::new("/dev/null"),
            &[Algorithm::Md5],
            &HashOptions::default(),
            &mut buf,
        )
        .unwrap();
        assert_eq!(null.size, 0);
    }

    #[test]
    fn an_unchanged_file_hashes_like_the_in_memory_engine() {
        let file = temp_file();
        let digests = hash_path(file.path(), &Algorithm::DEFAULT).unwrap();
        let mut set = DigestSet::new(&Algorithm::DEFAULT);
        set.update(&vec![0x5a; 4 << 20]);
        assert_eq!(digests, set.finish());
    }
}
