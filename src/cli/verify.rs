//! `vmimage verify FILE --against RECORD|- [--id ID] [--name NAME] [expectation flags]
//! [--json] [--junit FILE]`: does the file match what a cloud recorded?
//!
//! Exit statuses (SPEC `vmimage verify`): 0 verified (nothing failed, a digest matched);
//! 1 failed or unverified (no digest could be compared); 2 the file or record could not be
//! read, or the flags are unusable.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use serde_json::Value;
use vmimage::cloud::{ImageRecord, RecordSelector, RecordSource, parse_record, read_document};
use vmimage::signing::{CaBundle, SigningCertificate};
use vmimage::verify::{SignatureInputs, Status, Verdict, VerifyReport, verify_path_with};

use super::render::{human_size, print_json};
use super::{EXIT_ERROR, EXIT_FAILED, EXIT_OK, exit_status, print_error};

/// Arguments of `vmimage verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image file to verify.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// What the cloud recorded: a JSON file, or `-` for standard input. A Glance v2 image, an
    /// SCP image, an IMS listing {"images": [...]}, `openstack image show -f json` output, or
    /// a sidecar from `vmimage metadata --sidecar`.
    #[arg(long, value_name = "RECORD")]
    pub against: Option<PathBuf>,
    /// Choose the image with this ID from a listing.
    #[arg(long, value_name = "ID", requires = "against")]
    pub id: Option<String>,
    /// Choose the image with this name from a listing.
    #[arg(long, value_name = "NAME", requires = "against")]
    pub name: Option<String>,
    /// Expected MD5 of the file (overrides the record's `checksum`).
    #[arg(long, value_name = "MD5")]
    pub checksum: Option<String>,
    /// Algorithm of --os-hash-value (overrides the record's `os_hash_algo`).
    #[arg(long, value_name = "ALGO")]
    pub os_hash_algo: Option<String>,
    /// Expected digest of the file (overrides the record's `os_hash_value`).
    #[arg(long, value_name = "HEX")]
    pub os_hash_value: Option<String>,
    /// Expected file length in bytes.
    #[arg(long, value_name = "BYTES")]
    pub size: Option<u64>,
    /// Expected guest-visible size in bytes.
    #[arg(long, value_name = "BYTES")]
    pub virtual_size: Option<u64>,
    /// Expected disk format (qcow2, raw, vhd, ...).
    #[arg(long, value_name = "FORMAT")]
    pub disk_format: Option<String>,
    /// Expected guest-content hash, as `hash --guest` prints it: ALGO:HEX (sha256:HEX or
    /// blkhash-sha256:HEX). Overrides the record's `guest_hash`; a match proves the guest disk
    /// even when the cloud converted the image.
    #[arg(long, value_name = "ALGO:HEX", value_parser = vmimage::digest::guest::GuestHash::parse)]
    pub guest_hash: Option<vmimage::digest::guest::GuestHash>,
    /// Print a JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write a JUnit XML report (one testcase per check) to this file, atomically.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Check the record's img_signature* with this certificate (PEM or DER: what Barbican
    /// holds under img_signature_certificate_uuid).
    #[arg(long, value_name = "CERT.pem")]
    pub signing_cert: Option<PathBuf>,
    /// Also check the signing certificate's chain to these trusted certificates (PEM bundle).
    #[arg(long, value_name = "BUNDLE.pem", requires = "signing_cert")]
    pub trusted_ca: Option<PathBuf>,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// Reads `--signing-cert` and `--trusted-ca`, or says why not.
fn signature_inputs(args: &VerifyArgs) -> Result<Option<SignatureInputs>, String> {
    let Some(cert_path) = &args.signing_cert else {
        return Ok(None);
    };
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| {
            format!(
                "{}: cannot read it: {}",
                path.display(),
                vmimage::error::describe_io(&e)
            )
        })
    };
    let certificate = SigningCertificate::from_pem_or_der(&read(cert_path)?)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let trusted = match &args.trusted_ca {
        None => None,
        Some(path) => {
            Some(CaBundle::from_pem(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?)
        }
    };
    Ok(Some(SignatureInputs {
        certificate,
        trusted,
    }))
}

