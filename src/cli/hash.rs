//! `vmimage hash FILE... [--algo LIST] [--json] [--check] [--progress]`: digests in one read of
//! each file, printed as BSD-tagged lines (`MD5 (disk.qcow2) = ...`) that `cksum -c` reads,
//! or checks manifests as `md5sum -c` / `sha256sum -c` do.
//!
//! Exit statuses. Hashing: 0 every file digested, 2 some file could not be read or changed
//! while it was read (no digest is printed for it; the others are). `--check`: coreutils'
//! statuses, which scripts written for `sha256sum -c` rely on: 0 every listed file matched, 1
//! anything else (a mismatch, an unreadable or missing listed file, a manifest with no
//! properly formatted line or that cannot be read, improper lines under `--strict`). Usage
//! errors are 2 everywhere.

use std::fmt;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use serde::Serialize;
use vmimage::digest::check::{CheckOptions, Outcome, Tally, check_manifest};
use vmimage::digest::guest::GuestHash;
use vmimage::digest::manifest::{self, MAX_MANIFEST_LEN};
use vmimage::digest::{Algorithm, Digests, HashOptions, Input, algorithm, hash_inputs};
use vmimage::error::describe_io;
use vmimage::guest_hash::{self, GuestHashOptions};

use super::{EXIT_ERROR, EXIT_FAILED, EXIT_OK, print_error};

/// Arguments of `vmimage hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// Files to digest (`-` or none: standard input; s3://bucket/key and https:// URLs: remote
    /// objects, one streaming GET each). With --check: the manifests to verify.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Algorithms, comma-separated: md5, sha1, sha224, sha256, sha384, sha512
    /// [default: md5,sha512]. With --check: only lines of these algorithms are read.
    #[arg(long, value_name = "LIST", value_parser = parse_algorithms)]
    pub algo: Option<AlgorithmList>,
    /// Print a JSON array, one `{file, size, digests}` object per file in argument order.
    #[arg(long, conflicts_with = "check")]
    pub json: bool,
    /// Read digests from the FILEs (GNU, BSD-tagged or PGP-clearsigned manifests) and check
    /// them, as `sha256sum -c` does.
    #[arg(short = 'c', long)]
    pub check: bool,
    /// With --check: do not print OK for each verified file.
    #[arg(long, requires = "check")]
    pub quiet: bool,
    /// With --check: print nothing on stdout; the exit status tells.
    #[arg(long, requires = "check")]
    pub status: bool,
    /// With --check: skip listed files that do not exist.
    #[arg(long, requires = "check")]
    pub ignore_missing: bool,
    /// With --check: fail when a manifest has an improperly formatted line.
    #[arg(long, requires = "check")]
    pub strict: bool,
    /// With --check: warn about each improperly formatted line.
    #[arg(short = 'w', long, requires = "check")]
    pub warn: bool,
    /// Show a progress bar on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Print each image's guest-content hash (blkhash, as `blksum` prints it: `hex  name`), the
    /// same for every format of one disk, instead of the file's digests. --algo picks its one
    /// algorithm [default: sha256].
    #[arg(long, conflicts_with = "check")]
    pub guest: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// A parsed `--algo` value.
#[derive(Debug, Clone)]
pub struct AlgorithmList(pub Vec<Algorithm>);

fn parse_algorithms(s: &str) -> Result<AlgorithmList, String> {
    algorithm::parse_list(s).map(AlgorithmList)
}

/// Runs `vmimage hash`; returns the exit status.
pub fn run(args: &HashArgs) -> u8 {
    vmimage::remote::set_options(args.remote.options());
    let inputs: Vec<Input> = if args.files.is_empty() {
        vec![Input::Stdin]
    } else {
        args.files
            .iter()
            .map(|f| Input::from_arg(f.clone()))
            .collect()
    };
    if args.check {
        return run_check(args, &inputs);
    }
    if args.guest {
        return run_guest(args);
    }
    let algorithms = args
        .algo
        .as_ref()
        .map_or_else(|| Algorithm::DEFAULT.to_vec(), |l| l.0.clone());
    let progress = Progress::new(args.progress, &inputs);
    let tick = |n: u64| progress.inc(n);
    let remote = args.remote.options();
    let options = HashOptions {
        progress: progress.enabled().then_some(&tick as &(dyn Fn(u64) + Sync)),
        remote: Some(&remote),
        ..HashOptions::default()
    };

    let mut status = EXIT_OK;
    let mut entries = Vec::new();
    let mut stdout = io::stdout().lock();
    let mut write_failed = false;
    hash_inputs(&inputs, &algorithms, &options, |i, result| {
        let name = display_bytes(&inputs[i]);
        match result {
            Ok(digests) => {
                if args.json {
                    entries.push(JsonEntry::ok(&name, &digests));
                } else if !write_failed {
                    progress.suspend(|| {
                        write_failed |= write_tagged(&mut stdout, &name, &digests).is_err();
                    });
                }
            }
            Err(e) => {
                status = EXIT_ERROR;
                progress.suspend(|| print_error(&e));
                if args.json {
                    entries.push(JsonEntry::Error {
                        file: String::from_utf8_lossy(&name).into_owned(),
                        error: e.to_string(),
                    });
                }
            }
        }
    });
    progress.finish();
    if args.json {
        write_failed |= serde_json::to_writer_pretty(&mut stdout, &entries).is_err()
            || writeln!(stdout).is_err();
    }
    if write_failed || stdout.flush().is_err() {
        return EXIT_ERROR;
    }
    status
}

