//! The documents `vmimage metadata --sidecar` and `vmimage verify --junit` write go through the
//! same atomic-output module as `convert`'s images (`src/atomic`): a failure at any write-side
//! operation, or a signal in the middle of the write, leaves the existing file as it was and
//! nothing beside it. Failures and stalls come from the test-only fault hook
//! (`VMIMAGE_TEST_FAULT`: `fail-io=N`, `stall-io=N`).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Workdir, listing};

/// The previous content of the document's path: it must survive every failed run.
const PREVIOUS: &[u8] = b"previous document\n";

fn command(w: &Workdir, args: &[&str], fault: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmimage"));
    cmd.args(args)
        .current_dir(w.path())
        .stdin(Stdio::null())
        .env("VMIMAGE_TEST_FAULT", fault);
    cmd
}

/// A small qcow2 image, and a sidecar of it that `verify --junit` is checked against.
fn image(w: &Workdir) {
    w.qemu_img(&["create", "-q", "-f", "qcow2", "disk.qcow2", "64M"]);
    w.qemu_io(&["-c", "write -P 0x5a 0 256k", "disk.qcow2"]);
    let made = command(
        w,
        &[
            "metadata",
            "disk.qcow2",
            "--target",
            "glance",
            "--sidecar",
            "record.json",
        ],
        "",
    )
    .output()
    .unwrap();
    assert_eq!(made.status.code(), Some(0), "{made:?}");
}

/// The two commands, the document each writes, and the sentence its write failure starts with.
fn writers() -> [(Vec<&'static str>, &'static str, &'static str); 2] {
    [
        (
            vec![
                "metadata",
                "disk.qcow2",
                "--target",
                "glance",
                "--sidecar",
                "doc.json",
            ],
            "doc.json",
            "vmimage: doc.json: cannot write the sidecar: ",
        ),
        (
            vec![
                "verify",
                "disk.qcow2",
                "--against",
                "record.json",
                "--junit",
                "doc.json",
            ],
            "doc.json",
            "vmimage: doc.json: cannot write the JUnit report: ",
        ),
    ]
}

#[test]
fn a_failure_at_every_write_of_a_sidecar_or_junit_report_keeps_the_existing_file() {
    let w = Workdir::new();
    image(&w);
    let before = listing(w.path());
    for (args, doc, sentence) in writers() {
        w.write(doc, PREVIOUS);
        let mut points = 0;
        for n in 1.. {
            assert!(
                n < 100,
                "{args:?} still failing after {n} injected failures"
            );
            let fault = format!("fail-io={n}");
            let run: Output = command(&w, &args, &fault).output().unwrap();
            let stderr = String::from_utf8_lossy(&run.stderr);
            if run.status.code() == Some(0) {
                points = n - 1;
                break;
            }
            assert_eq!(run.status.code(), Some(2), "{args:?} {fault}: {stderr}");
            assert!(
                stderr.starts_with(sentence)
                    && stderr.contains("Input/output error")
                    && stderr.lines().count() == 1,
                "{args:?} {fault}: {stderr}"
            );
            assert_eq!(std::fs::read(w.join(doc)).unwrap(), PREVIOUS, "{fault}");
            let mut expected = before.clone();
            expected.push(doc.to_string());
            expected.sort();
            assert_eq!(listing(w.path()), expected, "{args:?} {fault} left files");
        }
        // Creating the temporary file, writing it, syncing it, renaming it into place.
        assert_eq!(points, 4, "{args:?}");
        assert_ne!(std::fs::read(w.join(doc)).unwrap(), PREVIOUS);
        std::fs::remove_file(w.join(doc)).unwrap();
    }
}

#[test]
fn a_signal_during_the_write_of_a_sidecar_or_junit_report_leaves_nothing_behind() {
    let w = Workdir::new();
    image(&w);
    let before = listing(w.path());
    for (args, doc, _) in writers() {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            w.write(doc, PREVIOUS);
            // The write itself (the second write-side operation, after the creation of the
            // temporary file) never returns.
            let mut child = command(&w, &args, "stall-io=2")
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while !listing(w.path()).iter().any(|n| n.contains("vmimage-tmp")) {
                if started.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    panic!("{args:?}: no temporary file appeared");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // SAFETY: kill(2) on the pid of a child this test spawned and has not waited for.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(130), "{args:?} {signal}: {stderr}");
            assert_eq!(
                stderr,
                format!("vmimage: {doc}: interrupted; the partial output was removed\n")
            );
            assert_eq!(std::fs::read(w.join(doc)).unwrap(), PREVIOUS);
            let mut expected = before.clone();
            expected.push(doc.to_string());
            expected.sort();
            assert_eq!(listing(w.path()), expected, "{args:?} {signal} left files");
        }
    }
}
