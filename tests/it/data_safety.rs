//! No lost or half-written data: a conversion that fails at any of its writes, or is
//! interrupted at any moment, leaves neither output nor temporary file; a source that changes
//! while `verify` or `convert` reads it gives an error naming the file, never a digest or an
//! output.
//!
//! Failures are injected with the test hook `VMIMAGE_TEST_FAULT` (`fail-io=N` fails the N-th
//! write-side operation, see `vmimage::convert::output`); changes during a read are made while
//! the process is stopped (SIGSTOP) in the middle of reading the file, so the test does not
//! depend on timing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::Workdir;

/// Deterministic bytes that compress well (text-like lines), `len` of them.
fn compressible(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut n = seed;
    while out.len() < len {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(format!("line {:06} of the guest disk\n", n >> 44).as_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic bytes that do not compress, `len` of them.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut n = seed | 1;
    while out.len() < len {
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A sparse raw disk of `size` bytes with `data` written at each offset.
fn sparse_raw(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (at, data) in pieces {
        f.write_all_at(data, *at).unwrap();
    }
}

fn md5_of(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn sha512_of(path: &Path) -> String {
    let out = Command::new("sha512sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_failure_at_every_write_of_convert_leaves_neither_output_nor_temporary_file() {
    // 24 MiB with data in four places and holes between, so that the outputs take several
    // write calls (raw output skips the holes; qcow2 output writes its metadata, then the data
    // a chunk at a time); the compressed conversion keeps at most 1 MiB of compressed clusters
    // in memory, so its spill file is created, written and read back too.
    let w = Workdir::new();
    sparse_raw(
        &w.join("in.raw"),
        24 << 20,
        &[
            (0, compressible(3 << 20, 1)),
            (8 << 20, noise(1 << 20, 2)),
            (13 << 20, compressible(4 << 20, 3)),
            (22 << 20, noise(2 << 20, 4)),
        ],
    );
    let configurations: [(&str, &[&str], &str); 4] = [
        ("out.qcow2", &["-O", "qcow2"], ""),
        // --sync adds the final fsync as a failure point.
        ("out.qcow2", &["-O", "qcow2", "--sync"], ""),
        (
            "out.qcow2",
            &["-O", "qcow2", "-c", "zlib"],
            ",spill-limit=1048576",
        ),
        ("out.raw", &["-O", "raw"], ""),
    ];
    let mut counted = Vec::new();
    for (out, options, extra) in configurations {
        let mut args = vec!["convert", "in.raw", out];
        args.extend_from_slice(options);
        let mut points = 0;
        for n in 1.. {
            assert!(
                n < 1000,
                "{args:?} still failing after {n} injected failures"
            );
            let fault = format!("fail-io={n}{extra}");
            let run = w.vmimage_with_fault(&args, Some(&fault));
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(!stderr.contains("panicked"), "{fault}: {stderr}");
            if run.status.code() == Some(0) {
                // Every write-side operation has failed once: this run had none to fail.
                points = n - 1;
                let compare = w.qemu_img_any(&["compare", "in.raw", out]);
                assert!(compare.status.success(), "{args:?}: output differs");
                std::fs::remove_file(w.join(out)).unwrap();
                break;
            }
            assert_eq!(run.status.code(), Some(2), "{args:?} {fault}: {stderr}");
            assert!(
                stderr.starts_with(&format!("vmimage: {out}: cannot write: "))
                    && stderr.contains("Input/output error")
                    && stderr.lines().count() == 1,
                "{args:?} {fault}: {stderr}"
            );
            assert_eq!(w.listing(), ["in.raw"], "{args:?} {fault} left files");
        }
        // Creating the file, its writes, its length, (sync,) rename: there are several.
        assert!(points >= 5, "{args:?}: only {points} write points");
        println!("{args:?}: {points} write points, each failed once");
        counted.push(points);
    }
    // The same conversion with --sync has exactly one more: the fsync before the rename.
    assert_eq!(
        counted[1],
        counted[0] + 1,
        "--sync did not sync: {counted:?}"
    );
}

/// Sends `signal` to the child.
fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not waited for yet.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

#[test]
fn an_interrupt_at_any_moment_leaves_no_partial_output() {
    // A compressed conversion of 32 MiB takes long enough to be interrupted in every phase
    // (inspection, scan, header and tables, data, sync, rename). A first run gives its
    // duration and the complete output's digest; then SIGINT arrives at delays spread over
    // that duration (with a seeded jitter, printed).
    let w = Workdir::new();
    sparse_raw(
        &w.join("in.raw"),
        40 << 20,
        &[
            (0, compressible(24 << 20, 7)),
            (32 << 20, compressible(8 << 20, 8)),
        ],
    );
    let args = [
        "convert",
        "in.raw",
        "out.qcow2",
        "-O",
        "qcow2",
        "-c",
        "zlib",
    ];
    let started = Instant::now();
    let reference = w.vmimage_with_fault(&args, None);
    let full = started.elapsed();
    assert!(reference.status.success());
    let complete = md5_of(&w.join("out.qcow2"));
    std::fs::remove_file(w.join("out.qcow2")).unwrap();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    println!("interrupt delays: seed {seed}, a full run took {full:?}");
    let mut rng = seed | 1;
    let trials = 10;
    let mut removed = 0;
    for k in 0..trials {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Spread over [0, 1.1 × full): trial k lands in its own slice, at a random point.
        let slice = full.mul_f64(1.1) / trials;
        let delay = slice * k + slice.mul_f64((rng % 1000) as f64 / 1000.0);
        let child = Command::new(env!("CARGO_BIN_EXE_vmimage"))
            .args(args)
            .current_dir(w.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        kill(child.id(), libc::SIGINT);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        let files = w.listing();
        let what = format!(
            "interrupt after {delay:?}: {:?}, {files:?}, {stderr}",
            out.status
        );
        match out.status.code() {
            // Finished before the signal, or interrupted after the output was complete and
            // renamed into place: the output is whole.
            Some(0) | Some(130) if files.contains(&"out.qcow2".to_string()) => {
                assert_eq!(files, ["in.raw", "out.qcow2"], "{what}");
                assert_eq!(md5_of(&w.join("out.qcow2")), complete, "{what}");
                std::fs::remove_file(w.join("out.qcow2")).unwrap();
            }
            Some(130) => {
                assert_eq!(files, ["in.raw"], "{what}");
                assert!(
                    stderr.starts_with("vmimage: out.qcow2: interrupted"),
                    "{what}"
                );
                if stderr.contains("partial output was removed") {
                    removed += 1;
                }
            }
            // The signal came before the handler was installed: the default action ended
            // the process before it created anything.
            None => assert_eq!(files, ["in.raw"], "{what}"),
            other => panic!("unexpected exit {other:?}: {what}"),
        }
    }
    assert!(
        removed > 0,
        "no interrupt landed while the output was being written (seed {seed})"
    );
}

/// Canonical path of `p`, as `/proc/PID/fd` links show it.
fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap()
}

/// Whether process `pid` has `path` open or mapped now, and how far it has read.
fn reading_progress(pid: u32, path: &Path) -> Option<u64> {
    let mut open = false;
    let mut pos = 0u64;
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l == path) {
                open = true;
                let info = std::fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .unwrap_or_default();
                let p = info
                    .lines()
                    .find_map(|l| l.strip_prefix("pos:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                pos = pos.max(p);
            }
        }
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mapped = maps.contains(path.to_string_lossy().as_ref());
    // Reads by position (pread) leave `pos` at 0; the process's read counter moves instead.
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let rchar = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0u64);
    (open || mapped).then_some(pos.max(rchar))
}

/// Stops process `pid` (SIGSTOP) once it has read more than `past` bytes of `path` and while
/// it still has the file open: the moment a change to the file happens *during* the read.
/// `false` if the process finished first.
fn stop_while_reading(pid: u32, path: &Path, past: u64) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        match reading_progress(pid, path) {
            Some(done) if done > past => {
                kill(pid, libc::SIGSTOP);
                // Wait until it is stopped, then make sure it is still reading.
                for _ in 0..1000 {
                    let stat =
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
                    if state != Some('R') && state != Some('S') && state != Some('D') {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                if reading_progress(pid, path).is_some() {
                    return true;
                }
                kill(pid, libc::SIGCONT);
                return false;
            }
            _ => {}
        }
        if !Path::new(&format!("/proc/{pid}/fd")).exists()
            || std::fs::read_dir(format!("/proc/{pid}/fd")).is_err()
        {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

/// How the test changes the file while it is read.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Cut to half its length.
    Truncate,
    /// Overwrite its first MiB (already read) in place, same length, and set the modification
    /// time back to what it was: only the change time can tell.
    RewriteReadPart,
}

fn change(path: &Path, how: Change) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    match how {
        Change::Truncate => {
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
        }
        Change::RewriteReadPart => {
            let mtime = f.metadata().unwrap().modified().unwrap();
            f.write_all_at(&vec![0xee; 1 << 20], 0).unwrap();
            f.set_modified(mtime).unwrap();
        }
    }
}

/// Starts `vmimage ARGS`, changes `file` while it is read, and returns the run.
fn change_during(w: &Workdir, args: &[&str], file: &str, how: Change) -> Output {
    let path = canonical(&w.join(file));
    // The change must not fall in the same clock tick as the file's creation, or the change
    // time could not tell them apart.
    std::thread::sleep(Duration::from_millis(50));
    let child = Command::new(env!("CARGO_BIN_EXE_vmimage"))
        .args(args)
        .current_dir(w.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stopped = stop_while_reading(pid, &path, 4 << 20);
    if stopped {
        change(&path, how);
        kill(pid, libc::SIGCONT);
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        stopped,
        "vmimage {args:?} finished before {file} could be changed while it was read: {:?}",
        out.status
    );
    out
}

/// A 256 MiB raw image of noise (long enough to read that a stop lands mid-read).
fn big_image(w: &Workdir, name: &str) {
    let mut f = std::fs::File::create(w.join(name)).unwrap();
    for i in 0..64 {
        std::io::Write::write_all(&mut f, &noise(4 << 20, 100 + i)).unwrap();
    }
}

fn assert_changed_error(out: &Output, file: &str, how: Change, digests: &[String]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!(
        "{how:?}: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert_eq!(out.status.code(), Some(2), "{what}");
    assert!(
        stderr.starts_with("vmimage: ")
            && stderr.contains(file)
            && stderr.contains("changed while it was read")
            && stderr.lines().count() == 1,
        "{what}"
    );
    assert!(!stdout.contains("verified"), "{what}");
    for d in digests {
        assert!(!stdout.contains(d.as_str()), "a digest was printed: {what}");
    }
}

#[test]
fn a_source_truncated_or_rewritten_during_verify_is_an_error_never_a_digest() {
    for how in [Change::Truncate, Change::RewriteReadPart] {
        let w = Workdir::new();
        big_image(&w, "disk.raw");
        let md5 = md5_of(&w.join("disk.raw"));
        let sha512 = sha512_of(&w.join("disk.raw"));
        let args = [
            "verify",
            "disk.raw",
            "--checksum",
            &md5,
            "--os-hash-value",
            &sha512,
        ];
        // Unchanged, it verifies: the failure below is the change, nothing else.
        let clean = w.vmimage_with_fault(&args, None);
        assert_eq!(clean.status.code(), Some(0), "{clean:?}");
        let out = change_during(&w, &args, "disk.raw", how);
        assert_changed_error(&out, "disk.raw", how, &[md5.clone(), sha512.clone()]);
        // The same with --json: no report at all.
        big_image(&w, "disk.raw");
        let mut json = args.to_vec();
        json.push("--json");
        let out = change_during(&w, &json, "disk.raw", how);
        assert_changed_error(&out, "disk.raw", how, &[md5.clone(), sha512.clone()]);
        assert!(out.stdout.is_empty(), "{how:?}: {out:?}");
    }
}

#[test]
fn a_source_truncated_or_rewritten_during_convert_leaves_nothing_and_says_so() {
    for how in [Change::Truncate, Change::RewriteReadPart] {
        for (input, out_name, fmt) in [
            ("disk.raw", "out.qcow2", "qcow2"),
            ("disk.qcow2", "out.raw", "raw"),
        ] {
            let w = Workdir::new();
            big_image(&w, "disk.raw");
            if input == "disk.qcow2" {
                w.qemu_img(&["convert", "-f", "raw", "-O", "qcow2", "disk.raw", input]);
                std::fs::remove_file(w.join("disk.raw")).unwrap();
            }
            let args = ["convert", input, out_name, "-O", fmt];
            let out = change_during(&w, &args, input, how);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let what = format!("{how:?} {input}: {:?} {stderr}", out.status);
            assert_eq!(out.status.code(), Some(2), "{what}");
            assert_eq!(
                stderr.trim_end(),
                format!("vmimage: {input}: the file changed while it was read"),
                "{what}"
            );
            assert!(out.stdout.is_empty(), "{what}");
            assert_eq!(w.listing(), [input], "{what}");
        }
    }
}

#[test]
fn a_source_truncated_or_rewritten_during_hash_is_an_error_never_a_digest() {
    for how in [Change::Truncate, Change::RewriteReadPart] {
        let w = Workdir::new();
        big_image(&w, "disk.raw");
        let md5 = md5_of(&w.join("disk.raw"));
        let sha512 = sha512_of(&w.join("disk.raw"));
        let clean = w.vmimage_with_fault(&["hash", "disk.raw"], None);
        assert_eq!(clean.status.code(), Some(0), "{clean:?}");
        assert!(String::from_utf8_lossy(&clean.stdout).contains(&md5));
        for json in [false, true] {
            big_image(&w, "disk.raw");
            let mut args = vec!["hash", "disk.raw"];
            if json {
                args.push("--json");
            }
            let out = change_during(&w, &args, "disk.raw", how);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(2), "{how:?} json={json}: {stderr}");
            assert!(
                stderr.contains("disk.raw") && stderr.contains("changed while it was read"),
                "{how:?}: {stderr}"
            );
            assert!(
                !stdout.contains(&md5) && !stdout.contains(&sha512),
                "{how:?}: {stdout}"
            );
            // Whatever digests of the changed bytes would be, none is printed.
            assert!(
                !stdout.contains("MD5 (") && !stdout.contains("\"md5\""),
                "{stdout}"
            );
        }
    }
}
