//! `vmimage info FILE... [--json]`: what each image is, and whether it is safe.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use vmimage::safety::Severity;
use vmimage::{ImageInfo, inspect_path};

use super::render::{human_size, print_json, write_tree};
use super::{EXIT_ERROR, EXIT_FAILED, EXIT_OK, print_error};

/// Arguments of `vmimage info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Images to describe. The format is detected from content, never from the name.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print a JSON report (an object for one file, an array for several) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// One file's outcome in a JSON array: the report, or the reason it could not be read.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum JsonEntry {
    Info(Box<ImageInfo>),
    Error { filename: String, error: String },
}

/// Runs `vmimage info`; returns the exit status.
pub fn run(args: &InfoArgs) -> u8 {
    vmimage::remote::set_options(args.remote.options());
    let mut status = EXIT_OK;
    let mut entries = Vec::new();
    for path in &args.files {
        match inspect_path(path) {
            Ok(info) => {
                if !info.safety.safe {
                    status = status.max(EXIT_FAILED);
                    for f in info.safety.errors() {
                        print_error(format!(
                            "{}: unsafe image ({}): {}",
                            path.display(),
                            f.check,
                            f.detail
                        ));
                    }
                }
                if !args.json && render_text(&info).is_err() {
                    return EXIT_ERROR;
                }
                entries.push(JsonEntry::Info(Box::new(info)));
            }
            Err(e) => {
                status = EXIT_ERROR;
                print_error(&e);
                entries.push(JsonEntry::Error {
                    filename: path.display().to_string(),
                    error: e.to_string(),
                });
            }
        }
    }
    if args.json {
        let printed = if entries.len() == 1 && args.files.len() == 1 {
            match &entries[0] {
                JsonEntry::Info(info) => print_json(info),
                JsonEntry::Error { .. } => Ok(()),
            }
        } else {
            print_json(&entries)
        };
        if printed.is_err() {
            return EXIT_ERROR;
        }
    }
    status
}

fn render_text(info: &ImageInfo) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "image: {}", info.filename)?;
    writeln!(out, "file format: {}", info.format)?;
    match info.virtual_size {
        Some(v) => writeln!(out, "virtual size: {} ({v} bytes)", human_size(v))?,
        None => writeln!(out, "virtual size: unknown (the header is invalid)")?,
    }
    if let Some(a) = info.actual_size {
        writeln!(out, "disk size: {}", human_size(a))?;
    }
    writeln!(out, "file length: {} bytes", info.file_length)?;
    if let Some(c) = info.cluster_size {
        writeln!(out, "cluster_size: {c}")?;
    }
    if let Some(b) = &info.backing_filename {
        match &info.backing_filename_format {
            Some(f) => writeln!(out, "backing file: {b} (format {f})")?,
            None => writeln!(out, "backing file: {b}")?,
        }
    }
    if info.encrypted {
        writeln!(out, "encrypted: yes")?;
    }
    if info.dirty_flag {
        writeln!(out, "dirty flag: yes")?;
    }
    if let Some(t) = info.partition_table {
        writeln!(
            out,
            "partition table: {}",
            serde_json::to_value(t)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("")
        )?;
    }
    if !info.snapshots.is_empty() {
        writeln!(out, "Snapshot list:")?;
        writeln!(
            out,
            "{:<4} {:<20} {:>10} {:>12} {:>14}",
            "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK"
        )?;
        for s in &info.snapshots {
            writeln!(
                out,
                "{:<4} {:<20} {:>10} {:>12} {:>10}.{:03}",
                s.id,
                s.name,
                human_size(s.vm_state_size),
                s.date_sec,
                s.vm_clock_sec,
                s.vm_clock_nsec / 1_000_000
            )?;
        }
    }
    if let Some(spec) = &info.format_specific
        && let Ok(serde_json::Value::Object(map)) = serde_json::to_value(spec)
        && let Some(data) = map.get("data")
    {
        writeln!(out, "Format specific information:")?;
        write_tree(&mut out, data, 4)?;
    }
    if !info.detected_formats.is_empty() {
        writeln!(
            out,
            "detected formats: {}",
            info.detected_formats.join(", ")
        )?;
    }
    writeln!(
        out,
        "safety: {}",
        if info.safety.safe { "safe" } else { "UNSAFE" }
    )?;
    for f in &info.safety.findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(out, "    {sev}: {}: {}", f.check, f.detail)?;
    }
    Ok(())
}
