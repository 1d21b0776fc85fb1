//! SHA-512 and SHA-384 (FIPS 180-4) for x86-64 CPUs with AVX2 and BMI1/BMI2, written for
//! speed on one core; RustCrypto's `sha2` serves every other CPU (see `backend`).
//!
//! SHA-512's rounds are a scalar chain, but its message schedule (`W[16..80]`) is independent
//! work that a scalar implementation interleaves with the rounds, competing for the same
//! integer ALUs. Here the schedule is computed two words at a time in 128-bit vector
//! registers (the vector units are otherwise idle), `W + K` is stored for the rounds, and the
//! rounds use BMI2's `rorx` and BMI1's `andn` (three-operand rotate, and-not) for fewer
//! instructions. All 80 rounds are straight-line code, so the schedule window stays in
//! registers: a loop over groups of 16 rounds shifted it through the stack, about 52
//! instructions per round against 35 now, and the rounds are bound by how many instructions the
//! core can issue per cycle (`llvm-mca -mcpu=znver3`: 670 cycles per block before, 490 after).
//! Where the CPU also has AVX-512F and VL, the same code is compiled a second time with the
//! schedule's rotates as `vprorq` and its three-way XORs as `vpternlogq` (2529 instead of
//! 2776 instructions per block; 7 % faster on a Zen 4 EPYC), chosen per call by the CPU's
//! features. Measured on Zen 5 before those changes (`benches/digest.rs`, `benches/digest-backends/`): about 1030
//! MB/s against 780-880 for RustCrypto's AVX2 backend and 800 for ring / aws-lc (OpenSSL's
//! own assembly: 1080). The output equals `sha512sum` / `sha384sum` and RustCrypto's; unit
//! tests below compare every length up to 700 bytes, split anywhere.

use super::block::BlockBuffer;

/// Bytes in one SHA-512 block.
pub const BLOCK_LEN: usize = 128;

/// Initial hash value of SHA-512 (FIPS 180-4, 5.3.5).
const IV_512: [u64; 8] = [
    0x6a09_e667_f3bc_c908,
    0xbb67_ae85_84ca_a73b,
    0x3c6e_f372_fe94_f82b,
    0xa54f_f53a_5f1d_36f1,
    0x510e_527f_ade6_82d1,
    0x9b05_688c_2b3e_6c1f,
    0x1f83_d9ab_fb41_bd6b,
    0x5be0_cd19_137e_2179,
];

/// Initial hash value of SHA-384 (FIPS 180-4, 5.3.4).
const IV_384: [u64; 8] = [
    0xcbbb_9d5d_c105_9ed8,
    0x629a_292a_367c_d507,
    0x9159_015a_3070_dd17,
    0x152f_ecd8_f70e_5939,
    0x6733_2667_ffc0_0b31,
    0x8eb4_4a87_6858_1511,
    0xdb0c_2e0d_64f9_8fa7,
    0x47b5_481d_befa_4fa4,
];

