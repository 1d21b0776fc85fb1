//! The crate's one error: what stopped an operation, its [`ErrorKind`], and where it happened.
//!
//! Modelled on cloud-hypervisor's block crate (`block/src/error.rs`): a single public type
//! pairing a small, stable, matchable kind with optional context (the file, a byte offset, the
//! operation under way) and, where there is one, the underlying cause (an [`io::Error`], a
//! parser's or signer's own error) reachable through [`std::error::Error::source`] or
//! [`Error::downcast_ref`]. Callers decide by the kind; the kinds are what the command line
//! must tell apart to choose an exit status (see `docs/commands.md`), nothing finer.
//!
//! Unlike the block crate, the [`Display`](fmt::Display) text is the whole sentence the CLI
//! prints (one sentence naming the file and the problem): the sentences are part of the
//! command-line contract and are composed once, where the error is made.
//!
//! Content problems in an image being inspected are not errors: they are findings in the
//! report. An [`Error`] means the job could not be done, or was refused.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What kind of failure stopped an operation: small and stable, for callers to match on.
/// Adding a format or a reason does not add a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system failed an open, a read or a write.
    Io,
    /// The file changed while it was read (its identity, length or modification time differs
    /// at the end, it ended early, or a pass found other bytes than the one before it): a
    /// digest or a conversion would describe no version of it (SPEC "Honest").
    Changed,
    /// The image's metadata or data is invalid (a corrupt or hostile image).
    InvalidImage,
    /// A safety rule refuses the image (backing file, external data file, encryption, ...).
    Unsafe,
    /// What was written does not hold what was read (`convert --verify`: the output's guest
    /// hash differs from the input's).
    Mismatch,
    /// Upload metadata breaks rules of its target; the violations are the error's source
    /// (see [`crate::convert::MetadataRulesBroken`]).
    BrokenRules,
    /// vmimage does not do what was asked with this input (a format it cannot convert, an
    /// output past a format's limits, a key type a verifier cannot check).
    Unsupported,
    /// An option or argument is inconsistent, out of range or unusable.
    InvalidArgument,
    /// An interrupt (`EINTR` from a signal) stopped the operation.
    Interrupted,
    /// A library vmimage calls failed in a way no input should cause.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Io => "I/O error",
            ErrorKind::Changed => "file changed while read",
            ErrorKind::InvalidImage => "invalid image",
            ErrorKind::Unsafe => "unsafe image",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::BrokenRules => "broken metadata rules",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Internal => "internal error",
        })
    }
}

/// The operation under way when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Opening, inspecting or reading an input.
    Read,
    /// Writing an output image.
    Write,
    /// Writing upload metadata or its sidecar.
    WriteMetadata,
    /// Signing an output.
    Sign,
}

/// Where an error happened, as far as it is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// The file concerned.
    pub path: Option<PathBuf>,
    /// A byte offset in that file.
    pub offset: Option<u64>,
    /// The operation under way.
    pub operation: Option<Operation>,
}

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// Why an operation failed: a [`kind`](Error::kind), its [`context`](Error::context), and the
/// sentence that says so.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: Context,
    sentence: String,
    source: Option<Source>,
}

