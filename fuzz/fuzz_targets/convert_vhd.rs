//! The VHD reader `vmimage convert` uses, on arbitrary bytes held in memory: footer probe
//! (start or end, checksum), the virtual size rules, and for a dynamic VHD the dynamic header,
//! the BAT and the whole guest through `GuestReader`, bounded by `guest::read_guest`.
#![no_main]

mod guest;

use libfuzzer_sys::fuzz_target;
use vmimage::format::vpc::DISK_TYPE_DYNAMIC;
use vmimage::format::vpc::reader::{DynamicVhd, probe, virtual_size};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((footer, at_start))) = probe(data) else {
        return;
    };
    let _ = virtual_size(&footer);
    if at_start && footer.disk_type == DISK_TYPE_DYNAMIC {
        if let Ok(reader) = DynamicVhd::open(data.to_vec(), &footer) {
            guest::read_guest(&reader);
        }
    }
});
