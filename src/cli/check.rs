//! `vmimage check FILE [--json]`: `qemu-img check`, reproduced read-only for qcow2.
//!
//! Exit statuses are `qemu-img check`'s (`img_check`), not the other commands': 0 consistent,
//! 2 corruptions, 3 leaks only, 1 the check could not run or counted internal errors, 63 the
//! format has no check. The human output is `qemu-img check`'s (its finding lines, which
//! qemu-img writes to stderr, come first on stdout here); `--json` prints
//! `qemu-img check --output=json`'s object, key for key, plus `findings`.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use serde_json::{Map, Value};
use vmimage::format::foreign::ForeignFormat;
use vmimage::format::qcow2::check::{self, CheckError, CheckReport, FormatCheck};
use vmimage::format::{ImageFormat, Probe, detect_all};
use vmimage::safety::Check;
use vmimage::source::ImageFile;

use super::print_error;

/// The check ran but could not complete, or the image cannot be opened.
const EXIT_CHECK_FAILED: u8 = 1;
/// `qemu-img check`: "This image format does not support checks".
const EXIT_NO_CHECK: u8 = 63;

/// Arguments of `vmimage check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The image to check (qcow2; the format is detected from content). It is never written.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print `qemu-img check --output=json`'s object, plus a `findings` list.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// Runs `vmimage check`; returns `qemu-img check`'s exit status.
pub fn run(args: &CheckArgs) -> u8 {
    vmimage::remote::set_options(args.remote.options());
    let name = args.file.display().to_string();
    let src = match ImageFile::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            print_error(vmimage::Error::io(&args.file, e));
            return EXIT_CHECK_FAILED;
        }
    };
    let probe = match Probe::read(&src) {
        Ok(p) => p,
        Err(e) => {
            print_error(vmimage::Error::io(&args.file, e));
            return EXIT_CHECK_FAILED;
        }
    };
    let detected: Vec<_> = detect_all(&probe).into_iter().map(|d| d.format).collect();
    match check::classify(&detected, &probe.head) {
        FormatCheck::Qcow2 => {}
        FormatCheck::Unsupported(format) => {
            // qemu-img opens the image before it asks the driver for a check, so a VHD or qcow
            // image that QEMU's driver refuses to open exits 1 ("Could not open"), not 63. The
            // inspector's invalid-header and truncated findings are the refusals of
            // `vpc_open` and `qcow_open`. (A raw disk always opens; LUKS keeps its documented
            // 63.)
            if matches!(format, ImageFormat::Vpc | ImageFormat::Qcow)
                && let Some(refusal) = qemu_open_refusal(&src, &name)
            {
                print_error(format!("{name}: qemu-img cannot open it: {refusal}"));
                return EXIT_CHECK_FAILED;
            }
            // A format QEMU reads but vmimage does not is raw to the detectors; qemu-img
            // names (and, for Parallels, checks) it.
            let foreign = (format == ImageFormat::Raw)
                .then(|| vmimage::format::foreign::detect(&probe))
                .flatten();
            if foreign == Some(ForeignFormat::Parallels) {
                print_error(format!(
                    "{name}: vmimage checks qcow2 images only; qemu-img has its own parallels check, which vmimage does not reproduce"
                ));
                return EXIT_CHECK_FAILED;
            }
            print_error(format!(
                "{name}: This image format does not support checks (qemu-img opens it as {})",
                foreign.map_or(format.qemu_name(), ForeignFormat::qemu_name)
            ));
            return EXIT_NO_CHECK;
        }
        FormatCheck::NotReproduced(format) => {
            print_error(format!(
                "{name}: vmimage checks qcow2 images only; qemu-img has its own {} check, which vmimage does not reproduce",
                format.qemu_name()
            ));
            return EXIT_CHECK_FAILED;
        }
    }
    let report = match check::check(&src) {
        Ok(r) => r,
        Err(e) => {
            print_error(match e {
                CheckError::Io(e) => format!(
                    "{name}: cannot read {name}: {}",
                    vmimage::error::describe_io(&e)
                ),
                other => format!("{name}: {other}"),
            });
            return EXIT_CHECK_FAILED;
        }
    };
    let printed = if args.json {
        super::render::print_json(&json_report(&report, &name))
    } else {
        print_human(&report)
    };
    if printed.is_err() {
        return EXIT_CHECK_FAILED;
    }
    if report.counts.check_errors > 0 {
        print_error(format!(
            "{name}: the check failed: {} internal errors occurred",
            report.counts.check_errors
        ));
    }
    report.exit_status()
}

/// Why QEMU's driver would refuse to open the image, from the inspector's findings.
fn qemu_open_refusal(src: &ImageFile, name: &str) -> Option<String> {
    let info = vmimage::inspect(src, name).ok()?;
    info.safety
        .findings
        .iter()
        .find(|f| matches!(f.check, Check::InvalidHeader | Check::Truncated))
        .map(|f| f.detail.clone())
}

/// `qemu-img check --output=json`'s object, in its key order, plus the findings.
fn json_report(report: &CheckReport, filename: &str) -> Value {
    let counts = match serde_json::to_value(report.counts) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut out = Map::new();
    for key in [
        "image-end-offset",
        "compressed-clusters",
        "total-clusters",
        "corruptions",
        "check-errors",
        "leaks",
        "allocated-clusters",
    ] {
        if let Some(v) = counts.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    out.insert("filename".into(), filename.into());
    out.insert("format".into(), "qcow2".into());
    if let Some(v) = counts.get("fragmented-clusters") {
        out.insert("fragmented-clusters".into(), v.clone());
    }
    out.insert(
        "findings".into(),
        serde_json::to_value(&report.findings).unwrap_or_default(),
    );
    if report.findings_omitted > 0 {
        out.insert("findings-omitted".into(), report.findings_omitted.into());
    }
    Value::Object(out)
}

/// `qemu-img check`'s human output (`dump_human_image_check`), after the finding lines.
fn print_human(report: &CheckReport) -> io::Result<()> {
    let mut out = io::stdout().lock();
    for f in &report.findings {
        writeln!(out, "{}", f.message)?;
    }
    if report.findings_omitted > 0 {
        writeln!(out, "({} more findings not shown)", report.findings_omitted)?;
    }
    let c = &report.counts;
    if c.is_clean() {
        writeln!(out, "No errors were found on the image.")?;
    } else {
        if c.corruptions > 0 {
            writeln!(
                out,
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.",
                c.corruptions
            )?;
        }
        if c.leaks > 0 {
            writeln!(
                out,
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.",
                c.leaks
            )?;
        }
        if c.check_errors > 0 {
            writeln!(
                out,
                "\n{} internal errors have occurred during the check.",
                c.check_errors
            )?;
        }
    }
    if c.total_clusters != 0 && c.allocated_clusters != 0 {
        let allocated = c.allocated_clusters as f64;
        writeln!(
            out,
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
            c.allocated_clusters,
            c.total_clusters,
            allocated * 100.0 / c.total_clusters as f64,
            c.fragmented_clusters as f64 * 100.0 / allocated,
            c.compressed_clusters as f64 * 100.0 / allocated,
        )?;
    }
    if c.image_end_offset != 0 {
        writeln!(out, "Image end offset: {}", c.image_end_offset)?;
    }
    Ok(())
}
