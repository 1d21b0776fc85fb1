//! SHA-256 (FIPS 180-4) of sixteen equal-length messages at once on AVX-512: one message per
//! 32-bit lane of a 512-bit register, the rounds computed for all sixteen with the same
//! instructions (the multi-buffer layout of Intel's isa-l_crypto `sha256_mb` x16).
//!
//! Why, beside SHA-NI: on the Xeon (Emerald Rapids) this project is measured on, SHA-NI
//! gives 1.28 GiB/s per core for one stream and 1.40 GiB/s for two interleaved (the SHA
//! instructions share one port, so more streams add nothing), while sixteen lanes of plain
//! rotates, adds and three-input logic (`vprold`, `vpaddd`, `vpternlogd`) give 2.13 GiB/s
//! (`benches/digest.rs`, `sha256_multi/x16-avx512`; docs/benchmarks.md "Speed: hash --guest
//! and convert --verify"). The guest hash's 64 KiB block digests are independent and of one
//! length, which is the case this serves.
//!
//! Every lane keeps its own state; nothing crosses lanes but the shared round constant, so the
//! digests are exactly those of hashing each message alone (the unit tests compare with
//! RustCrypto's `sha2`).

use super::sha256_multi::Sha256Digest;

/// Messages hashed at once.
pub const LANES: usize = 16;

/// Whether the CPU has what [`digest_x16`] is compiled for (AVX-512 F and BW).
pub fn supported() -> bool {
    imp::supported()
}

