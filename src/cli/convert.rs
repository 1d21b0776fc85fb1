//! `vmimage convert IN OUT -O qcow2|raw|vpc|vmdk|vhdx [-o OPTIONS] [--azure] [-c zlib|zstd] [--cluster-size N] [--threads N]
//! [--sync] [--progress] [--json]`: converts, then prints the output's MD5 and SHA-512 (computed while it
//! was written) as BSD-tagged lines, like `vmimage hash`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use vmimage::convert::{
    Compression, ConvertOptions, ConvertReport, DEFAULT_CLUSTER_SIZE, Destination, MetadataRequest,
    MetadataRulesBroken, OutputFormat, Progress, Subformat, convert_to,
};
use vmimage::digest::{Algorithm, Digest};

use vmimage::cloud::Target;

use super::metadata::{MetadataFlags, parse_target, report_violations};
use super::output::install_interrupt_handler;
use super::render::write_json;
use super::sign::{Signer, load_signing, warn_if_long};
use super::{EXIT_ERROR, EXIT_OK, exit_status, print_error};

/// Output formats accepted by `-O`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// qcow2 version 3 (compat 1.1).
    Qcow2,
    /// Sparse raw.
    Raw,
    /// VHD (QEMU's `vpc`): dynamic, or fixed with `-o subformat=fixed` or `--azure`.
    #[value(alias = "vhd")]
    Vpc,
    /// VMDK: streamOptimized, or monolithicSparse with `-o subformat=monolithicSparse`.
    Vmdk,
    /// VHDX, dynamic.
    Vhdx,
}

/// The `-o` options understood, as `qemu-img` spells them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    subformat: Option<Subformat>,
    force_size: bool,
}

/// Parses `subformat=fixed,force_size=on` (`qemu-img`'s `-o` syntax, for the options this
/// tool implements).
fn parse_create_options(s: &str) -> Result<CreateOptions, String> {
    let mut options = CreateOptions::default();
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not KEY=VALUE"))?;
        match key {
            "subformat" => {
                options.subformat = Some(Subformat::from_name(value).ok_or_else(|| {
                    format!(
                        "subformat {value:?} is not one of dynamic, fixed, streamOptimized, monolithicSparse"
                    )
                })?);
            }
            "force_size" => {
                options.force_size = match value {
                    "on" | "true" | "yes" => true,
                    "off" | "false" | "no" => false,
                    _ => return Err(format!("force_size takes on or off, not {value:?}")),
                };
            }
            _ => {
                return Err(format!(
                    "option {key:?} is not supported (subformat and force_size are)"
                ));
            }
        }
    }
    Ok(options)
}

/// Compression types accepted by `-c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Raw deflate, QEMU's default compression type.
    Zlib,
    /// Zstandard (`compression_type=zstd`).
    Zstd,
}

