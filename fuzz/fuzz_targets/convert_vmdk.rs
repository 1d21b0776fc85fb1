//! The VMDK reader `vmimage convert` uses, on arbitrary bytes held in memory: the vmdk
//! module's header, footer and descriptor checks, the grain directory, then the whole guest
//! through `GuestReader` (grain tables, zeroed grains, compressed grains with and without
//! markers), bounded by `guest::read_guest`.
#![no_main]

mod guest;

use libfuzzer_sys::fuzz_target;
use vmimage::format::vmdk::reader::VmdkReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = VmdkReader::open(data.to_vec()) {
        guest::read_guest(&reader);
    }
});
