//! VirtualBox VDI images, read the way QEMU's `block/vdi.c` reads them.
//!
//! A VDI file starts with a 512-byte little-endian header (a 64-byte text banner, the
//! signature `0xbeda107f` at 0x40, then the geometry, sizes and UUIDs), followed by the block
//! map (one `u32` per block) and the data blocks. QEMU supports version 1.1 with 512-byte
//! sectors and 1 MiB blocks, and refuses differencing images (non-null link or parent UUID).
//! The virtual size is `disk_size` rounded up to whole sectors (`VBoxManage convertfromraw`
//! can write odd sizes).

pub mod reader;

use std::io;

use super::bytes::{le32, le64};
use super::{FormatReport, Probe};
use crate::safety::{Check, Finding, Rule};
use crate::source::ReadAt;

const DISK_SIZE_LIMIT: Rule = Rule::error(
    "vdi.disk-size-limit",
    Check::InvalidHeader,
    "the disk size exceeds QEMU's limit (`VDI_DISK_SIZE_MAX`, 2^32 - 1 blocks of 1 MiB)",
);
const HEADER_TRUNCATED: Rule = Rule::error(
    "vdi.header-truncated",
    Check::Truncated,
    "the file ends inside the 512-byte VDI header",
);
const VERSION: Rule = Rule::error(
    "vdi.version",
    Check::UnsupportedVersion,
    "the header version is not 1.1, the only one QEMU reads",
);
const BLOCK_MAP_ALIGNMENT: Rule = Rule::error(
    "vdi.block-map-alignment",
    Check::InvalidHeader,
    "the block map offset is not a multiple of 512",
);
const DATA_ALIGNMENT: Rule = Rule::error(
    "vdi.data-alignment",
    Check::InvalidHeader,
    "the data offset is not a multiple of 512",
);
const SECTOR_SIZE: Rule = Rule::error(
    "vdi.sector-size",
    Check::InvalidHeader,
    "the sector size is not 512",
);
const BLOCK_SIZE_RULE: Rule = Rule::error(
    "vdi.block-size",
    Check::InvalidHeader,
    "the block size is not 1 MiB, the only one QEMU reads",
);
const BLOCK_MAP_TOO_SMALL: Rule = Rule::error(
    "vdi.block-map-too-small",
    Check::InvalidHeader,
    "the disk size exceeds the blocks the block map describes",
);
const LINKED_IMAGE: Rule = Rule::error(
    "vdi.linked-image",
    Check::BackingFile,
    "the link UUID is not null: a differencing image linked to another image",
);
const PARENT_IMAGE: Rule = Rule::error(
    "vdi.parent-image",
    Check::BackingFile,
    "the parent UUID is not null: a differencing image whose parent supplies unallocated blocks",
);
const BLOCK_COUNT_LIMIT: Rule = Rule::error(
    "vdi.block-count-limit",
    Check::InvalidHeader,
    "the image has more blocks than QEMU's limit (`VDI_BLOCKS_IN_IMAGE_MAX`)",
);
const IMAGE_TYPE: Rule = Rule::error(
    "vdi.image-type",
    Check::InvalidHeader,
    "the image type is neither 1 (dynamic) nor 2 (static)",
);
const BLOCK_MAP_PAST_EOF: Rule = Rule::error(
    "vdi.block-map-past-eof",
    Check::Truncated,
    "the block map runs past the end of the file",
);
const DATA_PAST_EOF: Rule = Rule::error(
    "vdi.data-past-eof",
    Check::Truncated,
    "the allocated blocks the header counts end past the end of the file",
);

