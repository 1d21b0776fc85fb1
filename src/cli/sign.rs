//! `vmimage sign FILE --key KEY.pem [--hash-method SHA-512] [--cert-uuid UUID]
//! [--passphrase-file FILE] [--json]`: Glance's `img_signature*` properties for a file, from one
//! read of it; and the `--sign-key` flags `metadata` and `convert --metadata` share.
//!
//! The passphrase of an encrypted key comes from `--passphrase-file` or the environment
//! variable `VMIMAGE_KEY_PASSPHRASE`, never from an argument (which `ps` shows to every user).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use vmimage::cloud::MetadataDocument;
use vmimage::digest::{Algorithm, Digests, Input, hash_input};
use vmimage::signing::{
    DOCUMENTED_SIGNATURE_LIMIT, ImageSigner, SignatureProperties, SigningKey, parse_hash_method,
};

use super::render::print_json;
use super::{EXIT_ERROR, EXIT_OK, print_error};

/// The environment variable that may hold an encrypted key's passphrase.
pub const PASSPHRASE_ENV: &str = "VMIMAGE_KEY_PASSPHRASE";

fn parse_method(s: &str) -> Result<Algorithm, String> {
    parse_hash_method(s)
        .ok_or_else(|| format!("{s:?} is not one of SHA-224, SHA-256, SHA-384, SHA-512"))
}

/// How to sign, besides the key: shared by `sign`, `metadata` and `convert --metadata`.
#[derive(Debug, Clone, Default, Args)]
pub struct SignOptions {
    /// img_signature_hash_method: SHA-224, SHA-256, SHA-384 or SHA-512 [default: SHA-512,
    /// the os_hash_value digest, so signing costs no extra hashing].
    #[arg(long, value_name = "METHOD", value_parser = parse_method)]
    pub hash_method: Option<Algorithm>,
    /// img_signature_certificate_uuid: the signing certificate's ID in Barbican.
    #[arg(long, value_name = "UUID")]
    pub cert_uuid: Option<String>,
    /// A file whose first line is the passphrase of an encrypted key (else the environment
    /// variable VMIMAGE_KEY_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// `--sign-key` and its options, for `metadata` and `convert --metadata`.
#[derive(Debug, Clone, Default, Args)]
pub struct SigningFlags {
    /// Sign the image for Glance with this PEM private key (RSA, ECDSA P-384/P-521, DSA) and
    /// add the img_signature* properties (glance only).
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
    /// The signing options.
    #[command(flatten)]
    pub options: SignOptions,
}

/// A loaded key with its options ([`ImageSigner`]), reporting its failures as the CLI does.
#[derive(Debug)]
pub struct Signer(ImageSigner);

impl Signer {
    /// Loads `key_path` with `options`; on failure prints the sentence and returns the exit
    /// status (2: the job cannot be done).
    pub fn load(key_path: &Path, options: &SignOptions) -> Result<Self, u8> {
        let pem = std::fs::read(key_path).map_err(|e| {
            print_error(format!(
                "{}: cannot read the key: {}",
                key_path.display(),
                vmimage::error::describe_io(&e)
            ));
            EXIT_ERROR
        })?;
        let passphrase = read_passphrase(options)?;
        let key = SigningKey::from_pem(&pem, passphrase.as_deref()).map_err(|e| {
            print_error(format!("{}: {e}", key_path.display()));
            EXIT_ERROR
        })?;
        if options.cert_uuid.is_none() {
            print_error(
                "warning: no --cert-uuid: img_signature_certificate_uuid is left out, and Glance verifies a signature only when all four properties are present",
            );
        }
        Ok(Self(ImageSigner {
            key,
            algorithm: options.hash_method.unwrap_or(Algorithm::Sha512),
            certificate_uuid: options.cert_uuid.clone(),
        }))
    }

    /// The digest the signature needs, to add to the single read's algorithms.
    pub fn algorithm(&self) -> Algorithm {
        self.0.algorithm
    }

    /// Adds the algorithm to `algorithms` unless it is there already.
    pub fn add_algorithm_to(&self, algorithms: &mut Vec<Algorithm>) {
        self.0.add_algorithm_to(algorithms);
    }