/// `--guest`: each image's guest hash in turn (each uses every core), `hex  name` lines as
/// `blksum` and `sha256sum` print them, or a JSON array of `{file, guest_hash}` objects.
fn run_guest(args: &HashArgs) -> u8 {
    let algorithm = match args.algo.as_ref().map(|l| l.0.as_slice()) {
        None => Algorithm::Sha256,
        Some([one]) => *one,
        Some(_) => {
            print_error("--guest takes one algorithm (--algo sha256, for example)");
            return EXIT_ERROR;
        }
    };
    if args.files.is_empty() || args.files.iter().any(|f| f.as_os_str() == "-") {
        print_error("--guest needs image files: standard input has no guest disk to read");
        return EXIT_ERROR;
    }
    let options = GuestHashOptions {
        algorithm,
        threads: None,
    };
    let mut status = EXIT_OK;
    let mut entries = Vec::new();
    let mut stdout = io::stdout().lock();
    let mut write_failed = false;
    for file in &args.files {
        let name = file.as_os_str().as_bytes();
        match guest_hash::hash_path(file, &options) {
            Ok(hash) => {
                if args.json {
                    entries.push(GuestJsonEntry::Ok {
                        file: String::from_utf8_lossy(name).into_owned(),
                        guest_hash: hash,
                    });
                } else if !write_failed {
                    write_failed |= write_gnu(&mut stdout, name, &hash.hex()).is_err();
                }
            }
            Err(e) => {
                status = status.max(super::exit_status(&e));
                print_error(&e);
                if args.json {
                    entries.push(GuestJsonEntry::Error {
                        file: String::from_utf8_lossy(name).into_owned(),
                        error: e.to_string(),
                    });
                }
            }
        }
    }
    if args.json {
        write_failed |= serde_json::to_writer_pretty(&mut stdout, &entries).is_err()
            || writeln!(stdout).is_err();
    }
    if write_failed || stdout.flush().is_err() {
        return EXIT_ERROR;
    }
    status
}

/// `hex  name`, as `sha256sum` writes it (a name holding a backslash or newline is escaped and
/// the line starts with `\`).
fn write_gnu(out: &mut impl Write, name: &[u8], hex: &str) -> io::Result<()> {
    if manifest::needs_escape(name) {
        write!(out, "\\{hex}  ")?;
        out.write_all(&manifest::escape(name))?;
    } else {
        write!(out, "{hex}  ")?;
        out.write_all(name)?;
    }
    writeln!(out)?;
    out.flush()
}

/// One image in `--guest --json` output.
#[derive(Serialize)]
#[serde(untagged)]
enum GuestJsonEntry {
    Ok { file: String, guest_hash: GuestHash },
    Error { file: String, error: String },
}

/// The name as given on the command line, as bytes (names need not be UTF-8).
fn display_bytes(input: &Input) -> Vec<u8> {
    match input {
        Input::Stdin => b"-".to_vec(),
        Input::Path(p) => p.as_os_str().as_bytes().to_vec(),
        Input::Remote(url) => url.as_bytes().to_vec(),
    }
}

/// `MD5 (name) = hex`, one line per algorithm, as `md5sum --tag` writes them (a name holding
/// a backslash or newline is escaped and the line starts with `\`).
fn write_tagged(out: &mut impl Write, name: &[u8], digests: &Digests) -> io::Result<()> {
    let escaped = manifest::needs_escape(name);
    for d in &digests.digests {
        if escaped {
            out.write_all(b"\\")?;
        }
        write!(out, "{} (", d.algorithm.tag())?;
        if escaped {
            out.write_all(&manifest::escape(name))?;
        } else {
            out.write_all(name)?;
        }
        writeln!(out, ") = {}", d.hex())?;
    }
    out.flush()
}

