//! Format detection and `info` on arbitrary bytes: every detector, every format's header parser
//! and the safety rules must return a report, never panic, and stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmimage::inspect(data, "fuzz");
});