    /// Signs the file whose digests are `digests`; on failure prints the sentence (naming
    /// `file`) and returns the exit status.
    pub fn sign(&self, file: &str, digests: &Digests) -> Result<SignatureProperties, u8> {
        let properties = self.0.sign(digests).map_err(|e| {
            print_error(format!("{file}: cannot sign: {e}"));
            EXIT_ERROR
        })?;
        warn_if_long(&properties);
        Ok(properties)
    }

    /// The library's signer, for `convert --metadata`, which signs inside the conversion.
    pub fn into_inner(self) -> ImageSigner {
        self.0
    }

    /// Signs and adds the properties to `doc`.
    pub fn sign_into(
        &self,
        doc: &mut MetadataDocument,
        file: &str,
        digests: &Digests,
    ) -> Result<(), u8> {
        let properties = self.sign(file, digests)?;
        doc.add_signature(&properties);
        Ok(())
    }
}

/// Warns (without failing) when `img_signature` is longer than the limit Glance's v1
/// documentation mentions: an RSA-2048 signature is 344 characters and current Glance stores it.
pub fn warn_if_long(properties: &SignatureProperties) {
    if properties.exceeds_documented_limit() {
        print_error(format!(
            "warning: img_signature is {} characters; Glance's documentation mentions a {DOCUMENTED_SIGNATURE_LIMIT}-character limit (Image API v1): check that your cloud stores it",
            properties.img_signature.len()
        ));
    }
}

/// Loads `--sign-key` for `metadata`/`convert --metadata`, when given: glance only.
pub fn load_signing(flags: &SigningFlags, glance: bool) -> Result<Option<Signer>, u8> {
    let Some(key) = &flags.sign_key else {
        if flags.options.hash_method.is_some()
            || flags.options.cert_uuid.is_some()
            || flags.options.passphrase_file.is_some()
        {
            print_error(
                "--hash-method, --cert-uuid and --passphrase-file are options of --sign-key, which was not given",
            );
            return Err(EXIT_ERROR);
        }
        return Ok(None);
    };
    if !glance {
        print_error(
            "--sign-key needs --target glance: only Glance (with Nova) verifies img_signature",
        );
        return Err(EXIT_ERROR);
    }
    Signer::load(key, &flags.options).map(Some)
}

fn read_passphrase(options: &SignOptions) -> Result<Option<Vec<u8>>, u8> {
    if let Some(path) = &options.passphrase_file {
        let text = std::fs::read(path).map_err(|e| {
            print_error(format!(
                "{}: cannot read the passphrase: {}",
                path.display(),
                vmimage::error::describe_io(&e)
            ));
            EXIT_ERROR
        })?;
        // The first line, as `openssl -passin file:` reads it.
        let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        return Ok(Some(line.to_vec()));
    }
    Ok(std::env::var_os(PASSPHRASE_ENV).map(|v| v.into_encoded_bytes()))
}

/// Arguments of `vmimage sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The image file to sign, exactly as it will be uploaded (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The PEM private key (RSA, ECDSA P-384 or P-521, DSA); the key type comes from it.
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
    /// The signing options.
    #[command(flatten)]
    pub options: SignOptions,
    /// Print the properties as a JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vmimage sign`; returns the exit status.
pub fn run(args: &SignArgs) -> u8 {
    let signer = match Signer::load(&args.key, &args.options) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let input = Input::from_arg(&args.file);
    let name = input.display_name();
    let digests = match hash_input(&input, &[signer.algorithm()], &Default::default()) {
        Ok(d) => d,
        Err(e) => {
            print_error(e);
            return EXIT_ERROR;
        }
    };
    let properties = match signer.sign(&name, &digests) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let printed = if args.json {
        print_json(&properties)
    } else {
        let mut out = io::stdout().lock();
        properties
            .pairs()
            .into_iter()
            .try_for_each(|(k, v)| writeln!(out, "{k}={v}"))
    };
    match printed {
        Ok(()) => EXIT_OK,
        Err(_) => EXIT_ERROR,
    }
}