/// One file in `--json` output.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonEntry {
    Ok {
        file: String,
        size: u64,
        digests: serde_json::Map<String, serde_json::Value>,
    },
    Error {
        file: String,
        error: String,
    },
}

impl JsonEntry {
    fn ok(name: &[u8], digests: &Digests) -> Self {
        JsonEntry::Ok {
            file: String::from_utf8_lossy(name).into_owned(),
            size: digests.size,
            digests: digests
                .digests
                .iter()
                .map(|d| (d.algorithm.name().to_string(), d.hex().into()))
                .collect(),
        }
    }
}

/// `--check`: each manifest in turn, coreutils' messages and verdict.
fn run_check(args: &HashArgs, manifests: &[Input]) -> u8 {
    let options = CheckOptions {
        ignore_missing: args.ignore_missing,
        strict: args.strict,
    };
    let allowed: Vec<Algorithm> = args.algo.as_ref().map(|l| l.0.clone()).unwrap_or_default();
    let mut all_passed = true;
    for input in manifests {
        all_passed &= check_one(args, input, &allowed, &options);
    }
    if all_passed { EXIT_OK } else { EXIT_FAILED }
}

fn check_one(
    args: &HashArgs,
    input: &Input,
    allowed: &[Algorithm],
    options: &CheckOptions,
) -> bool {
    let label = match input {
        Input::Stdin => "standard input".to_string(),
        Input::Path(p) => p.display().to_string(),
        Input::Remote(url) => url.clone(),
    };
    let text = match read_manifest(input) {
        Ok(t) => t,
        Err(e) => {
            print_error(format_args!("{}: {}", Quoted(&label), describe_io(&e)));
            return false;
        }
    };
    let manifest = manifest::parse(&text, allowed, matches!(input, Input::Stdin));
    if manifest.pgp_signed && !args.status {
        print_error(format_args!(
            "{}: PGP signature NOT verified (checksums read from the signed text; verify it with gpg)",
            Quoted(&label)
        ));
    }
    let mut stdout = io::stdout().lock();
    // The listed files' total is not known before they are opened: bytes and rate only.
    let progress = Progress::new(args.progress, &[Input::Stdin]);
    let tick = |n: u64| progress.inc(n);
    let remote = args.remote.options();
    let hash_options = HashOptions {
        progress: progress.enabled().then_some(&tick as &(dyn Fn(u64) + Sync)),
        remote: Some(&remote),
        ..HashOptions::default()
    };
    let mut report = |outcome: &Outcome<'_>| {
        // A failed write to stdout (a closed pipe) ends the process through SIGPIPE.
        let _ = progress.suspend(|| report_outcome(&mut stdout, args, &label, outcome));
    };
    let tally = check_manifest(&manifest, options, &hash_options, &mut report);
    progress.finish();
    let _ = stdout.flush();
    summarize(args, &label, &tally);
    tally.passed(options)
}

/// Prints one line's outcome as coreutils does.
fn report_outcome(
    out: &mut impl Write,
    args: &HashArgs,
    label: &str,
    outcome: &Outcome<'_>,
) -> io::Result<()> {
    let (entry, word) = match outcome {
        Outcome::Improper(n) => {
            if args.warn {
                print_error(format_args!(
                    "{}: {n}: improperly formatted checksum line",
                    Quoted(label)
                ));
            }
            return Ok(());
        }
        Outcome::SkippedMissing(_) => return Ok(()),
        Outcome::Ok(e) => {
            if args.quiet || args.status {
                return Ok(());
            }
            (e, "OK")
        }
        Outcome::Mismatch(e) => {
            if args.status {
                return Ok(());
            }
            (e, "FAILED")
        }
        Outcome::Unreadable(e, error) => {
            // Like coreutils, the reason goes to stderr even with --status.
            let name = String::from_utf8_lossy(&e.file);
            match error.io_error() {
                Some(source) if error.kind() == vmimage::ErrorKind::Io => {
                    print_error(format_args!("{}: {}", Quoted(&name), describe_io(source)))
                }
                _ => print_error(error),
            }
            if args.status {
                return Ok(());
            }
            (e, "FAILED open or read")
        }
    };
    if manifest::needs_escape_in_check(&entry.file) {
        out.write_all(b"\\")?;
        out.write_all(&manifest::escape(&entry.file))?;
    } else {
        out.write_all(&entry.file)?;
    }
    writeln!(out, ": {word}")
}

