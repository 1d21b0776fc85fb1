//! SHA-256 (FIPS 180-4) of several independent messages at once, for the guest hash's block
//! digests (`guest`): `d_i = SHA-256(b_i)` of 64 KiB blocks that do not depend on each other.
//!
//! On x86-64 with the SHA extensions (SHA-NI), SSSE3 and SSE4.1, one message's rounds are a
//! chain: each `sha256rnds2` (two rounds) needs the state the previous one produced, so a core
//! that could start one every cycle or two waits out the instruction's latency instead. Two
//! messages of equal length are compressed in one loop here, their instructions interleaved
//! (as Intel's isa-l_crypto `sha256_ni_x2` does), so the second message's rounds fill the
//! first's wait. Each message keeps its own state and schedule; nothing is shared but the
//! round constants, so the digests are exactly those of hashing each message alone (the unit
//! tests compare with RustCrypto's `sha2` on random messages of many lengths).
//!
//! Elsewhere (no SHA-NI, another architecture, or the `rustcrypto` feature, which means
//! "RustCrypto for every algorithm") every message is hashed alone by `sha2`, which itself
//! uses SHA-NI where it can. Measured in `benches/digest.rs` (`sha256_multi/*`) and
//! docs/benchmarks.md ("Guest hash: SHA-256 of two blocks at once").

use sha2::Digest as _;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// How many messages [`digest_all`] hashes at once on SHA-NI: the widest interleave that
/// measured fastest (`benches/digest.rs`).
pub const LANES: usize = 2;

/// Whether this CPU hashes [`LANES`] messages at once on SHA-NI.
pub fn interleaved() -> bool {
    !cfg!(feature = "rustcrypto") && ni::supported()
}

/// Whether this CPU hashes sixteen messages at once on AVX-512 ([`super::sha256_x16`]).
pub fn sixteen_lanes() -> bool {
    !cfg!(feature = "rustcrypto") && super::sha256_x16::supported()
}

/// The SHA-256 digest of every message, in order. Runs of sixteen neighbours of equal length
/// are hashed together where the CPU has AVX-512 ([`sixteen_lanes`]), pairs on SHA-NI
/// ([`interleaved`]), the rest one at a time with `sha2`; the digests are the same either way.
pub fn digest_all(messages: &[&[u8]]) -> Vec<Sha256Digest> {
    use super::sha256_x16::{LANES as X16, digest_x16};
    let mut out = Vec::with_capacity(messages.len());
    let (x16, x2) = (sixteen_lanes(), interleaved());
    let mut rest = messages;
    while !rest.is_empty() {
        if x16
            && let Some(sixteen) = rest.first_chunk::<X16>()
            && let Some(digests) = digest_x16(sixteen)
        {
            out.extend(digests);
            rest = &rest[X16..];
            continue;
        }
        match rest {
            [a, b, ..] if x2 && a.len() == b.len() => {
                out.extend(ni::digest_x2_checked(a, b));
                rest = &rest[2..];
            }
            [a, ..] => {
                out.push(digest_one(a));
                rest = &rest[1..];
            }
            [] => {}
        }
    }
    out
}

/// One message by RustCrypto's `sha2` (SHA-NI where the CPU has it).
pub fn digest_one(message: &[u8]) -> Sha256Digest {
    sha2::Sha256::digest(message).into()
}

/// The digests of `N` messages of one length, their compressions interleaved on SHA-NI; `None`
/// where the CPU lacks SHA-NI, SSSE3 or SSE4.1, or the lengths differ. For the benches, which
/// compare widths; [`digest_all`] is what the crate uses.
pub fn digest_interleaved<const N: usize>(messages: [&[u8]; N]) -> Option<[Sha256Digest; N]> {
    if !ni::supported() || N == 0 || messages.iter().any(|m| m.len() != messages[0].len()) {
        return None;
    }
    // SAFETY: `supported()` just confirmed SHA-NI, SSSE3 and SSE4.1, the features
    // `digest_n` is compiled for; the lengths are equal, as it requires.
    Some(unsafe { ni::digest_n(messages) })
}

