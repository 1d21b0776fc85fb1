#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end tests of the `vmimage` binary, with `qemu-img` as the oracle. One test binary
//! for every command (ripgrep's layout): `util` holds the harness.

mod atomic_output;
mod batch;
mod check;
mod convert;
mod convert_inputs;
mod convert_metadata;
mod convert_outputs;
mod convert_stream;
mod damaged;
mod data_safety;
mod formats;
mod garage;
mod generate;
mod guest_hash;
mod hash;
mod hostile;
mod info;
mod metadata;
mod oslo_inspector;
mod producers;
mod remote;
mod rules;
mod s3;
mod s3_upload;
mod second_reader;
mod signing;
mod util;
mod verify;
mod virtual_size;
