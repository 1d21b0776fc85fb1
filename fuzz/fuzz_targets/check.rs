//! `vmimage check` (the qcow2 consistency check) on arbitrary bytes held in memory; seeded
//! with valid images made by qemu-img (`fuzz/run.sh`), which the fuzzer mutates. Every table
//! walk, refcount rebuild and comparison must end with a report or an error, never a panic,
//! within the per-input time limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmimage::format::qcow2::check;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = check::check(data) {
        let _ = report.exit_status();
    }
});