/// Arguments of `vmimage convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The image to convert: raw, qcow2 (v2 or v3), VHD (fixed or dynamic), VMDK
    /// (monolithicSparse, streamOptimized), VHDX or VDI, detected from content; a local path,
    /// `s3://bucket/key` or `https://...`.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The file to write. It appears only when complete (written aside, then renamed). `-`
    /// streams the output to standard output (the digest lines then go to standard error);
    /// `s3://bucket/key` uploads it (multipart, completed only when the whole output was sent
    /// and checked).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// Output format.
    #[arg(short = 'O', value_enum, value_name = "FORMAT")]
    pub format: FormatArg,
    /// Compress qcow2 clusters (stored uncompressed when that is not smaller).
    #[arg(short = 'c', value_enum, value_name = "TYPE")]
    pub compression: Option<CompressionArg>,
    /// Output options, as `qemu-img`'s `-o`: `subformat=dynamic|fixed` (VHD),
    /// `subformat=streamOptimized|monolithicSparse` (VMDK), `force_size=on|off` (VHD: keep
    /// the exact size instead of rounding it up to a CHS geometry).
    #[arg(short = 'o', value_name = "OPTIONS", value_parser = parse_create_options)]
    pub create_options: Option<CreateOptions>,
    /// Write the fixed VHD Azure requires: the virtual size rounded up to a whole MiB, the
    /// footer's geometry and creator as `qemu-img -o subformat=fixed,force_size=on` writes
    /// them. Only with `-O vpc`.
    #[arg(long)]
    pub azure: bool,
    /// qcow2 cluster size in bytes, a power of two from 512 to 2M (suffixes k and M allowed).
    #[arg(long, value_name = "N", value_parser = parse_size, default_value_t = DEFAULT_CLUSTER_SIZE)]
    pub cluster_size: u64,
    /// Worker threads (default: one per core). The output is the same for any value.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Flush OUT to the disk before renaming it into place, so that it survives a power loss
    /// (like `qemu-img convert -t writeback`). Without it, as with qemu-img's default, OUT is
    /// still never seen incomplete by another process.
    #[arg(long)]
    pub sync: bool,
    /// Read OUT back through the reader of its format and compare its guest-content hash
    /// (blkhash-sha256) with the input's, instead of running `qemu-img compare`: a difference
    /// is exit 1 and OUT is not put in place. The guest hash is printed with the digests.
    #[arg(long)]
    pub verify: bool,
    /// Show a progress bar on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Print a JSON report instead of the digest lines.
    #[arg(long)]
    pub json: bool,
    /// A digest OUT must have, as ALGO:HEX (md5:HEX, sha512:HEX; repeatable): checked against the
    /// digest computed while writing, before OUT is put in place. A difference is exit 1 and
    /// nothing is put in place.
    #[arg(long, value_name = "ALGO:HEX", value_parser = parse_expect)]
    pub expect: Vec<Digest>,
    /// Digests of OUT to compute while writing, comma-separated (md5, sha1, sha224, sha256,
    /// sha384, sha512), or `none` [default: md5,sha512].
    #[arg(long, value_name = "LIST", value_parser = parse_algorithms)]
    pub algo: Option<AlgorithmList>,
    /// Also write the request body that registers OUT with `--target`, as `vmimage metadata`
    /// builds it, from the sizes and digests computed while writing (no second read).
    #[arg(long, value_name = "FILE", requires = "target")]
    pub metadata: Option<PathBuf>,
    /// The image service the metadata is for: glance, scp or ims.
    #[arg(long, value_name = "TARGET", value_parser = parse_target, requires = "metadata")]
    pub target: Option<Target>,
    /// With `--metadata`, also write the digests and sizes no create body may carry.
    #[arg(long, value_name = "FILE", requires = "metadata")]
    pub sidecar: Option<PathBuf>,
    /// The image's properties, for `--metadata` (as in `vmimage metadata`).
    #[command(flatten)]
    pub properties: MetadataFlags,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// A parsed `--algo` value: possibly empty (`none`).
#[derive(Debug, Clone)]
pub struct AlgorithmList(Vec<Algorithm>);

fn parse_algorithms(s: &str) -> Result<AlgorithmList, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(AlgorithmList(Vec::new()));
    }
    vmimage::digest::algorithm::parse_list(s).map(AlgorithmList)
}

/// Parses `--expect`'s `ALGO:HEX` (`sha512:…`, as `verify --guest-hash` spells digests).
fn parse_expect(s: &str) -> Result<Digest, String> {
    let (name, hex_text) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not ALGO:HEX (for example md5:… or sha512:…)"))?;
    let algorithm = Algorithm::from_name(name).ok_or_else(|| {
        format!(
            "unknown digest algorithm '{name}' (known: {})",
            Algorithm::ALL.map(Algorithm::name).join(", ")
        )
    })?;
    let bytes = hex::decode(hex_text.trim())
        .ok()
        .filter(|b| b.len() == algorithm.output_len())
        .ok_or_else(|| {
            format!(
                "'{hex_text}' is not a {algorithm} digest ({} hex digits)",
                algorithm.output_len() * 2
            )
        })?;
    Ok(Digest { algorithm, bytes })
}

/// Parses `65536`, `64k`, `64K`, `2M`.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1024),
        Some((i, 'm' | 'M')) => (&s[..i], 1024 * 1024),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (examples: 65536, 64k, 2M)"))
}

/// A progress bar on stderr.
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn phase(&self, name: &'static str, total: u64) {
        let mut guard = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = guard.take() {
            old.finish_and_clear();
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(name);
        *guard = Some(bar);
    }

    fn advance_to(&self, done: u64) {
        let guard = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = guard.as_ref() {
            bar.set_position(done);
        }
    }
}

impl Bar {
    fn finish(&self) {
        let mut guard = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = guard.take() {
            bar.finish_and_clear();
        }
    }
}

