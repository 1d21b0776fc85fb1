//! `vmimage metadata FILE --target glance|scp|ims [flags] [--sidecar FILE]
//! [--openstack-command] [--json]`: the request body that registers the image with a cloud.
//!
//! stdout carries only the JSON body (or, with `--openstack-command`, the equivalent
//! `openstack image create` line). When any rule is broken, every broken rule goes to stderr
//! (with `--json`, also as `{"target", "violations": [...]}` on stdout), nothing is written,
//! and the exit status is 1. A file that cannot be read is 2.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use vmimage::cloud::metadata::SIDECAR_ALGORITHMS;
use vmimage::cloud::openstack_cli::{command_line, image_create_args};
use vmimage::cloud::{MetadataOptions, RuleViolations, Target, build};
use vmimage::facts::gather_facts;
use vmimage::guest_hash::GuestHashOptions;

use super::render::print_json;
use super::sign::{SigningFlags, load_signing};
use super::{EXIT_ERROR, EXIT_FAILED, EXIT_OK, exit_status, print_error};

/// The image properties a user chooses; shared by `vmimage metadata` and
/// `vmimage convert --metadata` (flatten it into the command's arguments).
#[derive(Debug, Clone, Default, Args)]
pub struct MetadataFlags {
    /// Image name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// OS distribution: Glance `os_distro` (libosinfo, lower case), SCP OS type
    /// (alma centos rhel rocky ubuntu windows oracle sles), IMS `__platform`.
    #[arg(long, value_name = "DISTRO")]
    pub os_distro: Option<String>,
    /// OS version (Glance `os_version`, IMS `__os_version`).
    #[arg(long, value_name = "VERSION")]
    pub os_version: Option<String>,
    /// Minimum disk in GiB [default: ceil(virtual size / GiB); IMS at least 1].
    #[arg(long, value_name = "GIB", allow_negative_numbers = true)]
    pub min_disk: Option<i64>,
    /// Minimum RAM in MiB (every target's API stores MB).
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub min_ram: Option<i64>,
    /// Visibility: glance private|shared|community|public, scp private|shared, ims private.
    #[arg(long, value_name = "VISIBILITY")]
    pub visibility: Option<String>,
    /// Protect the image from deletion.
    #[arg(long)]
    pub protected: bool,
    /// A tag, KEY=VALUE or KEY (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Where the uploaded file is: SCP Object Storage URL (ending in .qcow2), IMS OBS
    /// location BUCKET:OBJECT.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// CPU architecture (Glance `architecture`, e.g. x86_64; IMS x86|arm).
    #[arg(long, value_name = "ARCH")]
    pub architecture: Option<String>,
    /// Boot firmware, bios or uefi (`hw_firmware_type`).
    #[arg(long, value_name = "bios|uefi")]
    pub firmware: Option<String>,
    /// Glance image signing (`--sign-key KEY.pem` and its options).
    #[command(flatten)]
    pub signing: SigningFlags,
}

impl MetadataFlags {
    /// The library's options for these flags.
    pub fn to_options(&self) -> MetadataOptions {
        MetadataOptions {
            name: self.name.clone(),
            os_distro: self.os_distro.clone(),
            os_version: self.os_version.clone(),
            min_disk: self.min_disk,
            min_ram: self.min_ram,
            visibility: self.visibility.clone(),
            protected: self.protected,
            tags: self.tags.clone(),
            url: self.url.clone(),
            architecture: self.architecture.clone(),
            firmware: self.firmware.clone(),
        }
    }
}

/// Parses `--target`.
pub fn parse_target(s: &str) -> Result<Target, String> {
    Target::from_name(s).ok_or_else(|| format!("{s:?} is not one of glance, scp, ims"))
}

/// Arguments of `vmimage metadata`.
#[derive(Debug, Args)]
pub struct MetadataArgs {
    /// The image file the metadata describes.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The image service: glance, scp or ims.
    #[arg(long, value_name = "TARGET", value_parser = parse_target)]
    pub target: Target,
    /// The image's properties.
    #[command(flatten)]
    pub flags: MetadataFlags,
    /// Also write the digests and sizes (which no create body may carry) to this file,
    /// atomically; `vmimage verify --against` reads it back.
    #[arg(long, value_name = "FILE")]
    pub sidecar: Option<PathBuf>,
    /// Print the equivalent `openstack image create` command line instead (glance only).
    #[arg(long)]
    pub openstack_command: bool,
    /// With broken rules, also print them as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// Runs `vmimage metadata`; returns the exit status.
pub fn run(args: &MetadataArgs) -> u8 {
    vmimage::remote::set_options(args.remote.options());
    if args.openstack_command && args.target != Target::Glance {
        print_error("metadata: --openstack-command needs --target glance");
        return EXIT_ERROR;
    }
    let signer = match load_signing(&args.flags.signing, args.target == Target::Glance) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut algorithms = if args.sidecar.is_some() {
        SIDECAR_ALGORITHMS.to_vec()
    } else {
        Vec::new()
    };
    if let Some(s) = &signer {
        s.add_algorithm_to(&mut algorithms);
    }
    let facts = match gather_facts(&args.file, &algorithms) {
        Ok(f) => f,
        Err(e) => {
            print_error(&e);
            return exit_status(&e);
        }
    };
    let file = args.file.display().to_string();
    let mut doc = match build(args.target, &facts, &args.flags.to_options()) {
        Ok(doc) => doc,
        Err(violations) => return report_violations(&file, args.target, args.json, &violations),
    };
    // Signed before the command line is made, so that it carries the properties too.
    if let (Some(signer), Some(digests)) = (&signer, &facts.digests)
        && let Err(code) = signer.sign_into(&mut doc, &file, digests)
    {
        return code;
    }
    let line = if args.openstack_command {
        match image_create_args(&doc, &file) {
            Ok(a) => Some(command_line(&a)),
            Err(violations) => {
                return report_violations(&file, args.target, args.json, &violations);
            }
        }
    } else {
        None
    };
    if args.sidecar.is_some() {
        match vmimage::guest_hash::hash_path(&args.file, &GuestHashOptions::default()) {
            Ok(h) => doc.sidecar.guest_hash = Some(h),
            // A format with no guest reader yet: the sidecar goes without a guest hash.
            Err(e) if e.kind() == vmimage::ErrorKind::Unsupported => {}
            Err(e) => {
                print_error(e);
                return EXIT_ERROR;
            }
        }
    }
    if let Some(path) = &args.sidecar
        && let Err(e) = super::output::write_document(path, doc.sidecar_json().as_bytes())
    {
        print_error(format!(
            "{}: cannot write the sidecar: {}",
            path.display(),
            vmimage::error::describe_io(&e)
        ));
        return EXIT_ERROR;
    }
    let printed = match line {
        Some(line) => writeln!(io::stdout().lock(), "{line}"),
        None => io::stdout().lock().write_all(doc.body_json().as_bytes()),
    };
    if printed.is_err() {
        return EXIT_ERROR;
    }
    EXIT_OK
}

/// Prints every broken rule (one sentence each on stderr, and as JSON on stdout with `json`)
/// and returns exit status 1.
pub fn report_violations(
    file: &str,
    target: Target,
    json: bool,
    violations: &RuleViolations,
) -> u8 {
    for v in &violations.0 {
        print_error(format!("{file}: {v} [{}]", v.rule));
    }
    if json {
        let doc = serde_json::json!({
            "target": target,
            "violations": violations,
        });
        if print_json(&doc).is_err() {
            return EXIT_ERROR;
        }
    }
    EXIT_FAILED
}
