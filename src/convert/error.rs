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
use crate::digest::Digest;
use crate::digest::guest::GuestHash;
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

/// A failure inside a pass, before the paths are attached; `convert` turns it into an
/// [`Error`] naming the input or the output.
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
pub(crate) fn usage(sentence: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, None, sentence)
}

/// The input could not be opened or read.
pub(crate) fn input_io(input: &Path, source: io::Error) -> Error {
    // A remote read's failure is already one sentence naming the URL, with its own kind.
    let source = match crate::remote::take_failure(source) {
        Ok(remote) => return remote,
        Err(source) => source,
    };
    let sentence = format!("{}: {}", input.display(), describe_io(&source));
    Error::new(ErrorKind::Io, Some(input), sentence)
        .with_operation(Operation::Read)
        .with_source(source)
}

/// A guest reader's failure on `input`.
pub(crate) fn read_failure(input: &Path, e: ReadFailure) -> Error {
    match e {
        ReadFailure::Io(source) => input_io(input, source),
        ReadFailure::Invalid(reason) => invalid_input(input, reason),
    }
}

/// The input is refused by the safety rule `check`.
pub(crate) fn unsafe_input(input: &Path, check: Check, detail: &str) -> Error {
    let sentence = format!("{}: unsafe image ({check}): {detail}", input.display());
    Error::new(ErrorKind::Unsafe, Some(input), sentence).with_operation(Operation::Read)
}

/// The input's format cannot be converted.
pub(crate) fn unsupported_format(input: &Path, format: ImageFormat) -> Error {
    let sentence = format!(
        "{}: converting {format} images is not supported (raw, qcow2, vhd, vhdx, vmdk and vdi are)",
        input.display()
    );
    Error::new(ErrorKind::Unsupported, Some(input), sentence).with_operation(Operation::Read)
}

/// The input's metadata or data is invalid.
pub(crate) fn invalid_input(input: &Path, reason: String) -> Error {
    let sentence = format!("{}: invalid image: {reason}", input.display());
    Error::new(ErrorKind::InvalidImage, Some(input), sentence).with_operation(Operation::Read)
}

/// The input changed while it was converted.
pub(crate) fn input_changed(input: &Path) -> Error {
    let sentence = format!("{}: the file changed while it was read", input.display());
    Error::new(ErrorKind::Changed, Some(input), sentence).with_operation(Operation::Read)
}

/// The output could not be written; an interrupted write is [`interrupted`].
pub(crate) fn output_io(output: &Path, source: io::Error) -> Error {
    if io_kind(&source) == ErrorKind::Interrupted {
        return interrupted();
    }
    let sentence = format!(
        "{}: cannot write: {}",
        output.display(),
        describe_io(&source)
    );
    Error::new(ErrorKind::Io, Some(output), sentence)
        .with_operation(Operation::Write)
        .with_source(source)
}

/// The output would break a qcow2 limit; `reason` says which.
pub(crate) fn output_too_large(output: &Path, reason: String) -> Error {
    let sentence = format!("{}: {reason}", output.display());
    Error::new(ErrorKind::Unsupported, Some(output), sentence).with_operation(Operation::Write)
}

/// The metadata for `body` breaks rules of `target`.
pub(crate) fn metadata_rules(body: &Path, target: Target, violations: RuleViolations) -> Error {
    let sentence = format!("{}: {violations}", body.display());
    Error::new(ErrorKind::BrokenRules, Some(body), sentence)
        .with_operation(Operation::WriteMetadata)
        .with_source(MetadataRulesBroken { target, violations })
}