/// The digests of sixteen messages of one length, or `None` where the CPU lacks AVX-512 F/BW
/// or the lengths differ.
pub fn digest_x16(messages: &[&[u8]; LANES]) -> Option<[Sha256Digest; LANES]> {
    let len = messages[0].len();
    if !supported() || messages.iter().any(|m| m.len() != len) {
        return None;
    }
    // SAFETY: `supported()` confirmed AVX-512 F and BW, the features `digest` is compiled
    // for; the lengths are equal, as it requires.
    Some(unsafe { imp::digest(messages) })
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::x86_64::{
        __m512i, _mm_set_epi32, _mm512_add_epi32, _mm512_broadcast_i32x4, _mm512_i32gather_epi32,
        _mm512_ror_epi32, _mm512_set_epi32, _mm512_set1_epi32, _mm512_shuffle_epi8,
        _mm512_srli_epi32, _mm512_storeu_si512, _mm512_ternarylogic_epi32,
    };

    use super::super::sha256_multi::{BLOCK_LEN, IV, K, Sha256Digest, padded_tail};
    use super::LANES;

    pub(super) fn supported() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }

    /// `vpternlogd` truth tables (bit `4a + 2b + c` is the result for inputs `a, b, c`).
    const XOR3: i32 = 0x96;
    /// `a ? b : c`: Ch(e, f, g).
    const CHOOSE: i32 = 0xCA;
    /// The majority of three: Maj(a, b, c).
    const MAJORITY: i32 = 0xE8;

    /// The digests of sixteen messages, all of one length.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512 F and BW ([`supported`]). Unequal lengths are not undefined
    /// behaviour (every message block is copied out through a bounds-checked slice) but give
    /// wrong digests, so callers check them.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn digest(messages: &[&[u8]; LANES]) -> [Sha256Digest; LANES] {
        let len = messages[0].len();
        let mut state: [__m512i; 8] = core::array::from_fn(|i| _mm512_set1_epi32(IV[i] as i32));
        // Block `i` of every lane, copied side by side: row `l` is lane `l`'s 16 words.
        let mut rows = [[0u32; 16]; LANES];
        for i in 0..len / BLOCK_LEN {
            for (row, message) in rows.iter_mut().zip(messages) {
                fill_row(row, message.get(i * BLOCK_LEN..(i + 1) * BLOCK_LEN));
            }
            compress(&mut state, &rows);
        }
        let tails: [([u8; 2 * BLOCK_LEN], usize); LANES] =
            core::array::from_fn(|l| padded_tail(messages[l]));
        // Equal lengths give every lane the same number of padding blocks.
        for i in 0..tails[0].1 {
            for (row, (tail, _)) in rows.iter_mut().zip(&tails) {
                fill_row(row, tail.get(i * BLOCK_LEN..(i + 1) * BLOCK_LEN));
            }
            compress(&mut state, &rows);
        }
        let mut words = [[0u32; LANES]; 8];
        for (out, s) in words.iter_mut().zip(state) {
            // SAFETY: `out` is 16 u32, 64 writable bytes; no alignment needed.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), s) };
        }
        core::array::from_fn(|l| {
            let mut digest = [0u8; 32];
            for (o, w) in digest.chunks_exact_mut(4).zip(&words) {
                o.copy_from_slice(&w[l].to_be_bytes());
            }
            digest
        })
    }

    /// Copies one 64-byte block into a row as it lies in memory (the byte swap to big-endian
    /// words is done on the gathered columns); a missing block (a caller's bug) is zeros.
    #[inline]
    fn fill_row(row: &mut [u32; 16], block: Option<&[u8]>) {
        match block {
            Some(block) => {
                for (w, b) in row.iter_mut().zip(block.chunks_exact(4)) {
                    *w = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            None => *row = [0; 16],
        }
    }

    /// One block of every lane into the states (FIPS 180-4, 6.2.2).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn compress(state: &mut [__m512i; 8], rows: &[[u32; 16]; LANES]) {
        // Column `t` of `rows`, lane `l` = word `t` of lane `l`'s block: a gather with a
        // stride of one row (64 bytes).
        let stride = _mm512_set_epi32(
            15 * 16,
            14 * 16,
            13 * 16,
            12 * 16,
            11 * 16,
            10 * 16,
            9 * 16,
            8 * 16,
            7 * 16,
            6 * 16,
            5 * 16,
            4 * 16,
            3 * 16,
            2 * 16,
            16,
            0,
        );
        // Reverses the bytes of every 32-bit word (the message is big-endian).
        // (`vpshufb` shuffles within each 128-bit quarter: one pattern, broadcast to all four.)
        let swap = _mm512_broadcast_i32x4(_mm_set_epi32(
            0x0c0d_0e0f,
            0x0809_0a0b,
            0x0405_0607,
            0x0001_0203,
        ));
        let base: *const i32 = rows.as_ptr().cast();
        let mut w: [__m512i; 16] = core::array::from_fn(|t| {
            // SAFETY: the offsets are `t + 16 l` words for `l < 16`, `t < 16`: inside the
            // 256 words of `rows`.
            let column = unsafe { _mm512_i32gather_epi32::<4>(stride, base.add(t)) };
            _mm512_shuffle_epi8(column, swap)
        });
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for t in 0..64 {
            let wt = if t < 16 {
                w[t]
            } else {
                // W_t = σ1(W_{t-2}) + W_{t-7} + σ0(W_{t-15}) + W_{t-16}, in a ring of 16.
                let w2 = w[(t - 2) % 16];
                let w15 = w[(t - 15) % 16];
                let s0 = _mm512_ternarylogic_epi32::<XOR3>(
                    _mm512_ror_epi32::<7>(w15),
                    _mm512_ror_epi32::<18>(w15),
                    _mm512_srli_epi32::<3>(w15),
                );
                let s1 = _mm512_ternarylogic_epi32::<XOR3>(
                    _mm512_ror_epi32::<17>(w2),
                    _mm512_ror_epi32::<19>(w2),
                    _mm512_srli_epi32::<10>(w2),
                );
                let next = _mm512_add_epi32(
                    _mm512_add_epi32(s1, w[(t - 7) % 16]),
                    _mm512_add_epi32(s0, w[t % 16]),
                );
                w[t % 16] = next;
                next
            };
            let big_s1 = _mm512_ternarylogic_epi32::<XOR3>(
                _mm512_ror_epi32::<6>(e),
                _mm512_ror_epi32::<11>(e),
                _mm512_ror_epi32::<25>(e),
            );
            let ch = _mm512_ternarylogic_epi32::<CHOOSE>(e, f, g);
            let kw = _mm512_add_epi32(_mm512_set1_epi32(K[t] as i32), wt);
            let t1 = _mm512_add_epi32(_mm512_add_epi32(h, big_s1), _mm512_add_epi32(ch, kw));
            let big_s0 = _mm512_ternarylogic_epi32::<XOR3>(
                _mm512_ror_epi32::<2>(a),
                _mm512_ror_epi32::<13>(a),
                _mm512_ror_epi32::<22>(a),
            );
            let maj = _mm512_ternarylogic_epi32::<MAJORITY>(a, b, c);
            let t2 = _mm512_add_epi32(big_s0, maj);
            h = g;
            g = f;
            f = e;
            e = _mm512_add_epi32(d, t1);
            d = c;
            c = b;
            b = a;
            a = _mm512_add_epi32(t1, t2);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = _mm512_add_epi32(*s, v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::super::sha256_multi::Sha256Digest;
    use super::LANES;

    pub(super) fn supported() -> bool {
        false
    }

    /// Never called: [`supported`] is false here.
    pub(super) unsafe fn digest(messages: &[&[u8]; LANES]) -> [Sha256Digest; LANES] {
        core::array::from_fn(|l| super::super::sha256_multi::digest_one(messages[l]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_multi::digest_one;
    use crate::digest::sha256_multi::tests::random_bytes;

    #[test]
    fn sixteen_lanes_equal_sha2() {
        if !supported() {
            return;
        }
        let lengths = (0..=200).chain([255, 256, 1000, 65535, 65536, 65537]);
        let pool = random_bytes(3, 16 * 65540 + 64);
        for len in lengths {
            // Unaligned, distinct messages: lane `l` starts at `1 + l (len + 3)`.
            let messages: [&[u8]; LANES] =
                core::array::from_fn(|l| &pool[1 + l * (len + 3)..][..len]);
            let want: [Sha256Digest; LANES] = core::array::from_fn(|l| digest_one(messages[l]));
            assert_eq!(digest_x16(&messages), Some(want), "length {len}");
        }
    }

    #[test]
    fn unequal_lengths_are_refused() {
        let a = [1u8; 100];
        let mut messages: [&[u8]; LANES] = [&a; LANES];
        messages[7] = &a[..99];
        assert_eq!(digest_x16(&messages), None);
    }
}
