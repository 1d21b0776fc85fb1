//! Cloud image records and upload metadata: Glance v2, Samsung Cloud Platform (SCP) and
//! Huawei Cloud / Open Telekom Cloud IMS.
//!
//! - Reading what a cloud recorded: [`parse_record`] takes any accepted document (a Glance,
//!   SCP or IMS image, an IMS listing, `openstack image show -f json`, a vmimage sidecar) and
//!   returns one normalised [`ImageRecord`], in which absent values and placeholders keep the
//!   reason they are absent. [`crate::verify`] compares it with a file.
//! - Writing what to upload: [`metadata::build`] turns an image's
//!   [`ImageFacts`](crate::facts::ImageFacts) and the user's [`MetadataOptions`] into the
//!   create request body of a [`Target`], validated against every documented rule of that
//!   service, plus a [`Sidecar`] with the digests and sizes no body may carry.
//!
//! One module per service ([`glance`], [`scp`], [`ims`], [`openstack_cli`]) holds both how that
//! service's records read and its create rules; field meanings and rules cite SPEC,
//! `reference/cloud-metadata.md` and the seeds (000-002 SCP, 003-004 IMS). The modules call
//! each other in one direction only: [`metadata`] dispatches to the services, which build
//! their bodies with the shared toolkit of [`rules`].

pub mod glance;
pub mod ims;
pub mod lenient;
pub mod metadata;
pub mod openstack_cli;
pub mod parse;
pub mod record;
pub mod rules;
pub mod scp;

pub use metadata::{MetadataDocument, Sidecar, build};
pub use parse::{RecordError, RecordSelector, parse_record, read_document};
pub use record::{Absence, ImageRecord, RecordSource, Recorded};
pub use rules::{MetadataOptions, RuleViolation, RuleViolations, Target};
