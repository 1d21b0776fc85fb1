//! Merging the results of every shard against the manifest (`vmimage merge`).
//!
//! Every results line is read (a line that is not a complete result is counted and named,
//! never fatal); then the manifest is walked in order and each item gets its merged status:
//! its result's, the worst of its results when it has several, or `missing` when no results
//! file holds it (a lost shard). An id with more results than the manifest has items of that
//! id is a duplicate (shards that overlap: different N, or a shard run twice into two files);
//! an id in the results that the manifest does not hold is `unknown` (the wrong manifest).
//!
//! Memory: the ids and statuses of every result (merge needs them all to find what is
//! missing), not the lines.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::item::ItemStatus;
use super::manifest::Item;
use super::runner::parse_result_line;

/// An item's merged status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MergedStatus {
    /// Its results file says so.
    Found(ItemStatus),
    /// No results file holds it.
    Missing,
}

impl MergedStatus {
    /// rclone check's symbol (`--combined`): `=` ok, `*` mismatch, `!` error, `-` missing;
    /// `?` skipped (nothing could be compared), which rclone does not have.
    pub fn symbol(self) -> char {
        match self {
            MergedStatus::Found(ItemStatus::Ok) => '=',
            MergedStatus::Found(ItemStatus::Mismatch) => '*',
            MergedStatus::Found(ItemStatus::Error) => '!',
            MergedStatus::Found(ItemStatus::Skipped) => '?',
            MergedStatus::Missing => '-',
        }
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            MergedStatus::Found(s) => s.name(),
            MergedStatus::Missing => "missing",
        }
    }
}

/// One manifest item, merged.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedItem<'a> {
    /// The item (from the manifest).
    pub item: &'a Item,
    /// Its status.
    pub status: MergedStatus,
    /// The results files that hold it, by index into the files given.
    pub files: Vec<usize>,
    /// The first error sentence of its worst result (none for `ok`).
    pub reason: Option<String>,
}

/// Totals of a merge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MergeTotals {
    /// Manifest items.
    pub items: u64,
    /// Items by merged status.
    pub ok: u64,
    /// See [`ItemStatus::Mismatch`].
    pub mismatch: u64,
    /// See [`ItemStatus::Error`].
    pub error: u64,
    /// See [`ItemStatus::Skipped`].
    pub skipped: u64,
    /// Items no results file holds.
    pub missing: u64,
    /// Ids with more results than manifest items.
    pub duplicates: Vec<String>,
    /// Ids in the results that the manifest does not hold.
    pub unknown: Vec<String>,
    /// Results lines that are not complete results, as `FILE:LINE`.
    pub unreadable_lines: Vec<String>,
}

impl MergeTotals {
    /// The exit status: 0 everything ok; 1 a mismatch or skipped item; 2 an error, a missing
    /// item, a duplicate, an unknown id or an unreadable line (the audit is not whole).
    pub fn exit_status(&self) -> u8 {
        if self.error > 0
            || self.missing > 0
            || !self.duplicates.is_empty()
            || !self.unknown.is_empty()
            || !self.unreadable_lines.is_empty()
        {
            2
        } else if self.mismatch > 0 || self.skipped > 0 {
            1
        } else {
            0
        }
    }
}

/// What the results files say of one id.
struct Seen {
    worst: ItemStatus,
    reason: Option<String>,
    results: u32,
    in_manifest: u32,
    files: Vec<usize>,
}

/// Why a results file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot read the results: {}", path.display(), crate::error::describe_io(source))]
pub struct MergeError {
    /// The results file.
    pub path: PathBuf,
    /// The failure.
    pub source: io::Error,
}

/// Merges `results` against the manifest's `items`, calling `sink` for each item in
/// manifest order.
pub fn merge<I, F>(items: I, results: &[PathBuf], mut sink: F) -> Result<MergeTotals, MergeError>
where
    I: Iterator<Item = Item>,
    F: FnMut(&MergedItem<'_>),
{
    let mut totals = MergeTotals::default();
    let mut seen: HashMap<String, Seen> = HashMap::new();
    for (file_index, path) in results.iter().enumerate() {
        read_results(path, file_index, &mut seen, &mut totals)?;
    }
    for item in items {
        totals.items += 1;
        let status = match seen.get_mut(&item.id) {
            Some(s) => {
                s.in_manifest += 1;
                MergedStatus::Found(s.worst)
            }
            None => MergedStatus::Missing,
        };
        match status {
            MergedStatus::Found(ItemStatus::Ok) => totals.ok += 1,
            MergedStatus::Found(ItemStatus::Mismatch) => totals.mismatch += 1,
            MergedStatus::Found(ItemStatus::Error) => totals.error += 1,
            MergedStatus::Found(ItemStatus::Skipped) => totals.skipped += 1,
            MergedStatus::Missing => totals.missing += 1,
        }
        let (files, reason) = seen
            .get(&item.id)
            .map(|s| (s.files.clone(), s.reason.clone()))
            .unwrap_or_default();
        sink(&MergedItem {
            item: &item,
            status,
            files,
            reason,
        });
    }
    let mut duplicates = Vec::new();
    let mut unknown = Vec::new();
    for (id, s) in seen {
        if s.in_manifest == 0 {
            unknown.push(id);
        } else if s.results > s.in_manifest {
            duplicates.push(id);
        }
    }
    duplicates.sort();
    unknown.sort();
    totals.duplicates = duplicates;
    totals.unknown = unknown;
    Ok(totals)
}

fn read_results(
    path: &Path,
    file_index: usize,
    seen: &mut HashMap<String, Seen>,
    totals: &mut MergeTotals,
) -> Result<(), MergeError> {
    let fail = |source| MergeError {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(fail)?);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(fail)? == 0 {
            return Ok(());
        }
        number += 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let Some(key) = parse_result_line(&line) else {
            totals
                .unreadable_lines
                .push(format!("{}:{number}", path.display()));
            continue;
        };
        let s = seen.entry(key.id).or_insert(Seen {
            worst: key.status,
            reason: None,
            results: 0,
            in_manifest: 0,
            files: Vec::new(),
        });
        s.results += 1;
        if key.status >= s.worst {
            s.worst = key.status;
            if key.status != ItemStatus::Ok {
                s.reason = key.errors.into_iter().next().or(s.reason.take());
            }
        }
        if !s.files.contains(&file_index) {
            s.files.push(file_index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::manifest::ItemBody;

    fn item(i: u64) -> Item {
        Item {
            index: i,
            line: i + 1,
            id: format!("i{i}"),
            body: ItemBody::Job(Box::default()),
        }
    }

    #[test]
    fn missing_duplicate_unknown_and_torn_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(
            &a,
            "{\"id\":\"i0\",\"status\":\"ok\"}\n{\"id\":\"i1\",\"status\":\"mismatch\"}\n",
        )
        .unwrap();
        std::fs::write(
            &b,
            "{\"id\":\"i0\",\"status\":\"ok\"}\n{\"id\":\"zz\",\"status\":\"ok\"}\n{\"id\":\"i2\",\"st",
        )
        .unwrap();
        let mut view = Vec::new();
        let totals = merge((0..4).map(item), &[a, b], |m| {
            view.push(format!("{} {}", m.status.symbol(), m.item.id))
        })
        .unwrap();
        assert_eq!(view, ["= i0", "* i1", "- i2", "- i3"]);
        assert_eq!(totals.missing, 2);
        assert_eq!(totals.duplicates, ["i0"]);
        assert_eq!(totals.unknown, ["zz"]);
        assert_eq!(totals.unreadable_lines.len(), 1);
        assert_eq!(totals.exit_status(), 2);
    }
}
