//! What a check found: each inconsistency as a [`Finding`] (the line `qemu-img check` prints,
//! plus the offset and the table it concerns), and the [`CheckReport`] that carries them with
//! the [`CheckCounts`].

use serde::Serialize;

use super::counters::CheckCounts;

/// Findings kept in a report. Counters keep counting past it; a hostile image can hold
/// millions of bad entries, and the report must stay small (our memory budget).
pub const MAX_FINDINGS: usize = 10_000;

/// How a finding counts, as `qemu-img check` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Counted in `corruptions`.
    Corruption,
    /// Counted in `leaks`.
    Leak,
    /// Counted in `check-errors`: something could not be examined.
    CheckError,
}

/// The on-disk structure a finding concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Table {
    /// The header cluster.
    Header,
    /// The active L1 table (offset: the L1 entry).
    ActiveL1,
    /// An L2 table of the active L1 (offset: the L2 entry).
    ActiveL2,
    /// A snapshot's L1 table (offset: the L1 entry).
    SnapshotL1,
    /// An L2 table reached from a snapshot's L1 (offset: the L2 entry).
    SnapshotL2,
    /// The snapshot table (offset: the table).
    SnapshotTable,
    /// The refcount table (offset: the refcount table entry).
    RefcountTable,
    /// The reference counts (offset: the host cluster whose refcount is wrong).
    Refcounts,
    /// The LUKS header area (offset: its start).
    CryptoHeader,
    /// The bitmap directory (offset: the directory).
    BitmapDirectory,
    /// A bitmap table (offset: the table).
    BitmapTable,
}

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How it counts.
    pub severity: Severity,
    /// The structure holding the faulty entry.
    pub table: Table,
    /// File offset of the faulty entry or structure (see [`Table`] for each kind).
    pub offset: u64,
    /// The line `qemu-img check` prints for it, word for word where QEMU prints one.
    pub message: String,
}

/// Which pass of `qcow2_check_refcounts` a finding comes from; QEMU prints them in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Reading the snapshot table and rebuilding the reference counts.
    Calculate,
    /// Comparing rebuilt and stored reference counts.
    Compare,
    /// Checking the COPIED flags of the active tables.
    Copied,
}

/// Collects findings of the three phases, keeping at most [`MAX_FINDINGS`].
#[derive(Debug, Default)]
pub(super) struct FindingSink {
    calculate: Vec<Finding>,
    compare: Vec<Finding>,
    copied: Vec<Finding>,
    omitted: u64,
}

impl FindingSink {
    /// Whether another finding would still be kept (so callers can skip formatting it).
    pub(super) fn has_room(&self) -> bool {
        self.calculate.len() + self.compare.len() + self.copied.len() < MAX_FINDINGS
    }

    /// Records a finding built by `make` if there is room, or counts it as omitted.
    pub(super) fn push(
        &mut self,
        phase: Phase,
        severity: Severity,
        table: Table,
        offset: u64,
        make: impl FnOnce() -> String,
    ) {
        if !self.has_room() {
            self.omitted += 1;
            return;
        }
        let finding = Finding {
            severity,
            table,
            offset,
            message: make(),
        };
        match phase {
            Phase::Calculate => self.calculate.push(finding),
            Phase::Compare => self.compare.push(finding),
            Phase::Copied => self.copied.push(finding),
        }
    }

    /// Records `n` copies of one finding: as many as there is room for, the rest counted as
    /// omitted (so a finding repeated millions of times costs no more than the report holds).
    pub(super) fn push_n(
        &mut self,
        phase: Phase,
        severity: Severity,
        table: Table,
        offset: u64,
        n: u64,
        make: impl FnOnce() -> String,
    ) {
        let room =
            (MAX_FINDINGS - (self.calculate.len() + self.compare.len() + self.copied.len())) as u64;
        let kept = n.min(room);
        self.omitted += n - kept;
        if kept == 0 {
            return;
        }
        let message = make();
        for _ in 0..kept {
            self.push(phase, severity, table, offset, || message.clone());
        }
    }

    /// The findings in QEMU's order, and how many were left out.
    pub(super) fn finish(mut self) -> (Vec<Finding>, u64) {
        self.calculate.append(&mut self.compare);
        self.calculate.append(&mut self.copied);
        (self.calculate, self.omitted)
    }
}

/// The result of checking a qcow2 image: `qemu-img check`'s counters and every finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The counters, with `qemu-img check`'s definitions.
    pub counts: CheckCounts,
    /// The findings, in the order `qemu-img check` prints them (at most [`MAX_FINDINGS`]).
    pub findings: Vec<Finding>,
    /// Findings counted but not kept because the report was full.
    pub findings_omitted: u64,
}

impl CheckReport {
    /// The exit status `qemu-img check` gives this result.
    pub fn exit_status(&self) -> u8 {
        self.counts.exit_status()
    }
}

/// Formats a value as C's `%#x` does: `0` for zero, `0x..` otherwise.
pub(super) fn c_alt_hex(v: u64) -> String {
    if v == 0 {
        "0".to_string()
    } else {
        format!("{v:#x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_keeps_qemus_phase_order_and_caps_its_size() {
        let mut sink = FindingSink::default();
        sink.push(
            Phase::Copied,
            Severity::Corruption,
            Table::ActiveL2,
            3,
            || "c".into(),
        );
        sink.push(
            Phase::Calculate,
            Severity::Corruption,
            Table::Header,
            1,
            || "a".into(),
        );
        sink.push(Phase::Compare, Severity::Leak, Table::Refcounts, 2, || {
            "b".into()
        });
        let (findings, omitted) = sink.finish();
        let order: Vec<_> = findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(omitted, 0);

        let mut sink = FindingSink::default();
        for _ in 0..MAX_FINDINGS + 5 {
            sink.push(
                Phase::Compare,
                Severity::Leak,
                Table::Refcounts,
                0,
                String::new,
            );
        }
        let (findings, omitted) = sink.finish();
        assert_eq!(findings.len(), MAX_FINDINGS);
        assert_eq!(omitted, 5);
    }

    #[test]
    fn alternate_hex_prints_zero_like_c() {
        assert_eq!(c_alt_hex(0), "0");
        assert_eq!(c_alt_hex(0x10000), "0x10000");
    }
}