/// The safety rules this module applies (see [`crate::safety::Rule`]).
pub const RULES: &[Rule] = &[
    HEADER_TRUNCATED,
    DISK_SIZE_LIMIT,
    VERSION,
    BLOCK_MAP_ALIGNMENT,
    DATA_ALIGNMENT,
    SECTOR_SIZE,
    BLOCK_SIZE_RULE,
    BLOCK_MAP_TOO_SMALL,
    LINKED_IMAGE,
    PARENT_IMAGE,
    BLOCK_COUNT_LIMIT,
    IMAGE_TYPE,
    BLOCK_MAP_PAST_EOF,
    DATA_PAST_EOF,
];

/// The header length (`VdiHeader`).
pub const HEADER_LEN: usize = 512;
/// The signature at [`SIGNATURE_OFFSET`].
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Where the signature sits.
pub const SIGNATURE_OFFSET: usize = 0x40;
/// The only version QEMU reads (1.1).
const VERSION_1_1: u32 = 0x0001_0001;
/// Image types: normal (dynamically allocated) and fixed (static).
const TYPE_DYNAMIC: u32 = 1;
const TYPE_STATIC: u32 = 2;
/// VDI sector size; QEMU refuses any other.
const SECTOR: u64 = 512;
/// QEMU's only block size (`DEFAULT_CLUSTER_SIZE`).
const BLOCK_SIZE: u32 = 1 << 20;
/// QEMU's `VDI_BLOCKS_IN_IMAGE_MAX`: the block map must fit in `INT_MAX` bytes once rounded
/// up to a sector.
const MAX_BLOCKS: u32 = ((i32::MAX as u64 + 1 - SECTOR) / 4) as u32;
/// QEMU's `VDI_DISK_SIZE_MAX`.
const MAX_DISK_SIZE: u64 = MAX_BLOCKS as u64 * BLOCK_SIZE as u64;

/// Header field offsets (`VdiHeader` in `block/vdi.c`).
mod off {
    pub const VERSION: usize = 0x44;
    pub const IMAGE_TYPE: usize = 0x4c;
    pub const OFFSET_BMAP: usize = 0x154;
    pub const OFFSET_DATA: usize = 0x158;
    pub const SECTOR_SIZE: usize = 0x168;
    pub const DISK_SIZE: usize = 0x170;
    pub const BLOCK_SIZE: usize = 0x178;
    pub const BLOCKS_IN_IMAGE: usize = 0x180;
    pub const BLOCKS_ALLOCATED: usize = 0x184;
    pub const UUID_LINK: usize = 0x1a8;
    pub const UUID_PARENT: usize = 0x1b8;
}

/// Whether the probe carries the VDI signature at 0x40.
pub fn detect(probe: &Probe) -> bool {
    probe
        .head_bytes(SIGNATURE_OFFSET, 4)
        .is_some_and(|b| le32(b, 0) == SIGNATURE)
}

/// The VDI header fields QEMU uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdiHeader {
    /// `major << 16 | minor`.
    pub version: u32,
    /// 1 dynamic, 2 static.
    pub image_type: u32,
    /// Offset of the block map.
    pub offset_bmap: u32,
    /// Offset of the first data block.
    pub offset_data: u32,
    /// Sector size (must be 512).
    pub sector_size: u32,
    /// Disk size in bytes.
    pub disk_size: u64,
    /// Block size (must be 1 MiB).
    pub block_size: u32,
    /// Number of blocks the block map describes.
    pub blocks_in_image: u32,
    /// Number of blocks stored in the file.
    pub blocks_allocated: u32,
    /// UUID of the image this one is linked to (differencing images).
    pub uuid_link: [u8; 16],
    /// UUID of the parent image (differencing images).
    pub uuid_parent: [u8; 16],
}

