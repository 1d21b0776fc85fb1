//! MD5 (RFC 1321), written for speed on one core.
//!
//! MD5 is a chain: every step needs the previous step's result, so its speed is the length of
//! that dependency chain, not the number of instructions. RustCrypto's `md-5` computes the
//! same function, but the compiler reassociates each step's additions so that the round
//! constant and the message word are added *after* the boolean function, putting two extra
//! additions on the chain (measured here: about 680 MB/s against OpenSSL's 800). This module
//! keeps them off it: `a + M[g] + K[i]` (and, in round 2, the half of `G` that does not depend
//! on the newest word) is computed early and passed through an empty `asm!` block (elsewhere
//! than x86-64, [`core::hint::black_box`]), which stops the compiler from folding it back into
//! the chain. `black_box` did the same but sent each value through the stack, a store and a load
//! per step; the empty `asm!` keeps it in a register (measured on a Zen 4 EPYC: 650-680 MB/s with
//! `black_box`, 755-790 without the round trip; docs/benchmarks.md, "Speed: hash"). The step then
//! costs `f(b, c, d)`, one add, one rotate, one add: about 4.5 cycles per byte, OpenSSL's assembly
//! speed (see `benches/digest.rs` and the section "Speed: hash" of docs/benchmarks.md).
//!
//! Round 2 uses `G = (b & d) + (c & !d)` (the two masks never overlap, so `+` equals `|`) so
//! that `c & !d` is ready before `b` is. The output equals `md5sum`'s and RustCrypto's; the
//! unit tests below and `tests/it/hash.rs` check both.

use super::block::BlockBuffer;

/// Bytes in one MD5 block.
pub const BLOCK_LEN: usize = 64;

/// The initial chaining value (RFC 1321, section 3.3).
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The sine-derived round constants `K[i] = floor(abs(sin(i + 1)) * 2^32)` (RFC 1321, 3.4).
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// A value the compiler must treat as opaque, so that the additions before it stay before it.
#[inline(always)]
fn early(x: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        let mut x = x;
        // SAFETY: the template is empty: no instruction runs, no memory, stack or flag is
        // touched; the compiler only loses sight of how `x` was computed.
        unsafe {
            core::arch::asm!("/* {x:e} */", x = inout(reg) x, options(pure, nomem, nostack, preserves_flags));
        }
        x
    }
    #[cfg(not(target_arch = "x86_64"))]
    core::hint::black_box(x)
}

/// One MD5 step: `a = b + rotl(a + f(b, c, d) + M[g] + K[i], s)`, with the inputs that do not
/// depend on `b` summed first (see the module comment).
macro_rules! step {
    (F, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:expr) => {
        let t = early($a.wrapping_add($m.wrapping_add($k)));
        $a = t
            .wrapping_add((($c ^ $d) & $b) ^ $d)
            .rotate_left($s)
            .wrapping_add($b);
    };
    (G, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:expr) => {
        let t = early($a.wrapping_add($m.wrapping_add($k)).wrapping_add($c & !$d));
        $a = t.wrapping_add($b & $d).rotate_left($s).wrapping_add($b);
    };
    (H, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:expr) => {
        let t = early($a.wrapping_add($m.wrapping_add($k)));
        $a = t
            .wrapping_add($b ^ ($c ^ $d))
            .rotate_left($s)
            .wrapping_add($b);
    };
    (I, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:expr) => {
        let t = early($a.wrapping_add($m.wrapping_add($k)));
        $a = t
            .wrapping_add($c ^ ($b | !$d))
            .rotate_left($s)
            .wrapping_add($b);
    };
}