/// Runs `vmimage convert`; returns the exit status.
pub fn run(args: &ConvertArgs) -> u8 {
    vmimage::remote::set_options(args.remote.options());
    let signer = match load_convert_signing(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut options = ConvertOptions {
        format: match args.format {
            FormatArg::Qcow2 => OutputFormat::Qcow2,
            FormatArg::Raw => OutputFormat::Raw,
            FormatArg::Vpc => OutputFormat::Vpc,
            FormatArg::Vmdk => OutputFormat::Vmdk,
            FormatArg::Vhdx => OutputFormat::Vhdx,
        },
        compression: args.compression.map(|c| match c {
            CompressionArg::Zlib => Compression::Zlib,
            CompressionArg::Zstd => Compression::Zstd,
        }),
        cluster_size: args.cluster_size,
        threads: args.threads,
        algorithms: args
            .algo
            .as_ref()
            .map_or_else(|| Algorithm::DEFAULT.to_vec(), |l| l.0.clone()),
        sync: args.sync,
        subformat: args.create_options.as_ref().and_then(|o| o.subformat),
        force_size: args.create_options.as_ref().is_some_and(|o| o.force_size),
        azure: args.azure,
        verify: args.verify.then_some(Algorithm::Sha256),
        expect: args.expect.clone(),
    };
    if let Some(s) = &signer {
        s.add_algorithm_to(&mut options.algorithms);
    }
    for d in &args.expect {
        if !options.algorithms.contains(&d.algorithm) {
            options.algorithms.push(d.algorithm);
        }
    }
    let destination = match Destination::parse(&args.output) {
        Ok(d) => d,
        Err(e) => {
            print_error(&e);
            return EXIT_ERROR;
        }
    };
    if let Err(e) = vmimage::convert::validate_options(&options)
        .and_then(|()| vmimage::convert::validate_destination(&options, &destination))
    {
        print_error(&e);
        return EXIT_ERROR;
    }
    if destination == Destination::Stdout {
        if std::io::stdout().is_terminal() {
            print_error(
                "standard output: refusing to write a disk image to a terminal; redirect it to a pipe or a file",
            );
            return EXIT_ERROR;
        }
        // A reader that goes away is a write error (EPIPE), so that the conversion stops
        // and removes its temporary files, instead of a silent death by SIGPIPE.
        // SAFETY: changing a signal's disposition has no memory-safety preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    let metadata = match (&args.metadata, args.target) {
        (Some(body), Some(target)) => Some(MetadataRequest {
            target,
            options: args.properties.to_options(),
            body: body.clone(),
            sidecar: args.sidecar.clone(),
            signature: signer.map(Signer::into_inner),
        }),
        _ => None,
    };
    if let Err(e) = install_interrupt_handler(destination.label()) {
        print_error(format!("cannot install the interrupt handler: {e}"));
        return EXIT_ERROR;
    }
    let show = args.progress || std::io::stderr().is_terminal();
    let bar = Bar {
        bar: Mutex::new(None),
    };
    let progress: &dyn Progress = if show {
        &bar
    } else {
        &vmimage::convert::NoProgress
    };
    let result = convert_to(
        &args.input,
        &destination,
        &options,
        progress,
        metadata.as_ref(),
    );
    bar.finish();
    match result {
        Ok(report) => {
            if let Some(properties) = &report.signature {
                warn_if_long(properties);
            }
            // Standard output carries the image: the report goes to standard error.
            let rendered = if destination == Destination::Stdout {
                render(&report, args.json, &mut std::io::stderr().lock())
            } else {
                render(&report, args.json, &mut std::io::stdout().lock())
            };
            match rendered {
                Ok(()) => EXIT_OK,
                Err(_) => EXIT_ERROR,
            }
        }
        Err(e) => match e.downcast_ref::<MetadataRulesBroken>() {
            Some(broken) => report_violations(
                &args.output.display().to_string(),
                broken.target,
                args.json,
                &broken.violations,
            ),
            None => {
                print_error(&e);
                exit_status(&e)
            }
        },
    }
}

/// `--sign-key` (in the metadata flags) signs the metadata's image: it needs `--metadata`.
/// Loaded before converting, so a bad key or passphrase costs nothing.
fn load_convert_signing(args: &ConvertArgs) -> Result<Option<Signer>, u8> {
    if args.properties.signing.sign_key.is_some() && args.metadata.is_none() {
        print_error(
            "convert: --sign-key signs the metadata's image: it needs --metadata FILE --target glance",
        );
        return Err(EXIT_ERROR);
    }
    load_signing(
        &args.properties.signing,
        args.target == Some(Target::Glance),
    )
}

fn render(report: &ConvertReport, json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if json {
        let mut value = serde_json::to_value(report).map_err(std::io::Error::other)?;
        let digests: serde_json::Map<String, serde_json::Value> = report
            .digests
            .digests
            .iter()
            .map(|d| (d.algorithm.name().to_string(), d.hex().into()))
            .collect();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("digests".into(), digests.into());
        }
        return write_json(out, &value);
    }
    for d in &report.digests.digests {
        writeln!(
            out,
            "{} ({}) = {}",
            d.algorithm.tag(),
            report.output.display(),
            d.hex()
        )?;
    }
    if let Some(g) = &report.guest_hash {
        writeln!(
            out,
            "{} ({}) = {}",
            g.algorithm_name().to_ascii_uppercase(),
            report.output.display(),
            g.hex()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999999999M").is_err());
    }
}