/// The metadata (or sidecar) file `path` could not be written.
pub(crate) fn metadata_io(path: &Path, source: io::Error) -> Error {
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
pub(crate) fn signing(output: &Path, source: SignError) -> Error {
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

/// `--verify`: the output read back holds another guest than the input; it is not put in
/// place.
pub(crate) fn verify_mismatch(output: &Path, input: &GuestHash, written: &GuestHash) -> Error {
    let sentence = format!(
        "{}: the written image does not hold the input's guest: guest hash {written}, the input's {input}",
        output.display()
    );
    Error::new(ErrorKind::Mismatch, Some(output), sentence).with_operation(Operation::Read)
}

/// `--expect`: the output's digest is not the expected one (`got` is `None` when it was not
/// computed, which [`super::validate_options`] prevents).
pub(crate) fn expect_mismatch(output: &Path, want: &Digest, got: Option<&Digest>) -> Error {
    let got = got.map_or_else(|| "not computed".to_string(), Digest::hex);
    let sentence = format!(
        "{}: the output's {} is {got}, not the expected {}",
        output.display(),
        want.algorithm,
        want.hex()
    );
    Error::new(ErrorKind::Mismatch, Some(output), sentence).with_operation(Operation::Write)
}

/// `--verify`: the written output cannot be read back as an image of its format.
pub(crate) fn verify_unreadable(output: &Path, reason: String) -> Error {
    let sentence = format!(
        "{}: the written image does not read back: {reason}",
        output.display()
    );
    Error::new(ErrorKind::InvalidImage, Some(output), sentence).with_operation(Operation::Read)
}

/// An interrupt arrived.
pub(crate) fn interrupted() -> Error {
    Error::new(ErrorKind::Interrupted, None, "interrupted".into())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;
    use crate::cloud::MetadataOptions;
    use crate::convert::{ConvertOptions, MetadataRequest, NoProgress, convert_with_metadata};

    fn qemu_img(dir: &Path, args: &[&str]) {
        let status = Command::new("qemu-img")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .expect("qemu-img must be installed (it is the tests' oracle)");
        assert!(status.success(), "qemu-img {args:?}");
    }

    fn fails(
        input: &Path,
        output: &Path,
        options: &ConvertOptions,
        metadata: Option<&MetadataRequest>,
    ) -> Error {
        convert_with_metadata(input, output, options, &NoProgress, metadata)
            .expect_err("the conversion must fail")
    }

    /// The CLI's exit status follows the kind (1: unsafe, invalid, broken rule; 2: the job
    /// could not be done), so each way a conversion fails is pinned to its kind here.
    #[test]
    fn each_way_a_conversion_fails_has_the_kind_its_exit_status_follows() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let raw = d.join("disk.raw");
        std::fs::write(&raw, vec![0x11; 1 << 20]).unwrap();
        let out = d.join("out.qcow2");
        let options = ConvertOptions {
            algorithms: Vec::new(),
            ..ConvertOptions::default()
        };

        let bad_cluster = ConvertOptions {
            cluster_size: 1000,
            ..options.clone()
        };
        let e = fails(&raw, &out, &bad_cluster, None);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

        let missing = d.join("missing.raw");
        let e = fails(&missing, &out, &options, None);
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
        assert_eq!(e.path(), Some(missing.as_path()));
        assert_eq!(e.context().operation, Some(Operation::Read));
        assert_eq!(
            e.io_error().map(io::Error::kind),
            Some(io::ErrorKind::NotFound)
        );

        let unwritable = d.join("no-such-dir").join("out.qcow2");
        let e = fails(&raw, &unwritable, &options, None);
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
        assert_eq!(e.path(), Some(unwritable.as_path()));
        assert_eq!(e.context().operation, Some(Operation::Write));

        // Every format without a reader is refused as unsafe first, so "unsupported" is an
        // output past a format's limits: VHD ends at 2040 GiB.
        qemu_img(d, &["create", "-q", "-f", "qcow2", "big.qcow2", "3T"]);
        let vhd = ConvertOptions {
            format: crate::convert::OutputFormat::Vpc,
            ..options.clone()
        };
        let e = fails(&d.join("big.qcow2"), &d.join("big.vhd"), &vhd, None);
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");

        qemu_img(
            d,
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "disk.raw",
                "-F",
                "raw",
                "overlay.qcow2",
            ],
        );
        let e = fails(&d.join("overlay.qcow2"), &out, &options, None);
        assert_eq!(e.kind(), ErrorKind::Unsafe, "{e}");

        // The L2 table of the first guest cluster lies at 1 TiB, far past the end of the file:
        // the headers are valid, the guest data cannot be read.
        qemu_img(d, &["create", "-q", "-f", "qcow2", "broken.qcow2", "1M"]);
        let broken = d.join("broken.qcow2");
        let mut bytes = std::fs::read(&broken).unwrap();
        let l1 = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
        bytes[l1..l1 + 8].copy_from_slice(&((1u64 << 63) | (1 << 40)).to_be_bytes());
        std::fs::write(&broken, bytes).unwrap();
        let e = fails(&broken, &out, &options, None);
        assert_eq!(e.kind(), ErrorKind::InvalidImage, "{e}");

        let request = MetadataRequest {
            target: Target::Scp,
            options: MetadataOptions {
                name: Some("no/slashes".into()),
                ..MetadataOptions::default()
            },
            body: d.join("body.json"),
            sidecar: None,
            signature: None,
        };
        let e = fails(&raw, &out, &options, Some(&request));
        assert_eq!(e.kind(), ErrorKind::BrokenRules, "{e}");
        let broken_rules = e.downcast_ref::<MetadataRulesBroken>().unwrap();
        assert_eq!(broken_rules.target, Target::Scp);

        assert!(!out.exists());
        assert!(!d.join("body.json").exists());
    }
}
