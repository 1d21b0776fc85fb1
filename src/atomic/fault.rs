//! The test-only fault hook: the environment variable [`FAULT_ENV`] (read only here, documented
//! for the test suite; comma-separated settings) injects failures that are hard to cause
//! otherwise, in every file vmimage writes:
//! - `fail-io=N` fails the N-th write-side operation of the process (counting from 1) with
//!   `EIO`: creating a temporary file (output, spill, metadata, sidecar, JUnit report), each
//!   write to it, setting its length, syncing it, renaming it into place. The tests try every
//!   N until the command succeeds, so every write is a tested failure point;
//! - `stall-io=N` stops making progress at the N-th write-side operation, counted as for
//!   `fail-io` (the tests then interrupt the process to check the clean-up; they stall at a
//!   write, where no lock is held, so that the signal handler can run);
//! - `enospc-after=N` fails the first write that would take a converted output past N bytes
//!   with `ENOSPC`;
//! - `stall-after=N` stops making progress once N bytes of a converted output are written;
//! - `metadata-rule` makes `convert --metadata` find, once the output is written, that the
//!   metadata breaks a rule (its virtual size unknown): no rule the output's bytes decide can
//!   break otherwise, since the virtual size the rules read is known before converting;
//! - `corrupt-data` flips one bit of the first non-zero byte of the first data buffer a
//!   converted output is given, as a writer bug would (`convert --verify` must catch it);
//! - `corrupt-part` flips one byte of the body of every request that uploads part 1 of an
//!   `s3://` output, after the client computed the part's checksums (the server must refuse
//!   it, and the upload must be aborted);
//! - `spill-limit=N` keeps at most N bytes of compressed clusters in memory instead of the
//!   default, so that small tests exercise the spill file;
//! - `open-once` makes opening an image file that the process opened already an error, so
//!   that a test proves a command reads its input once (`convert --verify` hashes the input
//!   during the conversion's own reads, not through a second reader).

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable of the test-only fault hook.
pub const FAULT_ENV: &str = "VMIMAGE_TEST_FAULT";

/// The hook's settings.
#[derive(Debug, Clone, Copy, Default)]
struct Fault {
    enospc_after: Option<u64>,
    stall_after: Option<u64>,
    fail_io: Option<u64>,
    stall_io: Option<u64>,
    spill_limit: Option<usize>,
    metadata_rule: bool,
    corrupt_data: bool,
    open_once: bool,
    corrupt_part: bool,
}

/// Write-side operations so far, for `fail-io=N` and `stall-io=N`.
static IO_OPERATIONS: AtomicU64 = AtomicU64::new(0);

/// The hook's settings, read once per process.
fn fault() -> &'static Fault {
    static FAULT: OnceLock<Fault> = OnceLock::new();
    FAULT.get_or_init(Fault::from_env)
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
                } else if let Some(n) = part.strip_prefix("stall-io=") {
                    f.stall_io = n.parse().ok();
                } else if let Some(n) = part.strip_prefix("spill-limit=") {
                    f.spill_limit = n.parse().ok();
                } else if part == "metadata-rule" {
                    f.metadata_rule = true;
                } else if part == "corrupt-data" {
                    f.corrupt_data = true;
                } else if part == "open-once" {
                    f.open_once = true;
                } else if part == "corrupt-part" {
                    f.corrupt_part = true;
                }
            }
        }
        f
    }
}

fn stall() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// A write-side operation on a file being written is about to happen: `fail-io=N` fails the
/// N-th one, `stall-io=N` never returns from it.
pub(crate) fn io_point() -> io::Result<()> {
    let f = fault();
    if f.fail_io.is_some() || f.stall_io.is_some() {
        let this = IO_OPERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        if f.fail_io == Some(this) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if f.stall_io == Some(this) {
            stall();
        }
    }
    Ok(())
}

/// A converted output is about to grow to `end` bytes: `enospc-after` fails, `stall-after`
/// never returns.
pub(crate) fn output_grows_to(end: u64) -> io::Result<()> {
    let f = fault();
    if f.enospc_after.is_some_and(|n| end > n) {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    if f.stall_after.is_some_and(|n| end > n) {
        stall();
    }
    Ok(())
}

/// Whether `metadata-rule` asks the conversion to see its metadata break a rule once the
/// output is written.
pub(crate) fn breaks_metadata_rule() -> bool {
    fault().metadata_rule
}

/// The memory limit of the compressed-cluster store that `spill-limit=N` sets, if it does.
pub(crate) fn spill_limit() -> Option<usize> {
    fault().spill_limit
}

/// Whether `corrupt-data` asks to flip a bit of the first data written to a converted output
/// (one in the process), so that the written guest differs from the input's.
pub(crate) fn corrupts_data() -> bool {
    fault().corrupt_data
}

/// `corrupt-data`: flips one bit of the first non-zero byte of `buf` when no buffer had one
/// flipped yet in this process.
pub(crate) fn corrupt_data(buf: &mut [u8]) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !fault().corrupt_data || DONE.load(Ordering::Relaxed) {
        return;
    }
    if let Some(b) = buf.iter_mut().find(|b| **b != 0) {
        *b ^= 0x80;
        DONE.store(true, Ordering::Relaxed);
    }
}

/// An image file (device, inode) is being opened as an input: under `open-once`, an error if
/// this process opened it before.
pub(crate) fn image_opened(file: (u64, u64)) -> io::Result<()> {
    static OPENED: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());
    if !fault().open_once {
        return Ok(());
    }
    let mut opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
    if opened.contains(&file) {
        return Err(io::Error::other(
            "opened a second time (test fault open-once)",
        ));
    }
    opened.push(file);
    Ok(())
}

/// Whether `corrupt-part` asks the upload's transport to corrupt part 1 after its checksums
/// were computed.
pub(crate) fn corrupts_parts() -> bool {
    fault().corrupt_part
}
