//! The VDI reader `vmimage convert` uses, on arbitrary bytes held in memory: the vdi module's
//! header checks, the block map checks, then the whole guest through `GuestReader`, bounded
//! by `guest::read_guest`.
#![no_main]

mod guest;

use libfuzzer_sys::fuzz_target;
use vmimage::format::vdi::reader::VdiReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = VdiReader::open(data.to_vec()) {
        guest::read_guest(&reader);
    }
});