impl VdiHeader {
    /// Decodes the 512-byte header.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        let uuid = |o: usize| {
            let mut u = [0u8; 16];
            u.copy_from_slice(&b[o..o + 16]);
            u
        };
        Self {
            version: le32(b, off::VERSION),
            image_type: le32(b, off::IMAGE_TYPE),
            offset_bmap: le32(b, off::OFFSET_BMAP),
            offset_data: le32(b, off::OFFSET_DATA),
            sector_size: le32(b, off::SECTOR_SIZE),
            disk_size: le64(b, off::DISK_SIZE),
            block_size: le32(b, off::BLOCK_SIZE),
            blocks_in_image: le32(b, off::BLOCKS_IN_IMAGE),
            blocks_allocated: le32(b, off::BLOCKS_ALLOCATED),
            uuid_link: uuid(off::UUID_LINK),
            uuid_parent: uuid(off::UUID_PARENT),
        }
    }

    /// `vdi_open()`'s checks, in its order: the first violated rule, as a finding.
    fn validate(&self) -> Option<Finding> {
        let invalid = |rule: Rule, d: String| Some(rule.finding(d));
        let disk_size = self.disk_size;
        if disk_size > MAX_DISK_SIZE {
            return invalid(
                DISK_SIZE_LIMIT,
                format!(
                    "the VDI disk size {disk_size} exceeds QEMU's limit of {MAX_DISK_SIZE} bytes"
                ),
            );
        }
        if self.version != VERSION_1_1 {
            return Some(VERSION.finding(format!(
                "the VDI version is {}.{}, not 1.1",
                self.version >> 16,
                self.version & 0xffff
            )));
        }
        if !u64::from(self.offset_bmap).is_multiple_of(SECTOR) {
            return invalid(
                BLOCK_MAP_ALIGNMENT,
                format!(
                    "the VDI block map offset {:#x} is not sector-aligned",
                    self.offset_bmap
                ),
            );
        }
        if !u64::from(self.offset_data).is_multiple_of(SECTOR) {
            return invalid(
                DATA_ALIGNMENT,
                format!(
                    "the VDI data offset {:#x} is not sector-aligned",
                    self.offset_data
                ),
            );
        }
        if u64::from(self.sector_size) != SECTOR {
            return invalid(
                SECTOR_SIZE,
                format!("the VDI sector size is {}, not 512", self.sector_size),
            );
        }
        if self.block_size != BLOCK_SIZE {
            return invalid(
                BLOCK_SIZE_RULE,
                format!("the VDI block size is {}, not 1 MiB", self.block_size),
            );
        }
        let room = u64::from(self.blocks_in_image) * u64::from(self.block_size);
        if disk_size > room {
            return invalid(
                BLOCK_MAP_TOO_SMALL,
                format!(
                    "the VDI disk size {disk_size} exceeds the {room} bytes its block map describes"
                ),
            );
        }
        if self.uuid_link != [0; 16] {
            return Some(LINKED_IMAGE.finding(format!(
                "the VDI is a differencing image linked to image UUID {}",
                uuid(&self.uuid_link)
            )));
        }
        if self.uuid_parent != [0; 16] {
            return Some(PARENT_IMAGE.finding(format!(
                    "the VDI is a differencing image whose parent (UUID {}) supplies unallocated blocks",
                    uuid(&self.uuid_parent)
                ),
            ));
        }
        if self.blocks_in_image > MAX_BLOCKS {
            return invalid(
                BLOCK_COUNT_LIMIT,
                format!(
                    "the VDI has {} blocks, more than QEMU's limit of {MAX_BLOCKS}",
                    self.blocks_in_image
                ),
            );
        }
        None
    }
}