impl VerifyArgs {
    fn expectations(&self) -> vmimage::verify::Expectations {
        vmimage::verify::Expectations {
            checksum: self.checksum.clone(),
            os_hash_algo: self.os_hash_algo.clone(),
            os_hash_value: self.os_hash_value.clone(),
            size: self.size,
            virtual_size: self.virtual_size,
            disk_format: self.disk_format.clone(),
            guest_hash: self.guest_hash.clone(),
        }
    }
}

/// Runs `vmimage verify`; returns the exit status.
pub fn run(args: &VerifyArgs) -> u8 {
    vmimage::remote::set_options(args.remote.options());
    let expectations = args.expectations();
    let mut record = match &args.against {
        Some(path) => match read_record(path, args) {
            Ok(r) => r,
            Err(message) => {
                print_error(message);
                return EXIT_ERROR;
            }
        },
        None if expectations.is_empty() => {
            print_error(
                "verify: nothing to verify against: give --against RECORD, or expectations such as --checksum and --os-hash-value",
            );
            return EXIT_ERROR;
        }
        None => ImageRecord::empty(RecordSource::Flags),
    };
    if let Err(e) = expectations.apply(&mut record) {
        print_error(format!("verify: {e}"));
        return EXIT_ERROR;
    }
    let signing = match signature_inputs(args) {
        Ok(s) => s,
        Err(message) => {
            print_error(message);
            return EXIT_ERROR;
        }
    };
    let report = match verify_path_with(&args.file, &record, signing.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            print_error(&e);
            return exit_status(&e);
        }
    };
    if let Some(junit) = &args.junit
        && let Err(e) = super::output::write_document(junit, junit_xml(&report).as_bytes())
    {
        print_error(format!(
            "{}: cannot write the JUnit report: {}",
            junit.display(),
            vmimage::error::describe_io(&e)
        ));
        return EXIT_ERROR;
    }
    let printed = if args.json {
        print_json(&report)
    } else {
        render_table(&mut io::stdout().lock(), &report)
    };
    if printed.is_err() {
        return EXIT_ERROR;
    }
    match report.verdict {
        Verdict::Verified => EXIT_OK,
        Verdict::Failed => {
            let failed: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.id)
                .collect();
            print_error(format!(
                "{}: verification failed: {}",
                args.file.display(),
                failed.join(", ")
            ));
            EXIT_FAILED
        }
        Verdict::Unverified => {
            print_error(format!(
                "{}: unverified: no digest could be compared with the record",
                args.file.display()
            ));
            EXIT_FAILED
        }
    }
}

/// Reads and parses the record; the error is the whole sentence to print.
fn read_record(path: &PathBuf, args: &VerifyArgs) -> Result<ImageRecord, String> {
    let stdin = path.as_os_str() == "-";
    let label = if stdin {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let bytes = if stdin {
        read_document(io::stdin().lock())
    } else {
        let file = File::open(path)
            .map_err(|e| format!("{label}: cannot read: {}", vmimage::error::describe_io(&e)))?;
        read_document(file)
    }
    .map_err(|e| format!("{label}: {e}"))?;
    let selector = RecordSelector {
        id: args.id.clone(),
        name: args.name.clone(),
    };
    parse_record(&bytes, &selector).map_err(|e| format!("{label}: {e}"))
}

/// The widest expected/actual value shown in the table; the JSON report has them whole.
const TABLE_VALUE_WIDTH: usize = 18;

fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > TABLE_VALUE_WIDTH {
        let mut s: String = text.chars().take(TABLE_VALUE_WIDTH - 1).collect();
        s.push('…');
        s
    } else {
        text
    }
}

/// The human report: what was compared, one check a row, and the verdict.
fn render_table(out: &mut dyn Write, report: &VerifyReport) -> io::Result<()> {
    let img = &report.image;
    let vsize = img.virtual_size.map_or("unknown".to_string(), |v| {
        format!("{} = {v} bytes", human_size(v))
    });
    writeln!(
        out,
        "image:  {}: {}, {} bytes, virtual size {vsize}",
        img.path, img.format, img.size
    )?;
    let rec = &report.record;
    let mut who = rec.source.name().to_string();
    if let Some(id) = &rec.id {
        let _ = write!(who, " {id}");
    }
    if let Some(name) = &rec.name {
        let _ = write!(who, " {name:?}");
    }
    writeln!(out, "record: {who}")?;
    writeln!(out)?;
    let w = TABLE_VALUE_WIDTH;
    writeln!(
        out,
        "{:<16} {:<14} {:<w$} {:<w$} MESSAGE",
        "CHECK", "STATUS", "EXPECTED", "ACTUAL"
    )?;
    for c in &report.checks {
        writeln!(
            out,
            "{:<16} {:<14} {:<w$} {:<w$} {}",
            c.id,
            c.status.name(),
            cell(&c.expected),
            cell(&c.actual),
            c.message
        )?;
    }
    writeln!(out)?;
    match report.proved {
        Some(proved) => writeln!(out, "verdict: {} ({proved})", report.verdict.name()),
        None => writeln!(out, "verdict: {}", report.verdict.name()),
    }
}

