//! Command-line front end: one module per command, plus shared rendering helpers.
//!
//! Exit statuses (SPEC "Commands"): 0 all good, 1 a verification or policy failure, 2 the job
//! could not be done. `check` uses `qemu-img check`'s statuses instead.

pub mod check;
pub mod convert;
pub mod generate;
pub mod hash;
pub mod info;
pub mod metadata;
pub mod output;
pub mod remote;
pub mod render;
pub mod sign;
pub mod verify;

/// Everything passed.
pub const EXIT_OK: u8 = 0;
/// A verification or policy failure: mismatch, unsafe or invalid image, broken rule.
pub const EXIT_FAILED: u8 = 1;
/// The job could not be done: usage, missing or unreadable file, unparsable input.
pub const EXIT_ERROR: u8 = 2;

/// Interrupted by a signal (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The exit status for a library error, by its kind (docs/commands.md): 1 when the input or
/// the metadata is refused (unsafe or invalid image, broken metadata rule), 130 when a signal
/// interrupted the job, 2 when the job could not be done (unreadable or changed file,
/// unwritable output, unsupported input, bad option).
pub fn exit_status(error: &vmimage::Error) -> u8 {
    use vmimage::ErrorKind;
    match error.kind() {
        ErrorKind::Unsafe
        | ErrorKind::InvalidImage
        | ErrorKind::BrokenRules
        | ErrorKind::Mismatch => EXIT_FAILED,
        ErrorKind::Interrupted => EXIT_INTERRUPTED,
        _ => EXIT_ERROR,
    }
}

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

/// Keeps freed I/O buffers in the heap for reuse instead of returning them to the kernel.
///
/// `convert` and `hash` allocate megabyte-sized buffers at a steady rate. glibc serves those with
/// fresh `mmap`s or trims them off the heap when they are freed, so every buffer costs page
/// faults and zeroing: measured, 200,000 minor faults and 1.6 s of system time to convert 700 MB
/// (qemu-img: 5,000 and 0.26 s). Raising the thresholds makes the allocator recycle them; peak
/// memory is unchanged because it is bounded by the buffers alive at once.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called at start-up, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_job_that_could_not_be_done_exits_2() {
        let unreadable = vmimage::Error::io(Path::new("a"), std::io::ErrorKind::NotFound.into());
        assert_eq!(exit_status(&unreadable), EXIT_ERROR);
        let changed = vmimage::Error::changed(Path::new("a"), "its length went from 1 to 2 bytes");
        assert_eq!(exit_status(&changed), EXIT_ERROR);
        let options = vmimage::convert::ConvertOptions {
            threads: Some(0),
            ..Default::default()
        };
        let usage = vmimage::convert::validate_options(&options).unwrap_err();
        assert_eq!(exit_status(&usage), EXIT_ERROR);
    }
}