/// Describes the image as `qemu-img info -f vdi` would.
pub fn describe<S: ReadAt + ?Sized>(_src: &S, probe: &Probe) -> io::Result<FormatReport> {
    let bytes = match probe.head_header_with::<HEADER_LEN>(HEADER_TRUNCATED, "the VDI header") {
        Ok(bytes) => bytes,
        Err(finding) => {
            return Ok(FormatReport {
                findings: vec![finding],
                ..FormatReport::default()
            });
        }
    };
    let header = VdiHeader::parse(bytes);
    if let Some(finding) = header.validate() {
        return Ok(FormatReport {
            findings: vec![finding],
            ..FormatReport::default()
        });
    }
    let mut report = FormatReport {
        virtual_size: Some(header.disk_size.next_multiple_of(SECTOR)),
        cluster_size: Some(u64::from(header.block_size)),
        ..FormatReport::default()
    };
    if !matches!(header.image_type, TYPE_DYNAMIC | TYPE_STATIC) {
        report.findings.push(IMAGE_TYPE.finding(format!(
            "the VDI image type is {}, not 1 (dynamic) or 2 (static)",
            header.image_type
        )));
    }
    // The block map and the allocated blocks must be in the file (the header is 512 bytes, so
    // none of these sums can overflow a u64).
    let bmap_len = (u64::from(header.blocks_in_image) * 4).next_multiple_of(SECTOR);
    let bmap_end = u64::from(header.offset_bmap) + bmap_len;
    let data_end = u64::from(header.offset_data)
        + u64::from(header.blocks_allocated) * u64::from(header.block_size);
    if bmap_end > probe.len {
        report.findings.push(BLOCK_MAP_PAST_EOF.finding(format!(
                "the VDI block map ({bmap_len} bytes at offset {:#x}) runs past the end of the file ({} bytes)",
                header.offset_bmap, probe.len
            ),
        ));
    } else if data_end > probe.len {
        report.findings.push(DATA_PAST_EOF.finding(format!(
                "the VDI header counts {} allocated blocks, ending at offset {data_end:#x}, past the end of the file ({} bytes)",
                header.blocks_allocated, probe.len
            ),
        ));
    }
    Ok(report)
}

