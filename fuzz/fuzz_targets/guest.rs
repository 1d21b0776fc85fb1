//! Shared by the `convert_*` targets: read a whole guest disk through the
//! [`GuestReader`] trait the way `vmimage convert` does (extent map first, then the data),
//! checking the trait's promises, within a fixed budget so that a hostile virtual size (up
//! to 2^63 bytes) cannot make one input run for ever.

use vmimage::format::guest::GuestReader;

/// Extent queries per input: far more than a 64 KiB input can describe without repeating
/// itself, so running out means the reader is not making progress.
pub const MAX_EXTENT_QUERIES: usize = 20_000;
/// Guest bytes read per input: 4 MiB, enough to cross every cluster a small input maps
/// (a shared L2 table can map more; the rest is skipped, not a finding).
pub const MAX_GUEST_BYTES: u64 = 4 * 1024 * 1024;
/// Largest single read, like the converter's 1 MiB chunks.
const MAX_READ: u64 = 1024 * 1024;

/// Walks the extent map from 0 to the virtual size and reads the data extents.
pub fn read_guest(reader: &dyn GuestReader) {
    let size = reader.virtual_size();
    let granularity = reader.granularity();
    assert!(
        granularity.is_power_of_two() && granularity <= 2 * 1024 * 1024,
        "granularity {granularity}"
    );
    let mut budget = MAX_GUEST_BYTES;
    let mut buf = Vec::new();
    let mut pos = 0u64;
    for _ in 0..MAX_EXTENT_QUERIES {
        if pos >= size {
            break;
        }
        let extent = match reader.extent_at(pos) {
            Ok(e) => e,
            Err(_) => return,
        };
        // The contract of `extent_at`: starts where asked, non-empty, inside the disk.
        assert_eq!(extent.start, pos, "extent starts elsewhere");
        assert!(extent.len >= 1, "empty extent at {pos}");
        assert!(extent.end() <= size, "extent past the disk");
        if extent.data && budget > 0 {
            // Read in aligned pieces, as the converter's chunks do, with an unaligned first
            // piece when the extent starts mid-granule.
            let mut at = extent.start;
            let end = extent.end();
            while at < end && budget > 0 {
                let to_boundary = MAX_READ - (at % MAX_READ);
                let n = to_boundary.min(end - at).min(budget);
                buf.resize(n as usize, 0);
                if reader.read_at(at, &mut buf).is_err() {
                    return;
                }
                budget -= n;
                at += n;
            }
        }
        pos = extent.end();
    }
    // Reads at the edges: the last byte, and one byte past the end (must be refused).
    if size > 0 {
        let mut one = [0u8; 1];
        let _ = reader.read_at(size - 1, &mut one);
    }
    let mut one = [0u8; 1];
    assert!(
        reader.read_at(size, &mut one).is_err(),
        "a read past the virtual size succeeded"
    );
}
