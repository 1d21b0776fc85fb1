//! The cloud record parser (Glance, SCP, IMS listings, `openstack image show`, sidecars) on
//! arbitrary bytes, with and without a selector.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmimage::cloud::{RecordSelector, parse_record};

fuzz_target!(|data: &[u8]| {
    let _ = parse_record(data, &RecordSelector::default());
    let by_name = RecordSelector {
        id: None,
        name: Some("a".into()),
    };
    let _ = parse_record(data, &by_name);
});
