//! From a described image to its guest reader: the one place that knows which
//! [`GuestReader`] reads which format.
//!
//! `info`, `check`, `hash --guest` and `convert` ask one object the same questions: what the
//! image is ([`crate::inspect::OpenedImage::info`], the facts `info` reports) and what the
//! guest sees at each offset ([`GuestReader::extent_at`]: data, zeros or unallocated;
//! [`GuestReader::read_at`]: the bytes). [`crate::inspect::OpenedImage`] holds the file, what
//! `inspect` found, and the structures the format module decoded ([`Decoded`]);
//! [`guest_reader`] turns them into a reader without parsing the headers again where the
//! format module handed them back.
//!
//! Adding a format's reader is one arm of the match in [`guest_reader`] (its reader lives
//! beside its decoder, in `format/<fmt>/reader.rs`, and implements [`GuestReader`]).

use crate::format::guest::{GuestReader, ReadFailure};
use crate::format::qcow2::Qcow2Header;
use crate::format::qcow2::reader::Qcow2Reader;
use crate::format::raw::RawReader;
use crate::format::vdi::reader::VdiReader;
use crate::format::vhdx::reader::VhdxReader;
use crate::format::vmdk::reader::VmdkReader;
use crate::format::vpc::reader as vpc_reader;
use crate::format::{Decoded, ImageFormat};
use crate::source::{ImageFile, ReadAt};

/// The guest reader of `file`, which `inspect` described as `format` and found safe, starting
/// from what the format module `decoded`. `Ok(None)`: vmimage has no reader of this format.
///
/// An ISO is read as raw, as QEMU reads it; a raw disk that ends in a VHD footer is a fixed
/// VHD, because `inspect` said so.
pub fn guest_reader(
    file: ImageFile,
    format: ImageFormat,
    decoded: &Decoded,
) -> Result<Option<Box<dyn GuestReader>>, ReadFailure> {
    let reader: Box<dyn GuestReader> = match format {
        ImageFormat::Raw | ImageFormat::Iso => {
            let len = file.len();
            Box::new(RawReader::new(file, len))
        }
        ImageFormat::Qcow2 => {
            let header = match decoded {
                Decoded::Qcow2(header) => (**header).clone(),
                _ => Qcow2Header::read(&file).map_err(|e| ReadFailure::Invalid(e.to_string()))?,
            };
            Box::new(Qcow2Reader::open(file, header)?)
        }
        ImageFormat::Vpc => match decoded {
            Decoded::Vpc(layout) => vpc_reader::open_decoded(file, layout)?,
            _ => match vpc_reader::probe(&file)? {
                Some((footer, at_start)) => vpc_reader::open(file, footer, at_start)?,
                None => return Err(ReadFailure::Invalid("no valid VHD footer".into())),
            },
        },
        ImageFormat::Vdi => Box::new(VdiReader::open(file)?),
        ImageFormat::Vmdk => Box::new(VmdkReader::open(file)?),
        ImageFormat::Vhdx => Box::new(VhdxReader::open(file)?),
        ImageFormat::Qcow | ImageFormat::Qed | ImageFormat::Luks => return Ok(None),
    };
    Ok(Some(reader))
}
