//! The qcow2 bitmap directory (`docs/interop/qcow2.rst`, "Bitmaps"), read only to list the
//! persistent dirty bitmaps as `qemu-img info` does. Bounded by the extension's limits: at most
//! [`MAX_BITMAPS`] entries in a directory of at most [`MAX_BITMAP_DIRECTORY_SIZE`] bytes.

use serde::Serialize;

use super::extensions::{BitmapsExtension, MAX_BITMAP_DIRECTORY_SIZE, MAX_BITMAPS};
use super::header::{Part, Qcow2Error};
use crate::format::bytes::{be16, be32};
use crate::source::{ReadAt, read_vec_at};

/// Bytes of the fixed part of a bitmap directory entry.
const ENTRY_FIXED_LEN: usize = 24;
/// Bitmap flag bit 0: the bitmap was not saved cleanly.
const FLAG_IN_USE: u32 = 1 << 0;
/// Bitmap flag bit 1: the bitmap tracks guest writes automatically.
const FLAG_AUTO: u32 = 1 << 1;

/// A persistent bitmap as `qemu-img info` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BitmapInfo {
    /// `in-use` and/or `auto`.
    pub flags: Vec<&'static str>,
    /// Bitmap name.
    pub name: String,
    /// Bytes of guest data per bitmap bit.
    pub granularity: u64,
}

/// Reads the bitmap directory the extension points at.
pub fn read_bitmap_directory<S: ReadAt + ?Sized>(
    src: &S,
    ext: &BitmapsExtension,
) -> Result<Vec<BitmapInfo>, Qcow2Error> {
    let size = ext.directory_size.min(MAX_BITMAP_DIRECTORY_SIZE) as usize;
    let dir = read_vec_at(src, ext.directory_offset, size)
        .map_err(|e| Qcow2Error::from_read(Part::BitmapDirectory, e))?;
    let mut bitmaps = Vec::new();
    let mut pos = 0usize;
    for index in 0..ext.nb_bitmaps.min(MAX_BITMAPS) {
        let bad = |reason: String| Qcow2Error::BadExtension {
            name: Part::BitmapDirectory,
            reason: format!("entry {index}: {reason}"),
        };
        let fixed = dir
            .get(pos..pos + ENTRY_FIXED_LEN)
            .ok_or_else(|| bad("runs past the end of the directory".into()))?;
        let flags = be32(fixed, 12);
        let granularity_bits = u32::from(fixed[17]);
        let name_size = usize::from(be16(fixed, 18));
        let extra_size = be32(fixed, 20) as usize;
        // Spec: granularity_bits is 9..=31.
        if !(9..=31).contains(&granularity_bits) {
            return Err(bad(format!(
                "granularity_bits is {granularity_bits}, outside 9..=31"
            )));
        }
        let name_start = pos + ENTRY_FIXED_LEN + extra_size;
        let name = dir
            .get(name_start..name_start + name_size)
            .ok_or_else(|| bad("its name runs past the end of the directory".into()))?;
        let mut flag_names = Vec::new();
        if flags & FLAG_IN_USE != 0 {
            flag_names.push("in-use");
        }
        if flags & FLAG_AUTO != 0 {
            flag_names.push("auto");
        }
        bitmaps.push(BitmapInfo {
            flags: flag_names,
            name: String::from_utf8_lossy(name).into_owned(),
            granularity: 1u64 << granularity_bits,
        });
        pos = (name_start + name_size).next_multiple_of(8);
    }
    Ok(bitmaps)
}
