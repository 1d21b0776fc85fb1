//! In-process single-stream throughput of MD5 and SHA-512 implementations, alone and two at
//! once on two threads. Time is the thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), so a
//! machine busy with other work lowers the numbers far less than wall-clock time would; the
//! best of several runs is kept. Compare `openssl speed -bytes 1048576 md5 sha512`, which
//! also reports CPU time.

use std::time::Duration;

const LEN: usize = 256 << 20;
const RUNS: usize = 5;

type HashFn = fn(&[u8]) -> Vec<u8>;

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Best MB/s of `RUNS` runs of `f` over `data`, and its output.
fn measure(data: &[u8], f: HashFn) -> (f64, Vec<u8>) {
    let mut best = f64::MAX;
    let mut out = Vec::new();
    for _ in 0..RUNS {
        let start = thread_cpu_time();
        out = f(data);
        best = best.min((thread_cpu_time() - start).as_secs_f64());
    }
    (data.len() as f64 / best / 1e6, out)
}

fn chunks<H>(data: &[u8], mut h: H, update: fn(&mut H, &[u8])) -> H {
    for c in data.chunks(1 << 20) {
        update(&mut h, c);
    }
    h
}

fn md5_vmimage(d: &[u8]) -> Vec<u8> {
    chunks(d, vmimage::digest::md5::Md5::new(), |h, c| h.update(c)).finalize().to_vec()
}
fn md5_rustcrypto(d: &[u8]) -> Vec<u8> {
    use md5::Digest;
    chunks(d, md5::Md5::new(), |h, c| h.update(c)).finalize().to_vec()
}
fn md5_rustcrypto_010_asm(d: &[u8]) -> Vec<u8> {
    use md5_010_asm::Digest;
    chunks(d, md5_010_asm::Md5::new(), |h, c| h.update(c)).finalize().to_vec()
}
fn md5_aws_lc(d: &[u8]) -> Vec<u8> {
    // SAFETY: MD5_CTX is plain data initialised by MD5_Init; every pointer is valid for the
    // length passed.
    unsafe {
        let mut ctx: aws_lc_sys::MD5_CTX = std::mem::zeroed();
        aws_lc_sys::MD5_Init(&mut ctx);
        for c in d.chunks(1 << 20) {
            aws_lc_sys::MD5_Update(&mut ctx, c.as_ptr().cast(), c.len());
        }
        let mut out = [0u8; 16];
        aws_lc_sys::MD5_Final(out.as_mut_ptr(), &mut ctx);
        out.to_vec()
    }
}
fn sha512_vmimage(d: &[u8]) -> Vec<u8> {
    let Some(h) = vmimage::digest::sha512::Sha512::new_512() else {
        return sha512_rustcrypto(d);
    };
    chunks(d, h, |h, c| h.update(c)).finalize()
}
fn sha512_rustcrypto(d: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    chunks(d, sha2::Sha512::new(), |h, c| h.update(c)).finalize().to_vec()
}
fn sha512_rustcrypto_010_asm(d: &[u8]) -> Vec<u8> {
    use sha2_010_asm::Digest;
    chunks(d, sha2_010_asm::Sha512::new(), |h, c| h.update(c)).finalize().to_vec()
}
fn sha512_ring(d: &[u8]) -> Vec<u8> {
    let h = chunks(d, ring::digest::Context::new(&ring::digest::SHA512), |h, c| h.update(c));
    h.finish().as_ref().to_vec()
}
fn sha512_aws_lc(d: &[u8]) -> Vec<u8> {
    // SAFETY: as for md5_aws_lc.
    unsafe {
        let mut ctx: aws_lc_sys::SHA512_CTX = std::mem::zeroed();
        aws_lc_sys::SHA512_Init(&mut ctx);
        for c in d.chunks(1 << 20) {
            aws_lc_sys::SHA512_Update(&mut ctx, c.as_ptr().cast(), c.len());
        }
        let mut out = [0u8; 64];
        aws_lc_sys::SHA512_Final(out.as_mut_ptr(), &mut ctx);
        out.to_vec()
    }
}

const MD5: [(&str, HashFn); 4] = [
    ("md5 vmimage (default)", md5_vmimage),
    ("md5 RustCrypto md-5 0.11", md5_rustcrypto),
    ("md5 RustCrypto md-5 0.10 asm", md5_rustcrypto_010_asm),
    ("md5 aws-lc", md5_aws_lc),
];
const SHA512: [(&str, HashFn); 5] = [
    ("sha512 vmimage (default, AVX2)", sha512_vmimage),
    ("sha512 RustCrypto sha2 0.11", sha512_rustcrypto),
    ("sha512 RustCrypto sha2 0.10 asm", sha512_rustcrypto_010_asm),
    ("sha512 ring", sha512_ring),
    ("sha512 aws-lc", sha512_aws_lc),
];

fn main() {
    let data: Vec<u8> = (0..LEN)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(9) as u8)
        .collect();
    println!("{} MiB buffer, best of {RUNS}, MB/s of thread CPU time", LEN >> 20);
    println!("alone:");
    for group in [&MD5[..], &SHA512[..]] {
        let mut reference = None;
        for (name, f) in group.iter() {
            let (mbs, out) = measure(&data, *f);
            let same = reference.get_or_insert_with(|| out.clone()) == &out;
            println!("  {name:<40} {mbs:6.0}{}", if same { "" } else { "  DIGEST DIFFERS" });
        }
    }
    println!("two at once (md5 on one thread, sha512 on another):");
    for (md5_name, md5_fn) in [MD5[0], MD5[3]] {
        for (sha_name, sha_fn) in [SHA512[0], SHA512[3]] {
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(|| measure(&data, md5_fn).0);
                let b = measure(&data, sha_fn).0;
                (a.join().unwrap_or(0.0), b)
            });
            println!("  {md5_name:<30} {a:6.0}  with  {sha_name:<38} {b:6.0}");
        }
    }
}
