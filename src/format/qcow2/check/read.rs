//! Reads with the semantics of QEMU's block layer, which the check's verdicts depend on.
//!
//! `bdrv_co_pread` refuses requests beyond `BDRV_MAX_LENGTH` with `EIO`
//! (`bdrv_check_qiov_request`), and returns zeros for the part of a request that lies past the
//! end of the file (`bdrv_aligned_preadv`). A table that runs past the end of the file is
//! therefore read as zeros, not refused: `qemu-img check` goes on and reports what it finds.
//! Only the part inside the file is ever read, so a lying offset costs nothing.

use std::io;

use crate::source::ReadAt;

/// QEMU's largest request end: `INT64_MAX` aligned down to `BDRV_MAX_ALIGNMENT` (1 GiB)
/// (`include/block/block-common.h`).
pub const BDRV_MAX_LENGTH: u64 = (i64::MAX as u64) & !((1u64 << 30) - 1);

/// Why a QEMU-style read failed.
#[derive(Debug)]
pub(super) enum ReadFailure {
    /// QEMU refuses the request with `EIO`: it ends beyond [`BDRV_MAX_LENGTH`].
    OutOfRange,
    /// The operating system failed the read.
    Io(io::Error),
}

/// Fills `buf` from `offset` as `bdrv_co_pread` does: bytes past the end of the file read as
/// zeros, and a request ending beyond [`BDRV_MAX_LENGTH`] fails.
pub(super) fn read_zero_filled<S: ReadAt + ?Sized>(
    src: &S,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), ReadFailure> {
    let len = buf.len() as u64;
    if offset > BDRV_MAX_LENGTH || len > BDRV_MAX_LENGTH - offset {
        return Err(ReadFailure::OutOfRange);
    }
    let file_len = src.len();
    let in_file = file_len.saturating_sub(offset).min(len) as usize;
    let (head, tail) = buf.split_at_mut(in_file);
    tail.fill(0);
    let mut done = 0usize;
    while done < head.len() {
        match src.read_at(&mut head[done..], offset + done as u64) {
            // The file shrank under us: QEMU would read zeros there too, but a file that
            // changes during a check gives no verdict.
            Ok(0) => {
                return Err(ReadFailure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was being checked",
                )));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadFailure::Io(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_past_the_end_read_as_zeros() {
        let data = vec![1u8, 2, 3, 4];
        let mut buf = [9u8; 4];
        assert!(read_zero_filled(&data, &mut buf, 2).is_ok());
        assert_eq!(buf, [3, 4, 0, 0]);
        let mut buf = [9u8; 2];
        assert!(read_zero_filled(&data, &mut buf, 1 << 40).is_ok());
        assert_eq!(buf, [0, 0]);
    }

    #[test]
    fn requests_beyond_qemus_maximum_fail_like_eio() {
        let data = vec![0u8; 4];
        let mut buf = [0u8; 512];
        assert!(matches!(
            read_zero_filled(&data, &mut buf, BDRV_MAX_LENGTH - 100),
            Err(ReadFailure::OutOfRange)
        ));
        assert!(read_zero_filled(&data, &mut buf, BDRV_MAX_LENGTH - 512).is_ok());
        assert!(matches!(
            read_zero_filled(&data, &mut buf, u64::MAX),
            Err(ReadFailure::OutOfRange)
        ));
    }
}
