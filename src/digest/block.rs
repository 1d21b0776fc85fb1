//! The Merkle–Damgård framing shared by this crate's MD5 and SHA-512: input gathers into
//! whole blocks for the compression function, and the message ends with a 0x80 byte, zeros,
//! and its length in the last bytes of the last block (RFC 1321 3.1-3.2, FIPS 180-4 5.1).

/// Bytes waiting for a whole `N`-byte block.
#[derive(Clone)]
pub(crate) struct BlockBuffer<const N: usize> {
    pending: [u8; N],
    len: usize,
}

impl<const N: usize> BlockBuffer<N> {
    /// An empty buffer.
    pub(crate) const fn new() -> Self {
        Self {
            pending: [0; N],
            len: 0,
        }
    }

    /// Feeds `data`: `compress` gets every completed block, in order, the blocks of `data`
    /// itself in one call without a copy.
    #[inline]
    pub(crate) fn update(&mut self, mut data: &[u8], mut compress: impl FnMut(&[[u8; N]])) {
        if self.len > 0 {
            let take = (N - self.len).min(data.len());
            let (head, rest) = data.split_at(take);
            self.pending[self.len..self.len + take].copy_from_slice(head);
            self.len += take;
            data = rest;
            if self.len < N {
                return;
            }
            compress(&[self.pending]);
            self.len = 0;
        }
        let (blocks, tail) = data.as_chunks::<N>();
        compress(blocks);
        self.pending[..tail.len()].copy_from_slice(tail);
        self.len = tail.len();
    }

    /// Ends the message: the pending bytes, 0x80, zeros, and `length` (the bit length as the
    /// algorithm encodes it) in the last bytes, in one block or two when it does not fit.
    pub(crate) fn finish(&self, length: &[u8], compress: impl FnOnce(&[[u8; N]])) {
        let mut tail = [[0u8; N]; 2];
        let bytes = tail.as_flattened_mut();
        bytes[..self.len].copy_from_slice(&self.pending[..self.len]);
        bytes[self.len] = 0x80;
        let blocks = if self.len < N - length.len() { 1 } else { 2 };
        let end = blocks * N;
        bytes[end - length.len()..end].copy_from_slice(length);
        compress(&tail[..blocks]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_out_whole_and_in_order_whatever_the_pieces() {
        let data: Vec<u8> = (0..200u8).collect();
        for cut in [0, 1, 7, 8, 9, 63, 100, 200] {
            let mut b = BlockBuffer::<8>::new();
            let mut seen: Vec<u8> = Vec::new();
            b.update(&data[..cut], |blocks: &[[u8; 8]]| {
                seen.extend(blocks.as_flattened())
            });
            b.update(&data[cut..], |blocks: &[[u8; 8]]| {
                seen.extend(blocks.as_flattened())
            });
            assert_eq!(seen, data, "cut at {cut}");
        }
    }

    #[test]
    fn padding_takes_a_second_block_only_when_the_length_does_not_fit() {
        for (fed, blocks) in [(0, 1), (5, 1), (6, 2), (7, 2)] {
            let mut b = BlockBuffer::<8>::new();
            b.update(&[0xaa; 7][..fed], |_| {});
            let mut out: Vec<u8> = Vec::new();
            b.finish(&[0x11, 0x22], |t: &[[u8; 8]]| out.extend(t.as_flattened()));
            assert_eq!(out.len(), blocks * 8, "{fed} bytes");
            assert_eq!(out[fed], 0x80);
            assert_eq!(&out[out.len() - 2..], [0x11, 0x22]);
            assert!(out[fed + 1..out.len() - 2].iter().all(|&x| x == 0));
        }
    }
}
