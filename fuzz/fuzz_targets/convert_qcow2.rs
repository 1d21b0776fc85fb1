//! The qcow2 reader `vmimage convert` uses, on arbitrary bytes held in memory: open (header
//! and L1 table checks), then the whole guest through `GuestReader` (extent map, normal,
//! zero, extended-L2 and compressed clusters), bounded by `guest::read_guest`'s budget.
#![no_main]

mod guest;

use libfuzzer_sys::fuzz_target;
use vmimage::format::qcow2::reader::Qcow2Reader;
use vmimage::format::qcow2::Qcow2Header;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = Qcow2Header::read(data) else {
        return;
    };
    if let Ok(reader) = Qcow2Reader::open(data.to_vec(), header) {
        guest::read_guest(&reader);
    }
});
