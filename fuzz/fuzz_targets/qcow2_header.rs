//! The qcow2 header, extension and snapshot-table parsers on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmimage::format::qcow2::{Qcow2Header, snapshot::read_snapshots};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Qcow2Header::read(data) {
        let _ = read_snapshots(data, &header);
    }
});
