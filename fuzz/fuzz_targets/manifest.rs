//! The `hash --check` manifest parser (GNU, BSD-tagged, PGP-clearsigned) on arbitrary bytes,
//! and the escaping round trip of every name it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmimage::digest::Algorithm;
use vmimage::digest::manifest::{escape, needs_escape, parse};

fuzz_target!(|data: &[u8]| {
    for allowed in [&[][..], &Algorithm::DEFAULT[..]] {
        for dash in [false, true] {
            let manifest = parse(data, allowed, dash);
            let _ = format!("{manifest:?}");
        }
    }
    if needs_escape(data) {
        let _ = escape(data);
    }
});