/// The round constants (FIPS 180-4, 4.2.3).
const K: [u64; 80] = [
    0x428a_2f98_d728_ae22,
    0x7137_4491_23ef_65cd,
    0xb5c0_fbcf_ec4d_3b2f,
    0xe9b5_dba5_8189_dbbc,
    0x3956_c25b_f348_b538,
    0x59f1_11f1_b605_d019,
    0x923f_82a4_af19_4f9b,
    0xab1c_5ed5_da6d_8118,
    0xd807_aa98_a303_0242,
    0x1283_5b01_4570_6fbe,
    0x2431_85be_4ee4_b28c,
    0x550c_7dc3_d5ff_b4e2,
    0x72be_5d74_f27b_896f,
    0x80de_b1fe_3b16_96b1,
    0x9bdc_06a7_25c7_1235,
    0xc19b_f174_cf69_2694,
    0xe49b_69c1_9ef1_4ad2,
    0xefbe_4786_384f_25e3,
    0x0fc1_9dc6_8b8c_d5b5,
    0x240c_a1cc_77ac_9c65,
    0x2de9_2c6f_592b_0275,
    0x4a74_84aa_6ea6_e483,
    0x5cb0_a9dc_bd41_fbd4,
    0x76f9_88da_8311_53b5,
    0x983e_5152_ee66_dfab,
    0xa831_c66d_2db4_3210,
    0xb003_27c8_98fb_213f,
    0xbf59_7fc7_beef_0ee4,
    0xc6e0_0bf3_3da8_8fc2,
    0xd5a7_9147_930a_a725,
    0x06ca_6351_e003_826f,
    0x1429_2967_0a0e_6e70,
    0x27b7_0a85_46d2_2ffc,
    0x2e1b_2138_5c26_c926,
    0x4d2c_6dfc_5ac4_2aed,
    0x5338_0d13_9d95_b3df,
    0x650a_7354_8baf_63de,
    0x766a_0abb_3c77_b2a8,
    0x81c2_c92e_47ed_aee6,
    0x9272_2c85_1482_353b,
    0xa2bf_e8a1_4cf1_0364,
    0xa81a_664b_bc42_3001,
    0xc24b_8b70_d0f8_9791,
    0xc76c_51a3_0654_be30,
    0xd192_e819_d6ef_5218,
    0xd699_0624_5565_a910,
    0xf40e_3585_5771_202a,
    0x106a_a070_32bb_d1b8,
    0x19a4_c116_b8d2_d0c8,
    0x1e37_6c08_5141_ab53,
    0x2748_774c_df8e_eb99,
    0x34b0_bcb5_e19b_48a8,
    0x391c_0cb3_c5c9_5a63,
    0x4ed8_aa4a_e341_8acb,
    0x5b9c_ca4f_7763_e373,
    0x682e_6ff3_d6b2_b8a3,
    0x748f_82ee_5def_b2fc,
    0x78a5_636f_4317_2f60,
    0x84c8_7814_a1f0_ab72,
    0x8cc7_0208_1a64_39ec,
    0x90be_fffa_2363_1e28,
    0xa450_6ceb_de82_bde9,
    0xbef9_a3f7_b2c6_7915,
    0xc671_78f2_e372_532b,
    0xca27_3ece_ea26_619c,
    0xd186_b8c7_21c0_c207,
    0xeada_7dd6_cde0_eb1e,
    0xf57d_4f7f_ee6e_d178,
    0x06f0_67aa_7217_6fba,
    0x0a63_7dc5_a2c8_98a6,
    0x113f_9804_bef9_0dae,
    0x1b71_0b35_131c_471b,
    0x28db_77f5_2304_7d84,
    0x32ca_ab7b_40c7_2493,
    0x3c9e_be0a_15c9_bebc,
    0x431d_67c4_9c10_0d4c,
    0x4cc5_d4be_cb3e_42b6,
    0x597f_299c_fc65_7e2a,
    0x5fcb_6fab_3ad6_faec,
    0x6c44_198c_4a47_5817,
];

/// A streaming SHA-512 or SHA-384 computation on the accelerated path.
#[derive(Clone)]
pub struct Sha512 {
    state: [u64; 8],
    pending: BlockBuffer<BLOCK_LEN>,
    /// Total bytes hashed (the length field is this times 8, modulo 2^128).
    total: u128,
    /// 64 for SHA-512, 48 for SHA-384.
    out_len: usize,
}

impl Sha512 {
    /// Whether this CPU has what the accelerated path needs (AVX2, BMI1, BMI2).
    pub fn supported() -> bool {
        accel::supported()
    }

    /// A SHA-512 computation, or `None` on a CPU without AVX2/BMI.
    pub fn new_512() -> Option<Self> {
        Self::with_iv(IV_512, 64)
    }

    /// A SHA-384 computation, or `None` on a CPU without AVX2/BMI.
    pub fn new_384() -> Option<Self> {
        Self::with_iv(IV_384, 48)
    }

