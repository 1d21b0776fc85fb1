//! The numbers `qemu-img check` reports, with QEMU's definitions (`BdrvCheckResult` and
//! `BlockFragInfo` in `include/block/block-common.h`, filled by `block/qcow2-refcount.c`).

use serde::Serialize;

/// The counters of one check, named and defined as `qemu-img check --output=json` names them.
///
/// Serialized in the key order `qemu-img check --output=json` prints (QEMU's QDict hash order),
/// with the zero-valued optional keys left out as QEMU leaves them out; `check-errors` is
/// always present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckCounts {
    /// One past the last byte of the last cluster that is referenced or has a refcount:
    /// `(highest_cluster + 1) * cluster_size` (`qcow2_check_refcounts`).
    #[serde(skip_serializing_if = "is_zero")]
    pub image_end_offset: u64,
    /// Compressed clusters mapped by the active L1 table.
    #[serde(skip_serializing_if = "is_zero")]
    pub compressed_clusters: u64,
    /// Guest clusters of the virtual disk: `ceil(floor(size / 512) * 512 / cluster_size)`.
    #[serde(skip_serializing_if = "is_zero")]
    pub total_clusters: u64,
    /// Inconsistencies that may corrupt data: refcounts below the references, bad entries,
    /// metadata past the end of the file.
    #[serde(skip_serializing_if = "is_zero")]
    pub corruptions: u64,
    /// Problems that kept the check from examining something (an unreadable refcount block).
    pub check_errors: u64,
    /// Clusters whose refcount exceeds their references: wasted space, no harm to data.
    #[serde(skip_serializing_if = "is_zero")]
    pub leaks: u64,
    /// Guest clusters the active L1 table maps to host clusters (normal, preallocated zero and
    /// compressed).
    #[serde(skip_serializing_if = "is_zero")]
    pub allocated_clusters: u64,
    /// Allocated clusters that do not follow the previous one of the same L2 table on the host,
    /// plus every compressed cluster (QEMU: "compressed clusters are fragmented by nature").
    #[serde(skip_serializing_if = "is_zero")]
    pub fragmented_clusters: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl CheckCounts {
    /// The exit status `qemu-img check` gives these counts (`img_check`): 1 if the check had
    /// internal errors, else 2 for corruptions, 3 for leaks only, 0 for a clean image.
    pub fn exit_status(&self) -> u8 {
        if self.check_errors > 0 {
            1
        } else if self.corruptions > 0 {
            2
        } else if self.leaks > 0 {
            3
        } else {
            0
        }
    }

    /// Whether the image is consistent: no corruption, no leak, no internal error.
    pub fn is_clean(&self) -> bool {
        self.check_errors == 0 && self.corruptions == 0 && self.leaks == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_follows_qemu_img_precedence() {
        let mut c = CheckCounts::default();
        assert_eq!(c.exit_status(), 0);
        c.leaks = 1;
        assert_eq!(c.exit_status(), 3);
        c.corruptions = 1;
        assert_eq!(c.exit_status(), 2);
        c.check_errors = 1;
        assert_eq!(c.exit_status(), 1);
    }

    #[test]
    fn zero_counters_are_omitted_but_check_errors_is_not() {
        let json = serde_json::to_value(CheckCounts::default()).unwrap_or_default();
        assert_eq!(json, serde_json::json!({"check-errors": 0}));
    }
}