/// The initial hash value (FIPS 180-4, 5.3.3).
pub(super) const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The round constants (FIPS 180-4, 4.2.2).
pub(super) const K: [u32; 64] = [
    0x428a_2f98,
    0x7137_4491,
    0xb5c0_fbcf,
    0xe9b5_dba5,
    0x3956_c25b,
    0x59f1_11f1,
    0x923f_82a4,
    0xab1c_5ed5,
    0xd807_aa98,
    0x1283_5b01,
    0x2431_85be,
    0x550c_7dc3,
    0x72be_5d74,
    0x80de_b1fe,
    0x9bdc_06a7,
    0xc19b_f174,
    0xe49b_69c1,
    0xefbe_4786,
    0x0fc1_9dc6,
    0x240c_a1cc,
    0x2de9_2c6f,
    0x4a74_84aa,
    0x5cb0_a9dc,
    0x76f9_88da,
    0x983e_5152,
    0xa831_c66d,
    0xb003_27c8,
    0xbf59_7fc7,
    0xc6e0_0bf3,
    0xd5a7_9147,
    0x06ca_6351,
    0x1429_2967,
    0x27b7_0a85,
    0x2e1b_2138,
    0x4d2c_6dfc,
    0x5338_0d13,
    0x650a_7354,
    0x766a_0abb,
    0x81c2_c92e,
    0x9272_2c85,
    0xa2bf_e8a1,
    0xa81a_664b,
    0xc24b_8b70,
    0xc76c_51a3,
    0xd192_e819,
    0xd699_0624,
    0xf40e_3585,
    0x106a_a070,
    0x19a4_c116,
    0x1e37_6c08,
    0x2748_774c,
    0x34b0_bcb5,
    0x391c_0cb3,
    0x4ed8_aa4a,
    0x5b9c_ca4f,
    0x682e_6ff3,
    0x748f_82ee,
    0x78a5_636f,
    0x84c8_7814,
    0x8cc7_0208,
    0x90be_fffa,
    0xa450_6ceb,
    0xbef9_a3f7,
    0xc671_78f2,
];

/// Bytes in one SHA-256 block.
pub(super) const BLOCK_LEN: usize = 64;

/// The padded end of a message (FIPS 180-4, 5.1.1): its last `len % 64` bytes, `0x80`, zeros
/// and the bit length, one or two blocks; returns the buffer and how many blocks it holds.
pub(super) fn padded_tail(message: &[u8]) -> ([u8; 2 * BLOCK_LEN], usize) {
    let tail = &message[message.len() - message.len() % BLOCK_LEN..];
    let mut buf = [0u8; 2 * BLOCK_LEN];
    buf[..tail.len()].copy_from_slice(tail);
    buf[tail.len()] = 0x80;
    // The length field takes the last 8 bytes; it fits after `0x80` in one block when the
    // tail is at most 55 bytes.
    let blocks = if tail.len() < BLOCK_LEN - 8 { 1 } else { 2 };
    let bits = (message.len() as u64).wrapping_mul(8);
    buf[blocks * BLOCK_LEN - 8..blocks * BLOCK_LEN].copy_from_slice(&bits.to_be_bytes());
    (buf, blocks)
}