    fn with_iv(state: [u64; 8], out_len: usize) -> Option<Self> {
        Self::supported().then_some(Self {
            state,
            pending: BlockBuffer::new(),
            total: 0,
            out_len,
        })
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u128);
        let state = &mut self.state;
        self.pending
            .update(data, |blocks| accel::compress(state, blocks));
    }

    /// Pads the message (FIPS 180-4, 5.1.2) and returns the digest.
    pub fn finalize(mut self) -> Vec<u8> {
        let bit_len = self.total.wrapping_mul(8);
        let state = &mut self.state;
        self.pending.finish(&bit_len.to_be_bytes(), |blocks| {
            accel::compress(state, blocks)
        });
        let mut out: Vec<u8> = self.state.iter().flat_map(|w| w.to_be_bytes()).collect();
        out.truncate(self.out_len);
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod accel {
    use core::arch::x86_64::{
        __m128i, _mm_add_epi64, _mm_alignr_epi8, _mm_loadu_si128, _mm_or_si128, _mm_ror_epi64,
        _mm_setr_epi8, _mm_setzero_si128, _mm_shuffle_epi8, _mm_slli_epi64, _mm_srli_epi64,
        _mm_storeu_si128, _mm_ternarylogic_epi64, _mm_xor_si128,
    };

    use super::{BLOCK_LEN, K};

    pub(super) fn supported() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
    }

    /// Whether the schedule can use AVX-512's 64-bit rotate and three-way XOR on 128-bit
    /// vectors (AVX-512F + VL: Zen 4, Zen 5, Intel since Skylake-SP).
    pub(super) fn has_avx512vl() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }

    /// Compresses whole blocks. Callers hold a `Sha512`, which exists only when
    /// [`supported`] said yes.
    pub(super) fn compress(state: &mut [u64; 8], blocks: &[[u8; BLOCK_LEN]]) {
        if blocks.is_empty() {
            return;
        }
        if has_avx512vl() {
            // SAFETY: `supported()` confirmed AVX2, BMI1 and BMI2 before this `Sha512` was
            // made, and `has_avx512vl()` just confirmed AVX-512F and VL.
            unsafe { compress_avx512(state, blocks) }
        } else {
            // SAFETY: a `Sha512` is only constructed after `supported()` confirmed AVX2, BMI1
            // and BMI2, the features `compress_avx2` is compiled for.
            unsafe { compress_avx2(state, blocks) }
        }
    }

    #[target_feature(enable = "avx2,bmi1,bmi2")]
    pub(super) fn compress_avx2(state: &mut [u64; 8], blocks: &[[u8; BLOCK_LEN]]) {
        for block in blocks {
            compress_block_avx2(state, block);
        }
    }

    #[target_feature(enable = "avx2,bmi1,bmi2,avx512f,avx512vl")]
    pub(super) fn compress_avx512(state: &mut [u64; 8], blocks: &[[u8; BLOCK_LEN]]) {
        for block in blocks {
            compress_block_avx512(state, block);
        }
    }

    /// Rotates each 64-bit lane right by `R` (`L` = 64 - `R`): two shifts and an OR.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn ror<const R: i32, const L: i32>(x: __m128i) -> __m128i {
        _mm_or_si128(_mm_srli_epi64::<R>(x), _mm_slli_epi64::<L>(x))
    }

    /// `a ^ b ^ c`: two XORs.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn xor3(a: __m128i, b: __m128i, c: __m128i) -> __m128i {
        _mm_xor_si128(_mm_xor_si128(a, b), c)
    }

    /// [`ror`] in one instruction (`vprorq`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl")]
    fn ror_avx512<const R: i32, const L: i32>(x: __m128i) -> __m128i {
        _mm_ror_epi64::<R>(x)
    }

    /// [`xor3`] in one instruction (`vpternlogq`, truth table 0x96).
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl")]
    fn xor3_avx512(a: __m128i, b: __m128i, c: __m128i) -> __m128i {
        _mm_ternarylogic_epi64::<0x96>(a, b, c)
    }

    /// `K[t..t + 2]` as a vector (`t + 1 < 80` at every call: the schedule runs 16 ahead
    /// of rounds 0..64).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn k_pair(t: usize) -> __m128i {
        match K.get(t..t + 2) {
            // SAFETY: `pair` is two u64, 16 readable bytes; the load has no alignment
            // requirement.
            Some(pair) => unsafe { _mm_loadu_si128(pair.as_ptr().cast()) },
            None => _mm_setzero_si128(),
        }
    }

    /// One SHA-512 round (FIPS 180-4, 6.4.2 step 3) with rotating names: `d` and `h` are
    /// updated in place, the caller renames the rest; `bc` carries `b ^ c` from round to round.
    macro_rules! round {
        ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $kw:expr, $bc:ident) => {
            // `h + W + K` first: it does not wait for this round's `e`, and the compiler
            // schedules in statement order (measured: 30% slower the other way round).
            let hkw = $h.wrapping_add($kw);
            let ch = ($e & $f) ^ (!$e & $g);
            let s1 = $e.rotate_right(14) ^ $e.rotate_right(18) ^ $e.rotate_right(41);
            let t1 = hkw.wrapping_add(ch).wrapping_add(s1);
            $d = $d.wrapping_add(t1);
            let s0 = $a.rotate_right(28) ^ $a.rotate_right(34) ^ $a.rotate_right(39);
            // Maj(a, b, c) = b ^ ((a ^ b) & (b ^ c)), and this round's `b ^ c` is the previous
            // round's `a ^ b`: one operation fewer per round than `(a & b) ^ (c & (a ^ b))`.
            let ab = $a ^ $b;
            let maj = $b ^ (ab & $bc);
            $bc = ab;
            $h = t1.wrapping_add(s0.wrapping_add(maj));
        };
    }

    /// Defines a one-block compression function `$name` compiled for `$features`, whose
    /// message schedule rotates with `$ror` and XORs three ways with `$xor3`.
    macro_rules! compress_block_fn {
        ($name:ident, $features:literal, $ror:ident, $xor3:ident) => {
        // The last round and schedule step assign `bc` and `w` for a next round that does not come.
        #[allow(unused_assignments)]
        #[inline]
        #[target_feature(enable = $features)]
        fn $name(state: &mut [u64; 8], block: &[u8; BLOCK_LEN]) {
            let byte_swap = _mm_setr_epi8(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
            // `w[i]` holds the schedule words (t + 2i, t + 2i + 1) for the next 16 rounds;
            // `kw` holds `W + K` for those rounds, read by the scalar rounds.
            let mut w = [_mm_setzero_si128(); 8];
            let mut kw = [0u64; 16];
            for (i, word_pair) in w.iter_mut().enumerate() {
                *word_pair = _mm_shuffle_epi8(load(block, 16 * i), byte_swap);
                store_pair(&mut kw, 2 * i, _mm_add_epi64(*word_pair, k_pair(2 * i)));
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
            let mut bc = b ^ c;
            // The schedule pair 16 rounds ahead of round `t`:
            // W[t+16] = σ1(W[t+14]) + W[t+9] + σ0(W[t+1]) + W[t], two words at once.
            macro_rules! schedule {
                ($t:expr, $i:expr) => {{
                    let w0 = w[0];
                    let w1 = _mm_alignr_epi8::<8>(w[1], w[0]);
                    let w9 = _mm_alignr_epi8::<8>(w[5], w[4]);
                    let w14 = w[7];
                    let s0 = $xor3(
                        $ror::<1, 63>(w1),
                        $ror::<8, 56>(w1),
                        _mm_srli_epi64::<7>(w1),
                    );
                    let s1 = $xor3(
                        $ror::<19, 45>(w14),
                        $ror::<61, 3>(w14),
                        _mm_srli_epi64::<6>(w14),
                    );
                    let next = _mm_add_epi64(_mm_add_epi64(w0, s0), _mm_add_epi64(w9, s1));
                    w = [w[1], w[2], w[3], w[4], w[5], w[6], w[7], next];
                    store_pair(&mut kw, $i, _mm_add_epi64(next, k_pair($t + 16)));
                }};
            }
            // Sixteen rounds; a macro rather than a loop so that all 80 rounds are straight-line
            // code: the schedule window `w` then lives in registers instead of being shifted
            // through memory each pair of rounds, and the last group has no schedule test.
            macro_rules! sixteen_rounds {
                ($group:literal) => {{
                    let t0 = $group * 16;
                    // Two rounds, then (but for the last 16 rounds) the schedule pair 16 ahead.
                    macro_rules! two_rounds {
                        ($i:expr, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident) => {
                            round!($a, $b, $c, $d, $e, $f, $g, $h, kw[$i], bc);
                            round!($h, $a, $b, $c, $d, $e, $f, $g, kw[$i + 1], bc);
                            if $group < 4 {
                                schedule!(t0 + $i, $i);
                            }
                        };
                    }
                    two_rounds!(0, a, b, c, d, e, f, g, h);
                    two_rounds!(2, g, h, a, b, c, d, e, f);
                    two_rounds!(4, e, f, g, h, a, b, c, d);
                    two_rounds!(6, c, d, e, f, g, h, a, b);
                    two_rounds!(8, a, b, c, d, e, f, g, h);
                    two_rounds!(10, g, h, a, b, c, d, e, f);
                    two_rounds!(12, e, f, g, h, a, b, c, d);
                    two_rounds!(14, c, d, e, f, g, h, a, b);
                }};
            }
            sixteen_rounds!(0);
            sixteen_rounds!(1);
            sixteen_rounds!(2);
            sixteen_rounds!(3);
            sixteen_rounds!(4);
            for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = s.wrapping_add(v);
            }
        }
        };
    }

    compress_block_fn!(compress_block_avx2, "avx2,bmi1,bmi2", ror, xor3);
    // The same with the schedule's rotates and XORs in one instruction each: 10 instructions
    // fewer per two rounds (docs/benchmarks.md, "Speed: hash").
    compress_block_fn!(
        compress_block_avx512,
        "avx2,bmi1,bmi2,avx512f,avx512vl",
        ror_avx512,
        xor3_avx512
    );

    /// 16 bytes of `block` from `at` (`at + 16 <= 128` at every call).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(block: &[u8; BLOCK_LEN], at: usize) -> __m128i {
        match block.get(at..at + 16) {
            // SAFETY: `bytes` is 16 readable bytes; unaligned load.
            Some(bytes) => unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) },
            None => _mm_setzero_si128(),
        }
    }

    /// Stores two words at `kw[i..i + 2]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store_pair(kw: &mut [u64; 16], i: usize, v: __m128i) {
        if let Some(slot) = kw.get_mut(i..i + 2) {
            // SAFETY: `slot` is 16 writable bytes; unaligned store.
            unsafe { _mm_storeu_si128(slot.as_mut_ptr().cast(), v) }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod accel {
    use super::BLOCK_LEN;

    pub(super) fn supported() -> bool {
        false
    }

    pub(super) fn compress(_: &mut [u64; 8], _: &[[u8; BLOCK_LEN]]) {
        unreachable!("a Sha512 is never constructed without the accelerated path")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn data() -> Vec<u8> {
        (0..700u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
            .collect()
    }

    #[test]
    fn equals_rustcrypto_sha512_and_sha384_for_every_length_and_split() {
        if !Sha512::supported() {
            return;
        }
        let data = data();
        for len in 0..data.len() {
            let input = &data[..len];
            let split = len / 3;
            for (new, want) in [
                (
                    Sha512::new_512 as fn() -> Option<Sha512>,
                    sha2::Sha512::digest(input).to_vec(),
                ),
                (Sha512::new_384, sha2::Sha384::digest(input).to_vec()),
            ] {
                let mut h = new().unwrap();
                h.update(input);
                assert_eq!(h.finalize(), want, "length {len}");
                let mut h = new().unwrap();
                h.update(&input[..split]);
                h.update(&input[split..]);
                assert_eq!(h.finalize(), want, "length {len} split at {split}");
            }
        }
    }

    /// Both schedule variants against RustCrypto's compression function, whichever one
    /// `compress` picks on this CPU.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_avx512_schedules_equal_rustcrypto_compression() {
        if !Sha512::supported() {
            return;
        }
        let data: Vec<u8> = (0..BLOCK_LEN * 9)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
            .collect();
        let blocks: Vec<[u8; BLOCK_LEN]> = data.as_chunks::<BLOCK_LEN>().0.to_vec();
        let mut want = IV_512;
        sha2::block_api::compress512(&mut want, &blocks);
        let mut got = IV_512;
        // SAFETY: `supported()` confirmed AVX2, BMI1 and BMI2.
        unsafe { accel::compress_avx2(&mut got, &blocks) };
        assert_eq!(got, want, "AVX2 schedule");
        if accel::has_avx512vl() {
            let mut got = IV_512;
            // SAFETY: as above, and `has_avx512vl()` confirmed AVX-512F and VL.
            unsafe { accel::compress_avx512(&mut got, &blocks) };
            assert_eq!(got, want, "AVX-512 schedule");
        }
    }

    #[test]
    fn fips_180_4_examples() {
        let Some(mut h) = Sha512::new_512() else {
            return;
        };
        h.update(b"abc");
        assert_eq!(
            hex::encode(h.finalize()),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }
}
