//! `vmimage hash`: digests equal coreutils' (`md5sum`, `sha*sum`), its output is what
//! `cksum -c` reads, and `--check` behaves as `md5sum -c` / `sha256sum -c` on the same
//! manifests.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{Workdir, run_with_stdin};

/// The engine's default chunk size (`vmimage::digest::engine::DEFAULT_CHUNK_SIZE`) and pool
/// size: the boundaries where a bug in the hand-off would show.
const CHUNK: usize = 1 << 20;
const POOL: usize = 8;

const TOOLS: [(&str, &str); 6] = [
    ("md5", "md5sum"),
    ("sha1", "sha1sum"),
    ("sha224", "sha224sum"),
    ("sha256", "sha256sum"),
    ("sha384", "sha384sum"),
    ("sha512", "sha512sum"),
];

/// Runs a coreutils tool in `dir` and returns (stdout, stderr, status).
fn tool(dir: &Path, program: &str, args: &[&str], stdin: Option<&[u8]>) -> (String, String, i32) {
    let out = run_with_stdin(program, dir, args, stdin);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// `name -> hex` from `md5sum`-style output (`hex  name`).
fn coreutils_digest(dir: &Path, program: &str, file: &str) -> String {
    let (out, err, code) = tool(dir, program, &[file], None);
    assert_eq!(code, 0, "{program} {file}: {err}");
    out.split_whitespace().next().unwrap().to_string()
}

/// Parses `TAG (name) = hex` lines into (tag, name, hex).
fn tagged_lines(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .map(|l| {
            let (tag, rest) = l
                .split_once(" (")
                .unwrap_or_else(|| panic!("not tagged: {l}"));
            let (name, hex) = rest.rsplit_once(") = ").unwrap();
            (tag.to_string(), name.to_string(), hex.to_string())
        })
        .collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect()
}

#[test]
fn digests_equal_coreutils_at_every_chunk_and_block_boundary() {
    let w = Workdir::new();
    let mut sizes = vec![0, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129];
    for edge in [CHUNK, 2 * CHUNK, POOL * CHUNK, (POOL + 1) * CHUNK] {
        sizes.extend([edge - 1, edge, edge + 1]);
    }
    let data = pattern(*sizes.iter().max().unwrap());
    let names: Vec<String> = sizes.iter().map(|n| format!("f{n}")).collect();
    for (name, n) in names.iter().zip(&sizes) {
        w.write(name, &data[..*n]);
    }
    let mut args = vec!["hash", "--algo", "md5,sha1,sha224,sha256,sha384,sha512"];
    args.extend(names.iter().map(String::as_str));
    let run = w.vmimage(&args);
    run.expect_code(0);
    let lines = tagged_lines(&run.stdout);
    assert_eq!(lines.len(), names.len() * TOOLS.len());
    for (program_index, (alg, program)) in TOOLS.iter().enumerate() {
        let mut args: Vec<&str> = Vec::new();
        args.extend(names.iter().map(String::as_str));
        let (out, err, code) = tool(w.path(), program, &args, None);
        assert_eq!(code, 0, "{program}: {err}");
        for (file_index, line) in out.lines().enumerate() {
            let (hex, name) = line.split_once("  ").unwrap();
            let ours = &lines[file_index * TOOLS.len() + program_index];
            assert_eq!(ours.0, alg.to_uppercase(), "{line}");
            assert_eq!(
                (ours.1.as_str(), ours.2.as_str()),
                (name, hex),
                "{alg} of {name}"
            );
        }
    }
}

#[test]
fn the_default_is_md5_then_sha512_one_tagged_line_each() {
    let w = Workdir::new();
    w.write("disk.qcow2", b"not really a disk\n");
    let run = w.vmimage(&["hash", "disk.qcow2"]);
    run.expect_code(0);
    let md5 = coreutils_digest(w.path(), "md5sum", "disk.qcow2");
    let sha512 = coreutils_digest(w.path(), "sha512sum", "disk.qcow2");
    assert_eq!(
        run.stdout,
        format!("MD5 (disk.qcow2) = {md5}\nSHA512 (disk.qcow2) = {sha512}\n")
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn a_sparse_file_over_4_gib_hashes_as_md5sum_says() {
    let w = Workdir::new();
    let path = w.join("sparse.raw");
    let file = std::fs::File::create(&path).unwrap();
    // 4 GiB + 1 MiB + 3, with data on both sides of the 4 GiB mark (a 32-bit length or
    // offset would wrap there).
    let len = (4u64 << 30) + (1 << 20) + 3;
    file.set_len(len).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"before 4 GiB", (4u64 << 30) - 6)
        .unwrap();
    file.write_all_at(b"the end", len - 7).unwrap();
    drop(file);
    let run = w.vmimage(&["hash", "--algo", "md5", "--json", "sparse.raw"]);
    run.expect_code(0);
    let json = run.json();
    assert_eq!(json[0]["size"], len);
    assert_eq!(
        json[0]["digests"]["md5"],
        coreutils_digest(w.path(), "md5sum", "sparse.raw")
    );
}

#[test]
fn standard_input_hashes_as_coreutils_do_with_no_file_or_a_dash() {
    let w = Workdir::new();
    let data = pattern(3 * CHUNK + 17);
    let (md5, _, _) = tool(w.path(), "md5sum", &[], Some(&data));
    let (sha512, _, _) = tool(w.path(), "sha512sum", &[], Some(&data));
    let want = format!(
        "MD5 (-) = {}\nSHA512 (-) = {}\n",
        md5.split_whitespace().next().unwrap(),
        sha512.split_whitespace().next().unwrap()
    );
    for args in [&["hash"][..], &["hash", "-"][..]] {
        let run = w.vmimage_stdin(args, Some(&data));
        run.expect_code(0);
        assert_eq!(run.stdout, want, "{args:?}");
    }
    // And an empty stdin.
    let run = w.vmimage_stdin(&["hash", "--algo", "md5"], Some(b""));
    assert_eq!(run.stdout, "MD5 (-) = d41d8cd98f00b204e9800998ecf8427e\n");
}

#[test]
fn cksum_c_accepts_the_output_including_escaped_names() {
    let w = Workdir::new();
    w.write("disk.qcow2", &pattern(CHUNK + 5));
    w.write("with space.img", b"x");
    w.write("back\\slash.img", b"y");
    let run = w.vmimage(&["hash", "disk.qcow2", "with space.img", "back\\slash.img"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("\\MD5 (back\\\\slash.img) = "),
        "{}",
        run.stdout
    );
    w.write("SUMS", run.stdout.as_bytes());
    let (out, err, code) = tool(w.path(), "cksum", &["-c", "SUMS"], None);
    assert_eq!(code, 0, "cksum -c: {out}{err}");
    assert_eq!(
        out,
        "disk.qcow2: OK\ndisk.qcow2: OK\nwith space.img: OK\nwith space.img: OK\n\
         back\\slash.img: OK\nback\\slash.img: OK\n"
    );
    assert_eq!(err, "");
}

#[test]
fn many_files_are_printed_in_argument_order_and_json_is_an_array() {
    let w = Workdir::new();
    // A large file first, so that the small ones finish earlier.
    let sizes = [5 * CHUNK, 10, 0, 3 * CHUNK + 1, 7];
    let names: Vec<String> = (0..sizes.len()).map(|i| format!("file{i}")).collect();
    for (name, size) in names.iter().zip(sizes) {
        w.write(name, &pattern(size));
    }
    let mut args = vec!["hash", "--algo", "sha256"];
    args.extend(names.iter().map(String::as_str));
    let run = w.vmimage(&args);
    run.expect_code(0);
    let printed: Vec<String> = tagged_lines(&run.stdout).into_iter().map(|l| l.1).collect();
    assert_eq!(printed, names);

    args.insert(1, "--json");
    let json = w.vmimage(&args).json();
    let array = json.as_array().unwrap();
    assert_eq!(array.len(), names.len());
    for ((entry, name), size) in array.iter().zip(&names).zip(sizes) {
        assert_eq!(entry["file"], name.as_str());
        assert_eq!(entry["size"], size);
        assert_eq!(
            entry["digests"]["sha256"],
            coreutils_digest(w.path(), "sha256sum", name)
        );
        assert_eq!(entry["digests"].as_object().unwrap().len(), 1);
    }
}

#[test]
fn an_unreadable_file_is_an_error_naming_it_and_the_others_still_print() {
    let w = Workdir::new();
    w.write("good", b"fine");
    std::fs::create_dir(w.join("adir")).unwrap();
    let run = w.vmimage(&["hash", "--algo", "md5", "good", "missing", "adir"]);
    run.expect_code(2);
    assert_eq!(
        run.stdout,
        format!(
            "MD5 (good) = {}\n",
            coreutils_digest(w.path(), "md5sum", "good")
        )
    );
    assert!(
        run.stderr
            .contains("vmimage: cannot read missing: No such file or directory"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("adir: Is a directory"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
}

#[test]
fn an_unknown_algorithm_is_a_usage_error() {
    let w = Workdir::new();
    w.write("f", b"");
    let run = w.vmimage(&["hash", "--algo", "md5,crc32", "f"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("unknown digest algorithm 'crc32'"),
        "{}",
        run.stderr
    );
}

/// The read position of the descriptor `pid` holds on `path`, if it has one open.
fn read_position(pid: u32, path: &Path) -> Option<u64> {
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if std::fs::read_link(fd.path()).ok().as_deref() == Some(path) {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_str()?))
                    .ok()?;
            let pos = info.lines().find_map(|l| l.strip_prefix("pos:"))?;
            return pos.trim().parse().ok();
        }
    }
    None
}

/// Runs `vmimage hash FILE` on a 512 MiB file and applies `mutate` once vmimage has started
/// reading it (its descriptor's position is past 0) and before it has finished (the position
/// is still short of the end after the mutation). Runs where the timing did not allow that
/// are retried: the assertions only ever see runs where the file really changed mid-read.
fn hash_while_changing(mutate: impl Fn(&std::fs::File)) -> (i32, String, String) {
    let w = Workdir::new();
    let path = w.join("moving.img");
    let len = 512u64 << 20;
    for _attempt in 0..5 {
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(len).unwrap();
        let path = path.canonicalize().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vmimage"))
            .args(["hash", "moving.img"])
            .current_dir(w.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut caught = false;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(20) {
            match read_position(child.id(), &path) {
                Some(pos) if pos > 0 && pos < len => {
                    mutate(&file);
                    caught = read_position(child.id(), &path).is_some_and(|p| p < len);
                    break;
                }
                Some(_) | None => std::thread::yield_now(),
            }
            if !Path::new(&format!("/proc/{}", child.id())).exists() {
                break;
            }
        }
        let out = child.wait_with_output().unwrap();
        if caught {
            return (
                out.status.code().expect("vmimage died from a signal"),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
    }
    panic!("could not catch vmimage in the middle of reading the file in 5 attempts");
}

#[test]
fn a_file_that_grows_while_it_is_read_is_an_error_and_no_digest() {
    let (code, stdout, stderr) = hash_while_changing(|f| {
        use std::os::unix::fs::FileExt;
        let end = f.metadata().unwrap().len();
        f.write_all_at(b"appended", end).unwrap();
    });
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(
        stderr.starts_with("vmimage: ") && stderr.contains("moving.img: changed while it was read"),
        "{stderr}"
    );
}

#[test]
fn a_file_truncated_while_it_is_read_is_an_error_not_a_crash() {
    // A memory-mapped reader would die of SIGBUS here; vmimage reads, sees an early end of
    // file, and says so.
    let (code, stdout, stderr) = hash_while_changing(|f| f.set_len(4096).unwrap());
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(
        stderr.contains("moving.img: changed while it was read"),
        "{stderr}"
    );
}

#[test]
fn progress_goes_to_stderr_only_when_asked_and_never_touches_stdout() {
    let w = Workdir::new();
    w.write("f", &pattern(2 * CHUNK));
    let quiet = w.vmimage(&["hash", "f"]);
    quiet.expect_code(0);
    assert_eq!(quiet.stderr, "", "no progress in a pipe without --progress");
    let shown = w.vmimage(&["hash", "--progress", "f"]);
    shown.expect_code(0);
    assert_eq!(shown.stdout, quiet.stdout);
    assert!(shown.stderr.contains("MiB"), "{}", shown.stderr);
}

// ---- --check, against md5sum -c / sha256sum -c on the same manifests ----

/// A directory with files `a`, `b c`, `back\slash`, `dir/`, and the MD5 of each.
fn check_fixture() -> (Workdir, String, String, String) {
    let w = Workdir::new();
    w.write("a", b"hello\n");
    w.write("b c", &pattern(CHUNK + 1));
    w.write("back\\slash", b"z");
    std::fs::create_dir(w.join("dir")).unwrap();
    let a = coreutils_digest(w.path(), "md5sum", "a");
    let b = coreutils_digest(w.path(), "md5sum", "b c");
    let (out, _, _) = tool(w.path(), "md5sum", &["back\\slash"], None);
    let s = out
        .trim_start_matches('\\')
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    (w, a, b, s)
}

/// Runs `vmimage hash --check --algo <alg> FLAGS MANIFEST` and `<tool> -c FLAGS MANIFEST`;
/// asserts the same stdout, the same exit status, and the same stderr once the program name
/// is swapped.
fn same_as_coreutils(w: &Workdir, alg: &str, program: &str, manifest: &str, flags: &[&str]) {
    let mut ours = vec!["hash", "--check", "--algo", alg];
    ours.extend(flags);
    ours.push(manifest);
    let run = w.vmimage(&ours);
    let mut theirs = vec!["-c"];
    theirs.extend(flags);
    theirs.push(manifest);
    let (out, err, code) = tool(w.path(), program, &theirs, None);
    let context = format!(
        "{manifest} {flags:?}\n--- {program}:\n{out}{err}--- vmimage:\n{}{}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stdout, out, "stdout differs: {context}");
    assert_eq!(run.code, code, "status differs: {context}");
    let err = err.replace(&format!("{program}: "), "vmimage: ").replace(
        &format!("improperly formatted {} checksum line", alg.to_uppercase()),
        "improperly formatted checksum line",
    );
    assert_eq!(run.stderr, err, "stderr differs: {context}");
}

const FLAG_SETS: [&[&str]; 7] = [
    &[],
    &["--quiet"],
    &["--status"],
    &["--ignore-missing"],
    &["--strict"],
    &["--warn"],
    &["--ignore-missing", "--strict", "--quiet"],
];

#[test]
fn check_matches_md5sum_on_ok_failed_missing_unreadable_and_improper_lines() {
    let (w, a, b, s) = check_fixture();
    let zeros = "0".repeat(32);
    let manifest = format!(
        "# a comment\n\n{a}  a\n{b} *b c\n{zeros}  a\n{a}  missing\n{a}  dir\nnot a checksum line\n\
         {}  a\n{a}  a\r\n\\{s}  back\\\\slash\nMD5 (a) = {a}\n{a}5  a\n",
        a.to_uppercase()
    );
    w.write("mixed.md5", manifest.as_bytes());
    for flags in FLAG_SETS {
        same_as_coreutils(&w, "md5", "md5sum", "mixed.md5", flags);
    }
}

#[test]
fn check_matches_md5sum_on_all_good_all_missing_and_junk_manifests() {
    let (w, a, b, _) = check_fixture();
    w.write("good.md5", format!("{a}  a\n{b}  b c\n").as_bytes());
    w.write("missing.md5", format!("{a}  nothere\n").as_bytes());
    w.write("junk.md5", b"junk\n# only junk\n");
    w.write("empty.md5", b"");
    for manifest in [
        "good.md5",
        "missing.md5",
        "junk.md5",
        "empty.md5",
        "nonexistent.md5",
    ] {
        for flags in FLAG_SETS {
            same_as_coreutils(&w, "md5", "md5sum", manifest, flags);
        }
    }
}

#[test]
fn check_matches_sha256sum_on_packer_tab_manifests() {
    let (w, ..) = check_fixture();
    let a = coreutils_digest(w.path(), "sha256sum", "a");
    let b = coreutils_digest(w.path(), "sha256sum", "b c");
    // Packer's checksum post-processor writes `hex<TAB>name`.
    w.write(
        "packer.sha256",
        format!("{a}\ta\n{b}\tb c\n{}\ta\n", "f".repeat(64)).as_bytes(),
    );
    for flags in FLAG_SETS {
        same_as_coreutils(&w, "sha256", "sha256sum", "packer.sha256", flags);
    }
}

#[test]
fn check_verifies_its_own_output_reading_each_file_once_for_both_digests() {
    let (w, ..) = check_fixture();
    let run = w.vmimage(&["hash", "a", "b c", "back\\slash"]);
    run.expect_code(0);
    w.write("SUMS", run.stdout.as_bytes());
    let check = w.vmimage(&["hash", "--check", "SUMS"]);
    check.expect_code(0);
    assert_eq!(
        check.stdout,
        "a: OK\na: OK\nb c: OK\nb c: OK\nback\\slash: OK\nback\\slash: OK\n"
    );
    // The same file through cksum -c, the oracle for tagged manifests.
    let (out, _, code) = tool(w.path(), "cksum", &["-c", "SUMS"], None);
    assert_eq!((check.stdout.as_str(), 0), (out.as_str(), code));
}

#[test]
fn check_reads_a_pgp_clearsigned_manifest_and_says_the_signature_was_not_verified() {
    let (w, ..) = check_fixture();
    let a = coreutils_digest(w.path(), "sha256sum", "a");
    let b = coreutils_digest(w.path(), "sha256sum", "b c");
    let signed = format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{a}  a\n- {b}  b c\n\
         -----BEGIN PGP SIGNATURE-----\n\niHUEARYKAB0WIQQ\n=Xy9z\n-----END PGP SIGNATURE-----\n"
    );
    w.write("SHA256SUMS.gpg", signed.as_bytes());
    let run = w.vmimage(&["hash", "--check", "SHA256SUMS.gpg"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "a: OK\nb c: OK\n");
    assert!(
        run.stderr
            .contains("SHA256SUMS.gpg: PGP signature NOT verified"),
        "{}",
        run.stderr
    );
    // A mismatch in the signed text still fails.
    w.write("b c", b"changed");
    let run = w.vmimage(&["hash", "--check", "SHA256SUMS.gpg"]);
    run.expect_code(1);
    assert_eq!(run.stdout, "a: OK\nb c: FAILED\n");
}

#[test]
fn check_reads_a_manifest_from_standard_input() {
    let (w, a, ..) = check_fixture();
    let manifest = format!("{a}  a\n");
    let run = w.vmimage_stdin(&["hash", "--check"], Some(manifest.as_bytes()));
    run.expect_code(0);
    assert_eq!(run.stdout, "a: OK\n");
    let (out, _, code) = tool(w.path(), "md5sum", &["-c"], Some(manifest.as_bytes()));
    assert_eq!((run.stdout.as_str(), run.code), (out.as_str(), code));
}

#[test]
fn check_flags_without_check_are_usage_errors() {
    let w = Workdir::new();
    w.write("f", b"");
    w.vmimage(&["hash", "--quiet", "f"]).expect_code(2);
    w.vmimage(&["hash", "--check", "--json", "f"])
        .expect_code(2);
}