/// The warnings after a manifest, as coreutils prints them.
fn summarize(args: &HashArgs, label: &str, tally: &Tally) {
    if !tally.properly_formatted {
        print_error(format_args!(
            "{}: no properly formatted checksum lines found",
            Quoted(label)
        ));
        return;
    }
    if args.status {
        return;
    }
    let plural = |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    if tally.improper > 0 {
        print_error(format_args!(
            "WARNING: {} {}",
            tally.improper,
            plural(
                tally.improper,
                "line is improperly formatted",
                "lines are improperly formatted"
            )
        ));
    }
    if tally.unreadable > 0 {
        print_error(format_args!(
            "WARNING: {} {}",
            tally.unreadable,
            plural(
                tally.unreadable,
                "listed file could not be read",
                "listed files could not be read"
            )
        ));
    }
    if tally.mismatched > 0 {
        print_error(format_args!(
            "WARNING: {} {}",
            tally.mismatched,
            plural(
                tally.mismatched,
                "computed checksum did NOT match",
                "computed checksums did NOT match"
            )
        ));
    }
    if args.ignore_missing && tally.matched == 0 {
        print_error(format_args!("{}: no file was verified", Quoted(label)));
    }
}

/// Reads a manifest whole, up to [`MAX_MANIFEST_LEN`].
fn read_manifest(input: &Input) -> io::Result<Vec<u8>> {
    let mut text = Vec::new();
    let read = match input {
        Input::Stdin => io::stdin()
            .lock()
            .take(MAX_MANIFEST_LEN + 1)
            .read_to_end(&mut text),
        Input::Path(p) => {
            let file = std::fs::File::open(p)?;
            if file.metadata()?.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "Is a directory",
                ));
            }
            file.take(MAX_MANIFEST_LEN + 1).read_to_end(&mut text)
        }
        // Manifests may name URLs; a manifest itself is read from a file or standard input.
        Input::Remote(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a manifest is read from a file or standard input, not a URL",
        )),
    };
    read?;
    if text.len() as u64 > MAX_MANIFEST_LEN {
        return Err(io::Error::other(format!(
            "larger than the {} MiB manifest limit",
            MAX_MANIFEST_LEN >> 20
        )));
    }
    Ok(text)
}

/// A name quoted as coreutils quotes names in messages (`quotef`): bare when it holds only
/// characters a shell leaves alone, else in single quotes.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| c.is_alphanumeric() || "-_./,:@%+=^".contains(c));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "'{}'", self.0.replace('\'', "'\\''"))
        }
    }
}

/// The progress bar: bytes, rate and ETA on stderr, only when stderr is a terminal or
/// `--progress` asks for it.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(forced: bool, inputs: &[Input]) -> Self {
        let target = if io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else if forced {
            // Not a terminal (a log, CI): plain lines once a second instead of redrawing.
            ProgressDrawTarget::term_like_with_hz(Box::<PlainStderr>::default(), 1)
        } else {
            return Self { bar: None };
        };
        let total: Option<u64> = inputs.iter().map(Input::regular_len).sum();
        let bar = ProgressBar::with_draw_target(total, target);
        let template = if total.is_some() {
            "{bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta}"
        } else {
            "{bytes} {binary_bytes_per_sec} {elapsed}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Self { bar: Some(bar) }
    }

    fn enabled(&self) -> bool {
        self.bar.is_some()
    }

    fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Runs `f` (which prints) with the bar out of the way.
    fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A progress target for a stderr that is not a terminal (a log): one plain line at most
/// every [`PLAIN_PROGRESS_INTERVAL`]; blank lines (indicatif clearing the bar) are dropped.
#[derive(Debug, Default)]
struct PlainStderr {
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How often a non-terminal progress line is written.
const PLAIN_PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl PlainStderr {
    fn line(&self, s: &str) -> io::Result<()> {
        let s = s.trim_end();
        if s.trim().is_empty() {
            return Ok(());
        }
        if let Ok(mut last) = self.last.lock() {
            let now = std::time::Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < PLAIN_PROGRESS_INTERVAL) {
                return Ok(());
            }
            *last = Some(now);
        }
        writeln!(io::stderr(), "{s}")
    }
}

impl TermLike for PlainStderr {
    fn width(&self) -> u16 {
        80
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.line(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.line(s)
    }
    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        io::stderr().flush()
    }
}