/// A result whose error is the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` about `path` (when there is one) that reads as `sentence`, which must
    /// name the file and the problem.
    pub(crate) fn new(kind: ErrorKind, path: Option<&Path>, sentence: String) -> Self {
        Self {
            kind,
            context: Context {
                path: path.map(Path::to_path_buf),
                ..Context::default()
            },
            sentence,
            source: None,
        }
    }

    /// The file `path` could not be opened or read: "cannot read PATH: REASON".
    ///
    /// A remote read's failure (`source` made by [`crate::remote`]) is returned as it was
    /// made, with its own kind and sentence.
    pub fn io(path: &Path, source: io::Error) -> Self {
        let source = match crate::remote::take_failure(source) {
            Ok(remote) => return remote,
            Err(source) => source,
        };
        let sentence = format!("cannot read {}: {}", path.display(), describe_io(&source));
        Self::new(ErrorKind::Io, Some(path), sentence)
            .with_operation(Operation::Read)
            .with_source(source)
    }

    /// The file `path` changed while it was read, said by the digest engine, which returned no
    /// digest: "PATH: changed while it was read (DETAIL); no digest was computed".
    pub fn changed(path: &Path, detail: &str) -> Self {
        let sentence = format!(
            "{}: changed while it was read ({detail}); no digest was computed",
            path.display()
        );
        Self::new(ErrorKind::Changed, Some(path), sentence).with_operation(Operation::Read)
    }

    /// Sets the operation under way.
    pub(crate) fn with_operation(mut self, operation: Operation) -> Self {
        self.context.operation = Some(operation);
        self
    }

    /// Sets the byte offset concerned.
    pub(crate) fn with_offset(mut self, offset: u64) -> Self {
        self.context.offset = Some(offset);
        self
    }

    /// Sets the underlying cause.
    pub(crate) fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Where it happened.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The file concerned, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.context.path.as_deref()
    }

    /// The operating system's error, when one caused this.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.downcast_ref::<io::Error>()
    }

    /// The underlying cause as a `T`, when it is one.
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.source.as_deref()?.downcast_ref::<T>()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sentence)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The kind of an I/O failure: [`ErrorKind::Interrupted`] for `EINTR` (what a signal handler
/// leaves a blocked call with), [`ErrorKind::Io`] otherwise.
pub(crate) fn io_kind(e: &io::Error) -> ErrorKind {
    if e.kind() == io::ErrorKind::Interrupted {
        ErrorKind::Interrupted
    } else {
        ErrorKind::Io
    }
}

/// An I/O error as a short phrase: the OS message without the "(os error N)" suffix.
pub fn describe_io(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_names_the_file_and_keeps_the_os_error() {
        let e = Error::io(
            Path::new("/x/disk.img"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.path(), Some(Path::new("/x/disk.img")));
        assert_eq!(e.context().operation, Some(Operation::Read));
        assert_eq!(
            e.io_error().map(io::Error::kind),
            Some(io::ErrorKind::NotFound)
        );
        assert_eq!(
            e.to_string(),
            "cannot read /x/disk.img: No such file or directory"
        );
    }

    /// Appends to a file without pause until dropped, so that any read of it that takes more
    /// than an instant sees it change.
    struct Grower {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Grower {
        fn start(path: &Path) -> Self {
            use std::io::Write;
            use std::sync::atomic::Ordering;
            let len = std::fs::metadata(path).unwrap().len();
            let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stopped = stop.clone();
            let thread = std::thread::spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    file.write_all(&[0x5a; 512]).unwrap();
                }
            });
            while std::fs::metadata(path).unwrap().len() == len {
                std::thread::yield_now();
            }
            Self {
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Grower {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// SPEC "Honest": a file that changes while it is read is one event, whichever command
    /// reads it; `hash`, `verify` (through the facts it gathers) and `convert` all say
    /// [`ErrorKind::Changed`].
    #[test]
    fn a_file_that_changes_while_read_is_changed_for_hash_verify_and_convert() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("disk.raw");
        let noise: Vec<u8> = (0..16u32 << 20).map(|i| (i * 7 % 251 + 1) as u8).collect();
        let record = crate::cloud::parse::parse_record(
            br#"{"checksum": "0123456789abcdef0123456789abcdef", "disk_format": "raw"}"#,
            &crate::cloud::parse::RecordSelector::default(),
        )
        .unwrap();
        let output = dir.path().join("out.qcow2");
        let runs: [(&str, &dyn Fn() -> Result<()>); 3] = [
            ("hash", &|| {
                crate::digest::hash_path(&input, &crate::digest::Algorithm::DEFAULT).map(drop)
            }),
            ("verify", &|| {
                crate::verify::verify_path(&input, &record).map(drop)
            }),
            ("convert", &|| {
                crate::convert::convert(
                    &input,
                    &output,
                    &crate::convert::ConvertOptions::default(),
                    &crate::convert::NoProgress,
                )
                .map(drop)
            }),
        ];
        for (command, run) in runs {
            std::fs::write(&input, &noise).unwrap();
            let grower = Grower::start(&input);
            let e = run().expect_err(command);
            drop(grower);
            assert_eq!(e.kind(), ErrorKind::Changed, "{command}: {e}");
            assert_eq!(e.path(), Some(input.as_path()), "{command}: {e}");
            assert_eq!(e.context().operation, Some(Operation::Read), "{command}");
            assert!(
                e.to_string().contains("changed while it was read"),
                "{command}: {e}"
            );
        }
        assert!(!output.exists());
    }

    #[test]
    fn a_change_is_its_own_kind() {
        let e = Error::changed(Path::new("a.img"), "its length went from 1 to 2 bytes");
        assert_eq!(e.kind(), ErrorKind::Changed);
        assert_eq!(
            e.to_string(),
            "a.img: changed while it was read (its length went from 1 to 2 bytes); no digest was computed"
        );
    }
}
