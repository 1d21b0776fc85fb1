//! Verifying manifests (`vmimage hash --check`): every listed file read once, outcomes and the
//! final verdict as coreutils' `md5sum -c` / `sha256sum -c` (9.1) decide them.
//!
//! A file listed on several lines (say its MD5 and SHA-512 lines, as `vmimage hash` writes
//! them) is read once for all of its algorithms; files are read in parallel; outcomes are
//! delivered in line order. Printing is the caller's job.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::algorithm::Algorithm;
use super::digests::Digests;
use super::manifest::{Entry, Line, Manifest};
use super::parallel::hash_jobs;
use super::source::{HashOptions, Input};
use crate::error::Error;

/// Flags of `--check`, with coreutils' meanings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// `--ignore-missing`: a listed file that does not exist is skipped silently.
    pub ignore_missing: bool,
    /// `--strict`: improperly formatted lines fail the check.
    pub strict: bool,
}

/// What happened to one line.
#[derive(Debug)]
pub enum Outcome<'m> {
    /// The line is improperly formatted (its number).
    Improper(usize),
    /// The digest matches.
    Ok(&'m Entry),
    /// The digest differs.
    Mismatch(&'m Entry),
    /// The file does not exist and `--ignore-missing` was given: nothing is reported.
    SkippedMissing(&'m Entry),
    /// The file could not be opened or read (or changed while it was read).
    Unreadable(&'m Entry, &'m Error),
}

/// Counts of outcomes in one manifest, and coreutils' verdict over them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Improperly formatted lines.
    pub improper: u64,
    /// Lines whose digest differed.
    pub mismatched: u64,
    /// Lines whose file could not be read (missing files included unless ignored).
    pub unreadable: u64,
    /// Lines whose digest matched.
    pub matched: u64,
    /// Whether any line was well formed (a missing file skipped by `--ignore-missing`
    /// counts: its line was well formed).
    pub properly_formatted: bool,
}

impl Tally {
    /// Adds one outcome.
    pub fn record(&mut self, outcome: &Outcome<'_>) {
        match outcome {
            Outcome::Improper(_) => self.improper += 1,
            Outcome::Ok(_) => {
                self.matched += 1;
                self.properly_formatted = true;
            }
            Outcome::Mismatch(_) => {
                self.mismatched += 1;
                self.properly_formatted = true;
            }
            Outcome::Unreadable(..) => {
                self.unreadable += 1;
                self.properly_formatted = true;
            }
            Outcome::SkippedMissing(_) => self.properly_formatted = true,
        }
    }

    /// Whether the manifest passed: some line was checked and matched, none differed or was
    /// unreadable, and (with `--strict`) none was improperly formatted.
    pub fn passed(&self, options: &CheckOptions) -> bool {
        self.properly_formatted
            && self.matched > 0
            && self.mismatched == 0
            && self.unreadable == 0
            && (!options.strict || self.improper == 0)
    }
}

/// The path a manifest name refers to (`-` is standard input, an `s3://` or `https://` URL a
/// remote object). Names are bytes; on Unix any byte string is a path.
pub fn input_for(name: &[u8]) -> Input {
    if name == b"-" {
        Input::Stdin
    } else {
        Input::from_arg(PathBuf::from(OsStr::from_bytes(name)))
    }
}

/// Whether an error means "no such file" (which `--ignore-missing` skips).
pub fn is_missing(error: &Error) -> bool {
    error.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound)
}

