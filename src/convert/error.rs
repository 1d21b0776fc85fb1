//! How a conversion fails: the crate's [`Error`], made with the sentences `vmimage convert`
//! prints, and [`Failure`], what a pass reports before the paths are attached.
//!
//! Kinds (see [`ErrorKind`]): an unsafe input is [`ErrorKind::Unsafe`], an invalid one
//! [`ErrorKind::InvalidImage`], a metadata rule broken [`ErrorKind::BrokenRules`] (the CLI
//! exits 1 for these); an input that changed is [`ErrorKind::Changed`], whatever symptom the
//! change caused, as it is for `hash`, `verify` and `metadata`; unreadable input and unwritable
//! output are [`ErrorKind::Io`]; a format or size vmimage cannot write is
//! [`ErrorKind::Unsupported`]; inconsistent options are [`ErrorKind::InvalidArgument`] (exit
//! 2); a signal is [`ErrorKind::Interrupted`] (exit 130).

use std::io;
use std::path::Path;

use crate::cloud::{RuleViolations, Target};
use crate::error::{Error, ErrorKind, Operation, describe_io, io_kind};
use crate::format::ImageFormat;
use crate::format::guest::ReadFailure;
use crate::safety::Check;
use crate::signing::SignError;

/// The metadata asked for with the output breaks rules of its target, so nothing was written:
/// the source of an [`ErrorKind::BrokenRules`] error, for the CLI to list every rule.
#[derive(Debug, thiserror::Error)]
#[error("{violations}")]
pub struct MetadataRulesBroken {
    /// The target whose rules broke.
    pub target: Target,
    /// Every broken rule.
    pub violations: RuleViolations,
}

/// A failure inside a pass, before the paths are attached ([`Failure::into_error`]).
#[derive(Debug)]
pub enum Failure {
    /// Reading the input.
    Input(ReadFailure),
    /// Writing the output.
    Output(io::Error),
    /// The temporary store of compressed clusters.
    Spill(io::Error),
    /// The input no longer holds what the scan saw.
    Changed,
}

impl Failure {
    /// The crate error for this failure of a conversion from `input` to `output`.
    pub(super) fn into_error(self, input: &Path, output: &Path) -> Error {
        match self {
            Failure::Input(e) => read_failure(input, e),
            Failure::Output(e) | Failure::Spill(e) => output_io(output, e),
            Failure::Changed => input_changed(input),
        }
    }
}

/// Options inconsistent or out of range; `sentence` says which.
pub(super) fn usage(sentence: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, None, sentence)
}

/// The input could not be opened or read.
pub(super) fn input_io(input: &Path, source: io::Error) -> Error {
    let sentence = format!("{}: {}", input.display(), describe_io(&source));
    Error::new(ErrorKind::Io, Some(input), sentence)
        .with_operation(Operation::Read)
        .with_source(source)
}

/// A guest reader's failure on `input`.
pub(super) fn read_failure(input: &Path, e: ReadFailure) -> Error {
    match e {
        ReadFailure::Io(source) => input_io(input, source),
        ReadFailure::Invalid(reason) => invalid_input(input, reason),
    }
}

/// The input is refused by the safety rule `check`.
pub(super) fn unsafe_input(input: &Path, check: Check, detail: &str) -> Error {
    let sentence = format!("{}: unsafe image ({check}): {detail}", input.display());
    Error::new(ErrorKind::Unsafe, Some(input), sentence).with_operation(Operation::Read)
}

/// The input's format cannot be converted.
pub(super) fn unsupported_format(input: &Path, format: ImageFormat) -> Error {
    let sentence = format!(
        "{}: converting {format} images is not supported (raw, qcow2 and vhd are)",
        input.display()
    );
    Error::new(ErrorKind::Unsupported, Some(input), sentence).with_operation(Operation::Read)
}

/// The input's metadata or data is invalid.
pub(super) fn invalid_input(input: &Path, reason: String) -> Error {
    let sentence = format!("{}: invalid image: {reason}", input.display());
    Error::new(ErrorKind::InvalidImage, Some(input), sentence).with_operation(Operation::Read)
}

/// The input changed while it was converted.
pub(super) fn input_changed(input: &Path) -> Error {
    let sentence = format!("{}: the file changed while it was read", input.display());
    Error::new(ErrorKind::Changed, Some(input), sentence).with_operation(Operation::Read)
}

/// The output could not be written; an interrupted write is [`interrupted`].
pub(super) fn output_io(output: &Path, source: io::Error) -> Error {
    if io_kind(&source) == ErrorKind::Interrupted {
        return interrupted();
    }
    let sentence = format!("{}: cannot write: {}", output.display(), describe_io(&source));
    Error::new(ErrorKind::Io, Some(output), sentence)
        .with_operation(Operation::Write)
        .with_source(source)
}

/// The output would break a qcow2 limit; `reason` says which.
pub(super) fn output_too_large(output: &Path, reason: String) -> Error {
    let sentence = format!("{}: {reason}", output.display());
    Error::new(ErrorKind::Unsupported, Some(output), sentence).with_operation(Operation::Write)
}

/// The metadata for `body` breaks rules of `target`.
pub(super) fn metadata_rules(body: &Path, target: Target, violations: RuleViolations) -> Error {
    let sentence = format!("{}: {violations}", body.display());
    Error::new(ErrorKind::BrokenRules, Some(body), sentence)
        .with_operation(Operation::WriteMetadata)
        .with_source(MetadataRulesBroken { target, violations })
}

/// The metadata (or sidecar) file `path` could not be written.
pub(super) fn metadata_io(path: &Path, source: io::Error) -> Error {
    let sentence = format!(
        "{}: cannot write the metadata: {}",
        path.display(),
        describe_io(&source)
    );
    Error::new(ErrorKind::Io, Some(path), sentence)
        .with_operation(Operation::WriteMetadata)
        .with_source(source)
}

/// The output could not be signed.
pub(super) fn signing(output: &Path, source: SignError) -> Error {
    let kind = match source {
        SignError::PassphraseNeeded | SignError::BadKey(_) | SignError::BadCertificate(_) => {
            ErrorKind::InvalidArgument
        }
        SignError::UnsupportedKey(_) | SignError::Unsupported(_) => ErrorKind::Unsupported,
        SignError::Crypto(_) | SignError::DigestMissing(_) => ErrorKind::Internal,
    };
    let sentence = format!("{}: cannot sign: {source}", output.display());
    Error::new(kind, Some(output), sentence)
        .with_operation(Operation::Sign)
        .with_source(source)
}

/// An interrupt arrived.
pub(super) fn interrupted() -> Error {
    Error::new(ErrorKind::Interrupted, None, "interrupted".into())
}
