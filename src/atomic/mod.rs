//! Every file vmimage writes is written aside and renamed into place when complete: converted
//! images, the spill file of compressed clusters, metadata bodies, sidecars and JUnit reports
//! (SPEC "Honest": nothing half-written). A reader of the target path sees the old file or the
//! whole new one, never a part.
//!
//! - [`TempFile`]: a file created beside its target (same directory, so the final rename is
//!   atomic), registered in a process-wide list so that [`remove_temporary_files`] (called by
//!   the CLI's SIGINT/SIGTERM/SIGHUP handler) can delete it, and deleted on drop unless
//!   persisted. [`TempFile::sync`] makes it durable before the rename (`convert --sync`).
//! - [`TempFile::persist`] renames one file into place; [`persist_all`] moves several into
//!   place all or none (`convert --metadata`).
//! - [`write_file`]: a whole document (a sidecar, a JUnit report) written aside, synced and
//!   renamed in one call.
//! - [`fault`]: the test-only fault hook, consulted at every write-side operation of every
//!   file written here, so that the tests can fail or stall each one.

pub mod fault;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use fault::io_point;

/// Undoes one output that is not a local file (aborts an upload in progress), from the signal
/// handler's thread.
pub type Undo = Box<dyn FnOnce() + Send>;

/// Temporary files that must not survive the process, outputs to undo, and whether an
/// interrupt is being handled.
struct Registry {
    paths: Vec<PathBuf>,
    undos: Vec<(u64, Undo)>,
    aborted: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    paths: Vec::new(),
    undos: Vec::new(),
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
    let removed = reg.paths.len() + reg.undos.len();
    for p in reg.paths.drain(..) {
        let _ = std::fs::remove_file(&p);
    }
    for (_, undo) in reg.undos.drain(..) {
        undo();
    }
    removed
}

/// Registers `undo`, which [`remove_temporary_files`] runs (an upload in progress is aborted
/// as a temporary file is removed); returns its id for [`forget_undo`], or an error when an
/// interrupt came first.
pub fn register_undo(undo: Undo) -> io::Result<u64> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut reg = registry();
    if reg.aborted {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
    }
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    reg.undos.push((id, undo));
    Ok(id)
}

/// Drops the undo registered as `id` without running it (the output was undone already).
pub fn forget_undo(id: u64) {
    registry().undos.retain(|(i, _)| *i != id);
}

/// Runs `commit`, which puts an output that is not a local file in place (completes an
/// upload), unless an interrupt came first; then forgets the undo `id`. The interrupt handler
/// waits meanwhile, as it waits for a rename: the output is then complete, never undone half
/// way.
pub fn commit_undoable<T>(id: u64, commit: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let mut reg = registry();
    if reg.aborted {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
    }
    let result = commit();
    if result.is_ok() {
        reg.undos.retain(|(i, _)| *i != id);
    }
    result
}

/// A file beside the output that is removed unless [`TempFile::persist`] renames it.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Creates `.<name>.<tag>.<pid>.<n>` beside `target` (`n` counts the temporary files of
    /// the process, so that two writes of one target never collide), exclusively (an existing
    /// file of that name is an error, never overwritten).
    pub fn create_beside(target: &Path, tag: &str) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".{tag}.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dir.join(tmp_name);
        io_point()?;
        let mut reg = registry();
        if reg.aborted {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
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

/// The tag of every temporary file's name (`.<name>.vmimage-tmp.<pid>.<n>`).
pub const TEMP_TAG: &str = "vmimage-tmp";

/// Writes `bytes` to `path` atomically: into a new temporary file beside it, synced to the
/// disk, then renamed over `path`. Readers see the old file or the whole new one, never a
/// part; a failure, or an interrupt handled by [`remove_temporary_files`], leaves `path` as it
/// was and nothing beside it. Always synced, with or without `--sync`: the documents written
/// this way are a few kilobytes, and one that vanishes in a crash after its command reported
/// success would be a lie.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = TempFile::create_beside(path, TEMP_TAG)?;
    write_all_synced(&tmp, bytes)?;
    tmp.persist(path)
}

/// Writes `bytes` to the temporary file and syncs it: two write-side operations.
pub fn write_all_synced(tmp: &TempFile, bytes: &[u8]) -> io::Result<()> {
    io_point()?;
    let mut f = tmp.file()?;
    f.write_all(bytes)?;
    tmp.sync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_file_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_file(&p, b"one").unwrap();
        write_file(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_atomic_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"").unwrap();
        // Renaming a file over a non-empty directory fails.
        assert!(write_file(&target, b"data").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporary_files_of_one_target_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        let a = TempFile::create_beside(&p, TEMP_TAG).unwrap();
        let b = TempFile::create_beside(&p, TEMP_TAG).unwrap();
        assert_ne!(a.path(), b.path());
        drop((a, b));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
