//! Command-line front end: one module per command, plus shared rendering helpers.
//!
//! Exit statuses (SPEC "Commands"): 0 all good, 1 a verification or policy failure, 2 the job
//! could not be done. `check` uses `qemu-img check`'s statuses instead.

pub mod check;
pub mod convert;
pub mod hash;
pub mod info;
pub mod metadata;
pub mod render;
pub mod verify;

/// Everything passed.
pub const EXIT_OK: u8 = 0;
/// A verification or policy failure: mismatch, unsafe or invalid image, broken rule.
pub const EXIT_FAILED: u8 = 1;
/// The job could not be done: usage, missing or unreadable file, unparsable input.
pub const EXIT_ERROR: u8 = 2;

/// Prints one error sentence on stderr, prefixed with the program name.
pub fn print_error(message: impl std::fmt::Display) {
    eprintln!("vmimage: {message}");
}

/// Restores the default SIGPIPE action so that `vmimage ... | head` ends quietly, as coreutils
/// do, instead of failing a write to a closed pipe.
pub fn restore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL at start-up, before any thread exists,
    // has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
