//! The input's guest hash (`convert --verify`, the sidecar's `guest_hash`), taken from the
//! conversion's own reads of the input: the worker thread that reads a chunk digests its
//! 64 KiB blocks ([`BlockDigester::piece`]), and the calling thread folds the pieces in guest
//! order, counting everything between them (unallocated, or found all zeros and never read
//! again) as zero blocks, which costs no read. Each output reads its data once in the pass that
//! writes it, except compressed qcow2, whose data is read whole only by the scan; the arm that
//! reads is the one given an [`InputHash`], so the input is hashed exactly once.

use super::Failure;
use crate::digest::Algorithm;
use crate::digest::guest::{BlockDigester, GuestHash, GuestHasher, GuestPiece};
use std::io;

/// The guest hash of a conversion's input, fed from its reads.
pub struct InputHash {
    digester: BlockDigester,
    hasher: GuestHasher,
}

impl InputHash {
    /// The hash, with `algorithm`, of the first `length` bytes of the input's guest.
    pub fn new(algorithm: Algorithm, length: u64) -> Self {
        let digester = BlockDigester::new(algorithm, length);
        Self {
            digester,
            hasher: digester.hasher(),
        }
    }

    /// What the worker threads digest a piece with.
    pub fn digester(&self) -> BlockDigester {
        self.digester
    }

    /// Folds the next piece read (pieces come in guest order).
    pub fn add(&mut self, piece: GuestPiece) -> Result<(), Failure> {
        self.hasher
            .add_piece(piece)
            .map_err(|e| Failure::Output(io::Error::other(e)))
    }

    /// The hash; whatever no piece covered is zeros.
    pub fn finish(self) -> GuestHash {
        self.hasher.finish_at(self.digester.length())
    }
}

/// Folds `piece`, if there is one, into `hash`, if there is one.
pub(super) fn add(
    hash: &mut Option<&mut InputHash>,
    piece: Option<GuestPiece>,
) -> Result<(), Failure> {
    match (hash, piece) {
        (Some(h), Some(p)) => h.add(p),
        _ => Ok(()),
    }
}