/// Runs the compression function over one 64-byte block.
#[inline(always)]
fn compress_block(state: &mut [u32; 4], block: &[u8; BLOCK_LEN]) {
    let mut x = [0u32; 16];
    for (word, bytes) in x.iter_mut().zip(block.as_chunks::<4>().0) {
        *word = u32::from_le_bytes(*bytes);
    }
    let [mut a, mut b, mut c, mut d] = *state;

    step!(F, a, b, c, d, x[0], K[0], 7);
    step!(F, d, a, b, c, x[1], K[1], 12);
    step!(F, c, d, a, b, x[2], K[2], 17);
    step!(F, b, c, d, a, x[3], K[3], 22);
    step!(F, a, b, c, d, x[4], K[4], 7);
    step!(F, d, a, b, c, x[5], K[5], 12);
    step!(F, c, d, a, b, x[6], K[6], 17);
    step!(F, b, c, d, a, x[7], K[7], 22);
    step!(F, a, b, c, d, x[8], K[8], 7);
    step!(F, d, a, b, c, x[9], K[9], 12);
    step!(F, c, d, a, b, x[10], K[10], 17);
    step!(F, b, c, d, a, x[11], K[11], 22);
    step!(F, a, b, c, d, x[12], K[12], 7);
    step!(F, d, a, b, c, x[13], K[13], 12);
    step!(F, c, d, a, b, x[14], K[14], 17);
    step!(F, b, c, d, a, x[15], K[15], 22);

    step!(G, a, b, c, d, x[1], K[16], 5);
    step!(G, d, a, b, c, x[6], K[17], 9);
    step!(G, c, d, a, b, x[11], K[18], 14);
    step!(G, b, c, d, a, x[0], K[19], 20);
    step!(G, a, b, c, d, x[5], K[20], 5);
    step!(G, d, a, b, c, x[10], K[21], 9);
    step!(G, c, d, a, b, x[15], K[22], 14);
    step!(G, b, c, d, a, x[4], K[23], 20);
    step!(G, a, b, c, d, x[9], K[24], 5);
    step!(G, d, a, b, c, x[14], K[25], 9);
    step!(G, c, d, a, b, x[3], K[26], 14);
    step!(G, b, c, d, a, x[8], K[27], 20);
    step!(G, a, b, c, d, x[13], K[28], 5);
    step!(G, d, a, b, c, x[2], K[29], 9);
    step!(G, c, d, a, b, x[7], K[30], 14);
    step!(G, b, c, d, a, x[12], K[31], 20);

    step!(H, a, b, c, d, x[5], K[32], 4);
    step!(H, d, a, b, c, x[8], K[33], 11);
    step!(H, c, d, a, b, x[11], K[34], 16);
    step!(H, b, c, d, a, x[14], K[35], 23);
    step!(H, a, b, c, d, x[1], K[36], 4);
    step!(H, d, a, b, c, x[4], K[37], 11);
    step!(H, c, d, a, b, x[7], K[38], 16);
    step!(H, b, c, d, a, x[10], K[39], 23);
    step!(H, a, b, c, d, x[13], K[40], 4);
    step!(H, d, a, b, c, x[0], K[41], 11);
    step!(H, c, d, a, b, x[3], K[42], 16);
    step!(H, b, c, d, a, x[6], K[43], 23);
    step!(H, a, b, c, d, x[9], K[44], 4);
    step!(H, d, a, b, c, x[12], K[45], 11);
    step!(H, c, d, a, b, x[15], K[46], 16);
    step!(H, b, c, d, a, x[2], K[47], 23);

    step!(I, a, b, c, d, x[0], K[48], 6);
    step!(I, d, a, b, c, x[7], K[49], 10);
    step!(I, c, d, a, b, x[14], K[50], 15);
    step!(I, b, c, d, a, x[5], K[51], 21);
    step!(I, a, b, c, d, x[12], K[52], 6);
    step!(I, d, a, b, c, x[3], K[53], 10);
    step!(I, c, d, a, b, x[10], K[54], 15);
    step!(I, b, c, d, a, x[1], K[55], 21);
    step!(I, a, b, c, d, x[8], K[56], 6);
    step!(I, d, a, b, c, x[15], K[57], 10);
    step!(I, c, d, a, b, x[6], K[58], 15);
    step!(I, b, c, d, a, x[13], K[59], 21);
    step!(I, a, b, c, d, x[4], K[60], 6);
    step!(I, d, a, b, c, x[11], K[61], 10);
    step!(I, c, d, a, b, x[2], K[62], 15);
    step!(I, b, c, d, a, x[9], K[63], 21);

    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// Runs the compression function over whole blocks.
pub fn compress(state: &mut [u32; 4], blocks: &[[u8; BLOCK_LEN]]) {
    for block in blocks {
        compress_block(state, block);
    }
}

/// A streaming MD5 computation.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    /// Bytes of an incomplete block, waiting for more input.
    pending: BlockBuffer<BLOCK_LEN>,
    /// Total bytes hashed so far (the length field is this times 8, modulo 2^64).
    total: u64,
}

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

impl Md5 {
    /// A fresh computation.
    pub fn new() -> Self {
        Self {
            state: INIT,
            pending: BlockBuffer::new(),
            total: 0,
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        let state = &mut self.state;
        self.pending.update(data, |blocks| compress(state, blocks));
    }

    /// Pads the message (RFC 1321, 3.1 and 3.2) and returns the 16-byte digest.
    pub fn finalize(mut self) -> [u8; 16] {
        let bit_len = self.total.wrapping_mul(8);
        let state = &mut self.state;
        self.pending
            .finish(&bit_len.to_le_bytes(), |blocks| compress(state, blocks));
        let mut out = [0u8; 16];
        for (bytes, word) in out.as_chunks_mut::<4>().0.iter_mut().zip(self.state) {
            *bytes = word.to_le_bytes();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5(data: &[u8]) -> String {
        let mut h = Md5::new();
        h.update(data);
        hex::encode(h.finalize())
    }

    #[test]
    fn rfc_1321_test_suite() {
        assert_eq!(md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5(b"a"), "0cc175b9c0f1b6a831c399e269772661");
        assert_eq!(md5(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(md5(b"message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
        assert_eq!(
            md5(b"abcdefghijklmnopqrstuvwxyz"),
            "c3fcd3d76192e4007dfb496cca67e13b"
        );
        assert_eq!(
            md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn equals_rustcrypto_md5_for_every_length_and_split() {
        use ::md5::Digest as _;
        let data: Vec<u8> = (0..700u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        for len in 0..data.len() {
            let want = hex::encode(::md5::Md5::digest(&data[..len]));
            assert_eq!(md5(&data[..len]), want, "length {len}");
            // The same bytes fed in two uneven pieces.
            let split = len / 3;
            let mut h = Md5::new();
            h.update(&data[..split]);
            h.update(&data[split..len]);
            assert_eq!(
                hex::encode(h.finalize()),
                want,
                "length {len} split at {split}"
            );
        }
    }
}
