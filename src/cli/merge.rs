//! `vmimage merge --manifest M RESULTS... [--junit FILE] [--json]`: every shard's results
//! against the manifest, one summary and one exit status.
//!
//! Output: rclone check's combined view (`= id` ok, `* id` mismatch, `! id` error, `? id`
//! skipped, `- id` missing), then the totals and the duplicate, unknown and unreadable
//! entries on stderr; `--json` prints one object instead. Exit statuses: 0 every item ok; 1 a
//! mismatch or skipped item; 2 an error, a missing or duplicate item, an id not in the
//! manifest, an unreadable results line, or the merge could not be done.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use vmimage::batch::ManifestReader;
use vmimage::batch::manifest::SourceMap;
use vmimage::batch::merge::{MergeTotals, MergedStatus, merge};

use super::render::print_json;
use super::verify::xml_escape;
use super::{EXIT_ERROR, print_error};

/// Arguments of `vmimage merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The manifest the shards ran (as given to `vmimage batch`).
    #[arg(long, value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// The results files of every shard.
    #[arg(value_name = "RESULTS", required = true)]
    pub results: Vec<PathBuf>,
    /// Also write a JUnit XML report (one testcase per item) to this file, atomically.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Print one JSON object (totals and every item's status) instead of the combined view.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct JsonItem {
    id: String,
    status: &'static str,
    files: Vec<String>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    totals: &'a MergeTotals,
    items: Vec<JsonItem>,
}

/// Runs `vmimage merge`; returns the exit status.
pub fn run(args: &MergeArgs) -> u8 {
    let items = match ManifestReader::open(&args.manifest, SourceMap::default()) {
        Ok(m) => m,
        Err(e) => {
            print_error(e);
            return EXIT_ERROR;
        }
    };
    let mut stdout = io::stdout().lock();
    let mut write_failed = false;
    let mut json_items = Vec::new();
    let mut cases = String::new();
    let merged = merge(items, &args.results, |m| {
        if args.json {
            json_items.push(JsonItem {
                id: m.item.id.clone(),
                status: m.status.name(),
                files: m
                    .files
                    .iter()
                    .map(|&i| args.results[i].display().to_string())
                    .collect(),
            });
        } else if !write_failed {
            write_failed |= writeln!(stdout, "{} {}", m.status.symbol(), m.item.id).is_err();
        }
        if args.junit.is_some() {
            junit_case(&mut cases, &m.item.id, m.status, m.reason.as_deref());
        }
    });
    let totals = match merged {
        Ok(t) => t,
        Err(e) => {
            print_error(e);
            return EXIT_ERROR;
        }
    };
    if args.json {
        drop(stdout);
        if print_json(&JsonReport {
            totals: &totals,
            items: json_items,
        })
        .is_err()
        {
            return EXIT_ERROR;
        }
    } else if write_failed || stdout.flush().is_err() {
        return EXIT_ERROR;
    }
    report_totals(&totals);
    if let Some(junit) = &args.junit
        && let Err(e) = super::output::write_document(junit, junit_xml(&totals, &cases).as_bytes())
    {
        print_error(format!(
            "{}: cannot write the JUnit report: {}",
            junit.display(),
            vmimage::error::describe_io(&e)
        ));
        return EXIT_ERROR;
    }
    totals.exit_status()
}

fn report_totals(t: &MergeTotals) {
    eprintln!(
        "vmimage: {} items: {} ok, {} mismatch, {} error, {} skipped, {} missing",
        t.items, t.ok, t.mismatch, t.error, t.skipped, t.missing
    );
    let list = |v: &[String]| {
        let shown: Vec<&str> = v.iter().take(20).map(String::as_str).collect();
        let more = v.len().saturating_sub(20);
        if more > 0 {
            format!("{}, and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    };
    if !t.duplicates.is_empty() {
        print_error(format!(
            "{} items have more results than the manifest lists them (shards overlap): {}",
            t.duplicates.len(),
            list(&t.duplicates)
        ));
    }
    if !t.unknown.is_empty() {
        print_error(format!(
            "{} results are for ids the manifest does not hold: {}",
            t.unknown.len(),
            list(&t.unknown)
        ));
    }
    if !t.unreadable_lines.is_empty() {
        print_error(format!(
            "{} results lines are not complete results: {}",
            t.unreadable_lines.len(),
            list(&t.unreadable_lines)
        ));
    }
}

/// One testcase: `failure` for a mismatch or skipped item, `error` for an error or a missing
/// item.
fn junit_case(x: &mut String, id: &str, status: MergedStatus, reason: Option<&str>) {
    let _ = write!(
        x,
        "    <testcase classname=\"vmimage.batch\" name=\"{}\"",
        xml_escape(id)
    );
    let (tag, message) = match status {
        MergedStatus::Found(vmimage::batch::ItemStatus::Ok) => {
            x.push_str("/>\n");
            return;
        }
        MergedStatus::Found(vmimage::batch::ItemStatus::Mismatch) => (
            "failure",
            "mismatch: the image does not match what was expected",
        ),
        MergedStatus::Found(vmimage::batch::ItemStatus::Skipped) => {
            ("failure", "skipped: nothing could be compared")
        }
        MergedStatus::Found(vmimage::batch::ItemStatus::Error) => (
            "error",
            "error: the item could not be done (see its results line)",
        ),
        MergedStatus::Missing => ("error", "missing: no results file holds this item"),
    };
    let message = match reason {
        Some(r) => format!("{}: {r}", status.name()),
        None => message.to_string(),
    };
    let _ = write!(
        x,
        ">\n      <{tag} type=\"{}\" message=\"{}\"/>\n    </testcase>\n",
        status.name(),
        xml_escape(&message)
    );
}

fn junit_xml(t: &MergeTotals, cases: &str) -> String {
    let failures = t.mismatch + t.skipped;
    let errors = t.error + t.missing;
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"vmimage merge\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\">",
        t.items
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"vmimage batch\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\">",
        t.items
    );
    x.push_str(cases);
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}