/// Checks every line of `manifest`, calling `report` with each outcome in line order.
/// Returns the tally; the verdict is [`Tally::passed`].
pub fn check_manifest<F>(
    manifest: &Manifest,
    options: &CheckOptions,
    hash: &HashOptions<'_>,
    mut report: F,
) -> Tally
where
    F: FnMut(&Outcome<'_>),
{
    // Distinct files in order of first mention, each with every algorithm it is listed with.
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut files: Vec<(&[u8], Vec<Algorithm>)> = Vec::new();
    let mut file_of_line = Vec::with_capacity(manifest.lines.len());
    for line in &manifest.lines {
        match line {
            Line::Entry(e) => {
                let i = *index.entry(e.file.as_slice()).or_insert_with(|| {
                    files.push((e.file.as_slice(), Vec::new()));
                    files.len() - 1
                });
                if !files[i].1.contains(&e.algorithm) {
                    files[i].1.push(e.algorithm);
                }
                file_of_line.push(Some(i));
            }
            Line::Improper(_) => file_of_line.push(None),
        }
    }

    let mut tally = Tally::default();
    let mut results: Vec<Option<Result<Digests, Error>>> = (0..files.len()).map(|_| None).collect();
    let mut next_line = 0;
    // Emits every line whose file (and every earlier line's file) is done.
    let mut flush =
        |results: &Vec<Option<Result<Digests, Error>>>, done: usize, tally: &mut Tally| {
            while let Some(line) = manifest.lines.get(next_line) {
                let outcome = match (line, file_of_line[next_line]) {
                    (Line::Improper(n), _) => Outcome::Improper(*n),
                    (Line::Entry(e), Some(f)) if f < done => match &results[f] {
                        Some(Ok(digests)) => {
                            let matched = digests
                                .get(e.algorithm)
                                .is_some_and(|d| d.bytes == e.expected);
                            if matched {
                                Outcome::Ok(e)
                            } else {
                                Outcome::Mismatch(e)
                            }
                        }
                        Some(Err(err)) if options.ignore_missing && is_missing(err) => {
                            Outcome::SkippedMissing(e)
                        }
                        Some(Err(err)) => Outcome::Unreadable(e, err),
                        None => break,
                    },
                    _ => break,
                };
                tally.record(&outcome);
                report(&outcome);
                next_line += 1;
            }
        };

    let inputs: Vec<Input> = files.iter().map(|(name, _)| input_for(name)).collect();
    flush(&results, 0, &mut tally);
    hash_jobs(
        inputs.len(),
        |i| (&inputs[i], files[i].1.as_slice()),
        hash,
        |i, result| {
            results[i] = Some(result);
            flush(&results, i + 1, &mut tally);
        },
    );
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(
        improper: u64,
        mismatched: u64,
        unreadable: u64,
        matched: u64,
        formatted: bool,
    ) -> Tally {
        Tally {
            improper,
            mismatched,
            unreadable,
            matched,
            properly_formatted: formatted,
        }
    }

    const PLAIN: CheckOptions = CheckOptions {
        ignore_missing: false,
        strict: false,
    };
    const STRICT: CheckOptions = CheckOptions {
        ignore_missing: false,
        strict: true,
    };

    #[test]
    fn every_line_matching_passes_even_with_improper_lines_unless_strict() {
        assert!(tally(0, 0, 0, 2, true).passed(&PLAIN));
        assert!(tally(1, 0, 0, 2, true).passed(&PLAIN));
        assert!(!tally(1, 0, 0, 2, true).passed(&STRICT));
    }

    #[test]
    fn a_mismatch_or_an_unreadable_file_fails() {
        assert!(!tally(0, 1, 0, 2, true).passed(&PLAIN));
        assert!(!tally(0, 0, 1, 2, true).passed(&PLAIN));
    }

    #[test]
    fn a_manifest_that_verified_nothing_fails() {
        // No properly formatted line at all, or only skipped missing files.
        assert!(!tally(3, 0, 0, 0, false).passed(&PLAIN));
        assert!(!tally(0, 0, 0, 0, true).passed(&PLAIN));
    }

    #[test]
    fn missing_files_are_skipped_only_with_ignore_missing() {
        let manifest = super::super::manifest::parse(
            b"d41d8cd98f00b204e9800998ecf8427e  /nonexistent/vmimage-test\n",
            &[],
            false,
        );
        let mut seen = Vec::new();
        let t = check_manifest(
            &manifest,
            &CheckOptions {
                ignore_missing: true,
                strict: false,
            },
            &HashOptions::default(),
            |o| seen.push(matches!(o, Outcome::SkippedMissing(_))),
        );
        assert_eq!(seen, vec![true]);
        assert!(t.properly_formatted && t.unreadable == 0 && !t.passed(&PLAIN));
        let t = check_manifest(&manifest, &PLAIN, &HashOptions::default(), |o| {
            assert!(matches!(o, Outcome::Unreadable(..)));
        });
        assert_eq!(t.unreadable, 1);
    }
}