/// The JUnit XML report: one testsuite for the image, one testcase per check (`failure` for
/// `fail`, `skipped` for `skip` and `not_comparable`, the message in `system-out` for `warn`),
/// and a last `verdict` testcase that fails unless the verdict is `verified`, so that a
/// dashboard agrees with the exit status even when nothing but the verdict failed.
pub fn junit_xml(report: &VerifyReport) -> String {
    let tests = report.checks.len() + 1;
    let mut failures = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    if report.verdict != Verdict::Verified {
        failures += 1;
    }
    let skipped = report
        .checks
        .iter()
        .filter(|c| matches!(c.status, Status::Skip | Status::NotComparable))
        .count();
    let suite = xml_escape(&format!("vmimage verify {}", report.image.path));
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"vmimage verify\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">"
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">"
    );
    x.push_str("    <properties>\n");
    let mut props = vec![
        ("image.format", report.image.format.clone()),
        ("record.source", report.record.source.name().to_string()),
        ("verdict", report.verdict.name().to_string()),
    ];
    if let Some(id) = &report.record.id {
        props.push(("record.id", id.clone()));
    }
    for (name, value) in props {
        let _ = writeln!(
            x,
            "      <property name=\"{name}\" value=\"{}\"/>",
            xml_escape(&value)
        );
    }
    x.push_str("    </properties>\n");
    for c in &report.checks {
        let detail = format!(
            "status: {}\nexpected: {}\nactual: {}\n{}",
            c.status.name(),
            plain(&c.expected),
            plain(&c.actual),
            c.message
        );
        let _ = write!(
            x,
            "    <testcase classname=\"vmimage.verify\" name=\"{}\"",
            c.id
        );
        match c.status {
            Status::Pass => x.push_str("/>\n"),
            Status::Fail => {
                let _ = write!(
                    x,
                    ">\n      <failure type=\"fail\" message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml_escape(&c.message),
                    xml_escape(&detail)
                );
            }
            Status::Skip | Status::NotComparable => {
                let _ = write!(
                    x,
                    ">\n      <skipped message=\"{}: {}\"/>\n    </testcase>\n",
                    c.status.name(),
                    xml_escape(&c.message)
                );
            }
            Status::Warn => {
                let _ = write!(
                    x,
                    ">\n      <system-out>{}</system-out>\n    </testcase>\n",
                    xml_escape(&detail)
                );
            }
        }
    }
    x.push_str("    <testcase classname=\"vmimage.verify\" name=\"verdict\"");
    match report.verdict {
        Verdict::Verified => x.push_str("/>\n"),
        other => {
            let why = if other == Verdict::Unverified {
                "unverified: no digest could be compared with the record"
            } else {
                "failed: at least one check failed"
            };
            let _ = write!(
                x,
                ">\n      <failure type=\"{}\" message=\"{why}\"/>\n    </testcase>\n",
                other.name()
            );
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

fn plain(v: &Value) -> String {
    match v {
        Value::Null => "(none)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Escapes text for XML 1.0 content and attribute values. Characters XML 1.0 cannot carry at
/// all (control characters other than tab, newline, carriage return; U+FFFE, U+FFFF) become
/// U+FFFD: record fields are untrusted and must not make the report unparsable.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escaping_covers_markup_and_forbidden_characters() {
        assert_eq!(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(xml_escape("\u{0}\u{1b}x"), "\u{fffd}\u{fffd}x");
        assert_eq!(xml_escape("l1\nl2"), "l1&#10;l2");
    }

    #[test]
    fn long_values_are_cut_in_the_table() {
        let c = cell(&Value::String("a".repeat(128)));
        assert_eq!(c.chars().count(), TABLE_VALUE_WIDTH);
        assert!(c.ends_with('…'));
        assert_eq!(cell(&Value::Null), "-");
    }
}