/// A UUID in its usual text form, lower case (VDI stores the first three groups
/// little-endian, as `RTUUID` does).
fn uuid(u: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes_le(*u).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::assert_fires;

    /// A header as `vdi_co_do_create()` writes it, plus its block map and (for static
    /// images) its data.
    fn image(size: u64, is_static: bool) -> Vec<u8> {
        let blocks = size.div_ceil(u64::from(BLOCK_SIZE)) as u32;
        let bmap_len = (blocks as usize * 4).next_multiple_of(512);
        let mut h = vec![0u8; HEADER_LEN];
        h[..36].copy_from_slice(b"<<< QEMU VM Virtual Disk Image >>>\n\0");
        let mut put = |o: usize, v: &[u8]| h[o..o + v.len()].copy_from_slice(v);
        put(SIGNATURE_OFFSET, &SIGNATURE.to_le_bytes());
        put(off::VERSION, &VERSION_1_1.to_le_bytes());
        put(0x48, &0x180u32.to_le_bytes());
        put(
            off::IMAGE_TYPE,
            &(if is_static { TYPE_STATIC } else { TYPE_DYNAMIC }).to_le_bytes(),
        );
        put(off::OFFSET_BMAP, &0x200u32.to_le_bytes());
        put(off::OFFSET_DATA, &(0x200 + bmap_len as u32).to_le_bytes());
        put(off::SECTOR_SIZE, &512u32.to_le_bytes());
        put(off::DISK_SIZE, &size.to_le_bytes());
        put(off::BLOCK_SIZE, &BLOCK_SIZE.to_le_bytes());
        put(off::BLOCKS_IN_IMAGE, &blocks.to_le_bytes());
        if is_static {
            put(off::BLOCKS_ALLOCATED, &blocks.to_le_bytes());
        }
        let mut d = h;
        d.extend(vec![0xffu8; bmap_len]);
        if is_static {
            d.resize(d.len() + blocks as usize * BLOCK_SIZE as usize, 0);
        }
        d
    }

    fn describe_bytes(d: &[u8]) -> FormatReport {
        describe(d, &Probe::from_bytes(d)).expect("in-memory")
    }

    fn checks(r: &FormatReport) -> Vec<Check> {
        r.findings.iter().map(|f| f.check).collect()
    }

    /// The findings of a report that has exactly one.
    #[track_caller]
    fn only(r: &FormatReport) -> &[crate::safety::Finding] {
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        &r.findings
    }

    #[test]
    fn truncated_header() {
        let d = image(1 << 20, false);
        let r = describe(&d[..100], &Probe::from_bytes(&d[..100])).expect("in-memory");
        assert_fires(&r.findings, "vdi.header-truncated");
    }

    #[test]
    fn dynamic_and_static_images_are_described() {
        let r = describe_bytes(&image(64 << 20, false));
        assert_eq!(r.virtual_size, Some(64 << 20));
        assert_eq!(r.cluster_size, Some(1 << 20));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        let r = describe_bytes(&image(3 << 20, true));
        assert_eq!(r.virtual_size, Some(3 << 20));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn an_odd_disk_size_is_rounded_up_to_a_sector() {
        let mut d = image(64 << 20, false);
        d[off::DISK_SIZE..off::DISK_SIZE + 8].copy_from_slice(&1_000_001u64.to_le_bytes());
        assert_eq!(describe_bytes(&d).virtual_size, Some(1_000_448));
    }

    #[test]
    fn every_header_rule_fires() {
        let base = image(64 << 20, false);
        let case = |o: usize, v: &[u8]| {
            let mut d = base.clone();
            d[o..o + v.len()].copy_from_slice(v);
            describe_bytes(&d)
        };
        let fired = case(off::DISK_SIZE, &u64::MAX.to_le_bytes());
        assert_fires(only(&fired), "vdi.disk-size-limit");
        let fired = case(off::VERSION, &0x0001_0000u32.to_le_bytes());
        assert_fires(only(&fired), "vdi.version");
        let fired = case(off::OFFSET_BMAP, &0x201u32.to_le_bytes());
        assert_fires(only(&fired), "vdi.block-map-alignment");
        let fired = case(off::OFFSET_DATA, &0x401u32.to_le_bytes());
        assert_fires(only(&fired), "vdi.data-alignment");
        let fired = case(off::SECTOR_SIZE, &4096u32.to_le_bytes());
        assert_fires(only(&fired), "vdi.sector-size");
        let fired = case(off::BLOCK_SIZE, &(2u32 << 20).to_le_bytes());
        assert_fires(only(&fired), "vdi.block-size");
        let fired = case(off::BLOCKS_IN_IMAGE, &1u32.to_le_bytes());
        assert_fires(only(&fired), "vdi.block-map-too-small");
        assert_fires(only(&case(off::UUID_LINK, &[1])), "vdi.linked-image");
        assert_fires(only(&case(off::UUID_PARENT, &[1])), "vdi.parent-image");
        let fired = case(off::IMAGE_TYPE, &4u32.to_le_bytes());
        assert_fires(only(&fired), "vdi.image-type");
        let fired = case(off::BLOCKS_ALLOCATED, &64u32.to_le_bytes());
        assert_fires(only(&fired), "vdi.data-past-eof");
        let fired = case(off::OFFSET_BMAP, &0x10_0000u32.to_le_bytes());
        assert_fires(only(&fired), "vdi.block-map-past-eof");
        // Too many blocks: the size check comes first unless the disk size allows it.
        let fired = case(off::BLOCKS_IN_IMAGE, &(MAX_BLOCKS + 1).to_le_bytes());
        assert_fires(only(&fired), "vdi.block-count-limit");
    }

    #[test]
    fn a_short_header_is_truncated() {
        let d = image(64 << 20, false);
        for cut in [0x44, 0x100, 511] {
            assert_eq!(checks(&describe_bytes(&d[..cut])), [Check::Truncated]);
        }
    }

    #[test]
    fn uuids_print_in_the_usual_byte_order() {
        let u = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(uuid(&u), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            let mut d: Vec<u8> = (0..HEADER_LEN + 64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            d[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 4].copy_from_slice(&SIGNATURE.to_le_bytes());
            let _ = describe_bytes(&d);
        }
    }
}