#[cfg(target_arch = "x86_64")]
mod ni {
    use core::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
        _mm_setzero_si128, _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32,
        _mm_shuffle_epi8, _mm_shuffle_epi32, _mm_storeu_si128,
    };

    use super::{BLOCK_LEN, IV, K, Sha256Digest, padded_tail};

    /// Whether the CPU has what [`digest_n`] is compiled for.
    pub(super) fn supported() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }

    /// [`digest_n`] of two messages, for callers that checked [`supported`] and equal lengths
    /// (falls back to one at a time if either check fails, so it is safe to call anywhere).
    pub(super) fn digest_x2_checked(a: &[u8], b: &[u8]) -> [Sha256Digest; 2] {
        if a.len() == b.len() && supported() {
            // SAFETY: `supported()` confirmed the features `digest_n` is compiled for, and the
            // lengths are equal.
            unsafe { digest_n([a, b]) }
        } else {
            [super::digest_one(a), super::digest_one(b)]
        }
    }

    /// The digests of `N` messages, all of one length, compressed side by side.
    ///
    /// # Safety
    ///
    /// The CPU must have SHA-NI, SSSE3 and SSE4.1 ([`supported`]). Unequal lengths are not
    /// undefined behaviour (every read is bounds-checked by the slices) but give wrong digests
    /// for the longer messages, so callers check them.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn digest_n<const N: usize>(messages: [&[u8]; N]) -> [Sha256Digest; N] {
        let len = messages.first().map_or(0, |m| m.len());
        let full = len / BLOCK_LEN;
        let mut state = [init(); N];
        for i in 0..full {
            let blocks: [&[u8; BLOCK_LEN]; N] = core::array::from_fn(|l| block(messages[l], i));
            compress(&mut state, blocks);
        }
        let tails: [([u8; 2 * BLOCK_LEN], usize); N] =
            core::array::from_fn(|l| padded_tail(messages[l]));
        // Equal lengths give every message the same number of padding blocks.
        for i in 0..tails[0].1 {
            let blocks: [&[u8; BLOCK_LEN]; N] = core::array::from_fn(|l| block(&tails[l].0, i));
            compress(&mut state, blocks);
        }
        core::array::from_fn(|l| finish(state[l]))
    }

    /// Block `i` of `data`: the caller asks only for blocks it holds whole, so a short one (a
    /// caller's bug) is the zero block rather than a panic.
    #[inline]
    fn block(data: &[u8], i: usize) -> &[u8; BLOCK_LEN] {
        data.get(i * BLOCK_LEN..(i + 1) * BLOCK_LEN)
            .and_then(|b| b.try_into().ok())
            .unwrap_or(&[0u8; BLOCK_LEN])
    }

    /// SHA-NI keeps the state as two vectors, `ABEF` and `CDGH` (highest lane first).
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    /// The initial state in SHA-NI's order.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn init() -> State {
        // Lanes from the lowest: A B C D and E F G H as loaded from memory.
        // SAFETY: `IV[0..4]` and `IV[4..8]` are 16 readable bytes each; no alignment needed.
        let (dcba, hgfe) = unsafe {
            (
                _mm_loadu_si128(IV.as_ptr().cast()),
                _mm_loadu_si128(IV.as_ptr().add(4).cast()),
            )
        };
        let cdab = _mm_shuffle_epi32::<0xB1>(dcba);
        let efgh = _mm_shuffle_epi32::<0x1B>(hgfe);
        State {
            abef: _mm_alignr_epi8::<8>(cdab, efgh),
            cdgh: _mm_blend_epi16::<0xF0>(efgh, cdab),
        }
    }

    /// The big-endian digest of a final state (the inverse of [`init`]'s shuffle).
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn finish(s: State) -> Sha256Digest {
        let feba = _mm_shuffle_epi32::<0x1B>(s.abef);
        let dchg = _mm_shuffle_epi32::<0xB1>(s.cdgh);
        let dcba = _mm_blend_epi16::<0xF0>(feba, dchg);
        let hgfe = _mm_alignr_epi8::<8>(dchg, feba);
        let mut words = [0u32; 8];
        // SAFETY: `words` has 32 writable bytes, 16 at each of the two offsets; no alignment
        // needed.
        unsafe {
            _mm_storeu_si128(words.as_mut_ptr().cast(), dcba);
            _mm_storeu_si128(words.as_mut_ptr().add(4).cast(), hgfe);
        }
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(words) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// `K[4j..4j + 4]` as a vector.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn k4(j: usize) -> __m128i {
        let k: &[u32; 4] = K[4 * j..4 * j + 4].try_into().unwrap_or(&[0; 4]);
        // SAFETY: `k` is four u32, 16 readable bytes; no alignment needed.
        unsafe { _mm_loadu_si128(k.as_ptr().cast()) }
    }

    /// One 64-byte block of each of `N` messages into their states. Every step below is done
    /// for every message before the next step, so `N` independent chains are in flight.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn compress<const N: usize>(state: &mut [State; N], blocks: [&[u8; BLOCK_LEN]; N]) {
        // Big-endian words: reverse the bytes of each 32-bit lane.
        let bswap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
        let saved = *state;
        // The message schedule, four words per vector: `w[j % 4]` holds `W[4j..4j + 4]` when
        // rounds `4j..4j + 4` run, computed from the previous 16 words with `sha256msg1`
        // (`σ0` terms) and `sha256msg2` (`σ1` terms).
        let mut w = [[_mm_setzero_si128(); 4]; N];
        macro_rules! lanes {
            ($l:ident => $body:expr) => {
                for $l in 0..N {
                    $body;
                }
            };
        }
        macro_rules! rounds4 {
            ($j:expr) => {{
                const J: usize = $j;
                if J < 4 {
                    // SAFETY: each block is 64 readable bytes, 16 of them at `16 * J`
                    // (`J < 4`); no alignment needed.
                    lanes!(l => w[l][J % 4] = _mm_shuffle_epi8(
                        unsafe { _mm_loadu_si128(blocks[l].as_ptr().add(16 * J).cast()) },
                        bswap,
                    ));
                }
                let k = k4(J);
                let mut wk = [k; N];
                lanes!(l => wk[l] = _mm_add_epi32(w[l][J % 4], k));
                // Two rounds with the low two words of `W + K`...
                lanes!(l => state[l].cdgh =
                    _mm_sha256rnds2_epu32(state[l].cdgh, state[l].abef, wk[l]));
                if (3..15).contains(&J) {
                    // W[4(J+1)..]: the `σ1` half, now that W[4J..4J+4] is known.
                    lanes!(l => {
                        let t = _mm_alignr_epi8::<4>(w[l][J % 4], w[l][(J + 3) % 4]);
                        let next = _mm_add_epi32(w[l][(J + 1) % 4], t);
                        w[l][(J + 1) % 4] = _mm_sha256msg2_epu32(next, w[l][J % 4]);
                    });
                }
                // ...and two with the high two.
                lanes!(l => wk[l] = _mm_shuffle_epi32::<0x0E>(wk[l]));
                lanes!(l => state[l].abef =
                    _mm_sha256rnds2_epu32(state[l].abef, state[l].cdgh, wk[l]));
                if (1..13).contains(&J) {
                    // W[4(J+3)..]: the `σ0` half.
                    lanes!(l => w[l][(J + 3) % 4] =
                        _mm_sha256msg1_epu32(w[l][(J + 3) % 4], w[l][J % 4]));
                }
            }};
        }
        rounds4!(0);
        rounds4!(1);
        rounds4!(2);
        rounds4!(3);
        rounds4!(4);
        rounds4!(5);
        rounds4!(6);
        rounds4!(7);
        rounds4!(8);
        rounds4!(9);
        rounds4!(10);
        rounds4!(11);
        rounds4!(12);
        rounds4!(13);
        rounds4!(14);
        rounds4!(15);
        for l in 0..N {
            state[l].abef = _mm_add_epi32(state[l].abef, saved[l].abef);
            state[l].cdgh = _mm_add_epi32(state[l].cdgh, saved[l].cdgh);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod ni {
    use super::Sha256Digest;

    pub(super) fn supported() -> bool {
        false
    }

    pub(super) fn digest_x2_checked(a: &[u8], b: &[u8]) -> [Sha256Digest; 2] {
        [super::digest_one(a), super::digest_one(b)]
    }

    /// Never called: [`supported`] is false.
    pub(super) unsafe fn digest_n<const N: usize>(messages: [&[u8]; N]) -> [Sha256Digest; N] {
        core::array::from_fn(|l| super::digest_one(messages[l]))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A reproducible pseudo-random byte stream (xorshift64*); also `sha256_x16`'s tests'.
    pub(in crate::digest) fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    fn lengths() -> impl Iterator<Item = usize> {
        (0..=200).chain([55, 56, 63, 64, 65, 119, 120, 65535, 65536, 65537])
    }

    #[test]
    fn interleaved_digests_equal_sha2s() {
        let pool = random_bytes(7, 4 * 65537 + 64);
        for len in lengths() {
            // Unaligned slices: every message starts at an odd offset into the buffer.
            let msgs: Vec<&[u8]> = (0..4).map(|i| &pool[1 + i * (len + 3)..][..len]).collect();
            let want: Vec<Sha256Digest> = msgs.iter().map(|m| digest_one(m)).collect();
            assert_eq!(digest_all(&msgs), want, "digest_all, {len}");
            if ni::supported() {
                assert_eq!(
                    digest_interleaved([msgs[0]]).unwrap().to_vec(),
                    want[..1],
                    "x1 {len}"
                );
                assert_eq!(
                    digest_interleaved([msgs[0], msgs[1]]).unwrap().to_vec(),
                    want[..2],
                    "x2 {len}"
                );
                assert_eq!(
                    digest_interleaved([msgs[0], msgs[1], msgs[2], msgs[3]])
                        .unwrap()
                        .to_vec(),
                    want,
                    "x4 {len}"
                );
            }
        }
    }

    #[test]
    fn known_answers() {
        // FIPS 180-4 examples (NIST's SHA256.pdf): "abc" and the empty string.
        let abc = digest_interleaved([b"abc".as_slice(), b"abc".as_slice()]);
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        if let Some([a, b]) = abc {
            assert_eq!(hex::encode(a), want);
            assert_eq!(hex::encode(b), want);
        }
        let empty = digest_all(&[b"".as_slice(), b"".as_slice(), b"".as_slice()]);
        for d in empty {
            assert_eq!(
                hex::encode(d),
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            );
        }
    }

    #[test]
    fn runs_of_sixteen_and_their_remainders_keep_their_order() {
        // 16 equal (one AVX-512 run), 5 equal then a different length (breaks the next run of
        // sixteen: pairs and singles), then 19 equal (a run of sixteen and three left over).
        let pool = random_bytes(13, 45 * 4200);
        let lens: Vec<usize> = [vec![4096; 16], vec![4096; 5], vec![100], vec![4160; 19]].concat();
        let mut at = 0;
        let msgs: Vec<&[u8]> = lens
            .iter()
            .map(|&n| {
                at += 3;
                let m = &pool[at..at + n];
                at += n;
                m
            })
            .collect();
        let want: Vec<Sha256Digest> = msgs.iter().map(|m| digest_one(m)).collect();
        assert_eq!(digest_all(&msgs), want);
    }

    #[test]
    fn mixed_lengths_keep_their_order() {
        let pool = random_bytes(11, 400_000);
        let lens = [65536, 65536, 100, 65536, 0, 0, 65536, 64, 64, 65536];
        let mut at = 0;
        let msgs: Vec<&[u8]> = lens
            .iter()
            .map(|&n| {
                at += 5;
                let m = &pool[at..at + n];
                at += n;
                m
            })
            .collect();
        let want: Vec<Sha256Digest> = msgs.iter().map(|m| digest_one(m)).collect();
        assert_eq!(digest_all(&msgs), want);
        assert_eq!(digest_interleaved([msgs[0], msgs[2]]), None);
    }
}
