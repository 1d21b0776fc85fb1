//! `convert IN s3://bucket/key` against a real S3 server on loopback (`s3s-fs`, started by
//! `crate::s3`): the object equals a local conversion, its digests are the bytes' own, and
//! every failure (a corrupted part, a signal, a digest mismatch, wrong credentials) leaves neither an object nor an upload in progress.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::s3::{S3Server, s3_server};
use crate::util::Workdir;

/// A qcow2 of `size` with data in three places (more than one 8 MiB part once converted);
/// also the Garage tests' input.
pub(crate) fn make_input(w: &Workdir, size: &str) {
    w.qemu_img(&["create", "-q", "-f", "qcow2", "in.qcow2", size]);
    w.qemu_io(&[
        "-c",
        "write -P 0x5a 1M 9M",
        "-c",
        "write -P 0x11 14M 64k",
        "-c",
        "write -P 0x77 20M 3M",
        "in.qcow2",
    ]);
}

/// `md5sum`'s or `sha512sum`'s answer for `path`.
fn coreutils_digest(tool: &str, path: &std::path::Path) -> String {
    let out = Command::new(tool).arg(path).output().expect("coreutils");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// What s3s-fs keeps of unfinished multipart uploads in its data directory (it has no
/// ListMultipartUploads): `.upload-ID.json` and `.upload_id-ID.part-N` files.
fn uploads_in_progress(server: &S3Server) -> Vec<String> {
    let data = server
        .object_file("x")
        .and_then(|p| p.parent()?.parent().map(std::path::Path::to_path_buf))
        .expect("a server this harness started");
    std::fs::read_dir(&data)
        .expect("read the data directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.starts_with(".upload").then_some(name)
        })
        .collect()
}

fn assert_nothing_left(server: &S3Server, key: &str) {
    let object = server.object_file(key).expect("a local data directory");
    assert!(!object.exists(), "the object {key} was left behind");
    assert_eq!(
        uploads_in_progress(server),
        Vec::<String>::new(),
        "an upload was left in progress"
    );
}

#[test]
fn an_uploaded_object_is_the_local_conversion_and_its_digests_are_its_bytes() {
    let Some(server) = s3_server() else { return };
    let w = Workdir::new();
    make_input(&w, "40M");
    for (format, key) in [
        ("raw", "images/disk.raw"),
        ("qcow2", "images/disk.qcow2"),
        ("vmdk", "images/disk.vmdk"),
    ] {
        let url = server.url(key);
        let run = server.vmimage(
            &w,
            &[
                "convert",
                "in.qcow2",
                &url,
                "-O",
                format,
                "--json",
                "--metadata",
                &format!("{format}.body.json"),
                "--target",
                "glance",
                "--sidecar",
                &format!("{format}.side.json"),
            ],
        );
        run.expect_code(0);
        let object = server.object_file(key).expect("a local data directory");
        assert!(object.exists(), "{key}: no object");
        // qemu-img reads the object as the input's guest.
        let cmp = w.qemu_img_any(&[
            "compare",
            "-q",
            "-f",
            "qcow2",
            "-F",
            format,
            "in.qcow2",
            object.to_str().unwrap(),
        ]);
        assert!(cmp.status.success(), "{key}: qemu-img compare differs");
        // The same bytes as a local conversion (raw and qcow2 carry no random ids).
        if format != "vmdk" {
            let local = format!("local.{format}");
            w.vmimage(&["convert", "in.qcow2", &local, "-O", format])
                .expect_code(0);
            assert_eq!(
                std::fs::read(&object).unwrap(),
                std::fs::read(w.join(&local)).unwrap(),
                "{key}"
            );
        }
        // The digests reported and recorded are md5sum's and sha512sum's of the object.
        let md5 = coreutils_digest("md5sum", &object);
        let sha512 = coreutils_digest("sha512sum", &object);
        let report = run.json();
        assert_eq!(report["digests"]["md5"], md5.as_str(), "{key}");
        assert_eq!(report["digests"]["sha512"], sha512.as_str(), "{key}");
        assert_eq!(report["output"], url.as_str());
        let sidecar = std::fs::read_to_string(w.join(&format!("{format}.side.json"))).unwrap();
        assert!(
            sidecar.contains(&md5) && sidecar.contains(&sha512),
            "{sidecar}"
        );
        assert!(w.join(&format!("{format}.body.json")).exists());
    }
    assert_eq!(uploads_in_progress(&server), Vec::<String>::new());
}

#[test]
fn a_part_corrupted_on_the_way_is_refused_and_the_upload_aborted() {
    let Some(server) = s3_server() else { return };
    let w = Workdir::new();
    make_input(&w, "40M");
    let url = server.url("corrupt.raw");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmimage"));
    cmd.args([
        "convert",
        "in.qcow2",
        &url,
        "-O",
        "raw",
        "--metadata",
        "body.json",
        "--target",
        "glance",
    ])
    .current_dir(w.path())
    .env("VMIMAGE_TEST_FAULT", "corrupt-part");
    strip_aws(&mut cmd);
    cmd.envs(server.env());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot upload to {url}")),
        "{stderr}"
    );
    // s3s-fs 0.14.1 answers a signed payload hash that does not match the body with a bare
    // 500 InternalError (S3: 400 XAmzContentSHA256Mismatch or BadDigest), which the client
    // retries; the sentence says which part the server would not store.
    assert!(stderr.contains("part 1 was not stored: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!w.join("body.json").exists());
    assert_nothing_left(&server, "corrupt.raw");
}

/// s3s-fs 0.14.1 accepts a multipart upload to a bucket that does not exist and creates the
/// bucket at completion; vmimage asks first, and stops before the conversion.
#[test]
fn a_missing_bucket_is_one_sentence_naming_it_and_leaves_nothing() {
    let Some(server) = s3_server() else { return };
    let w = Workdir::new();
    make_input(&w, "40M");
    let url = "s3://no-such-bucket/disk.raw";
    let run = server.vmimage(
        &w,
        &[
            "convert",
            "in.qcow2",
            url,
            "-O",
            "raw",
            "--metadata",
            "body.json",
            "--target",
            "glance",
        ],
    );
    run.expect_code(2);
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "vmimage: cannot upload to {url}: the bucket no-such-bucket does not exist (NoSuchBucket)"
        )
    );
    let data = server
        .object_file("x")
        .and_then(|p| p.parent()?.parent().map(std::path::Path::to_path_buf))
        .expect("a server this harness started");
    assert!(
        !data.join("no-such-bucket").exists(),
        "the bucket was created"
    );
    assert_eq!(uploads_in_progress(&server), Vec::<String>::new());
    assert_eq!(w.listing(), ["in.qcow2"]);
}

/// An HTTPS endpoint with a private certificate authority: the upload is refused (before any
/// part, one sentence, exit 2) until `--ca-cert` names the authority, as reads are.
#[test]
fn an_upload_to_an_https_endpoint_trusts_the_ca_cert() {
    let Some(server) = s3_server() else { return };
    let w = Workdir::new();
    let Some((ca, cert, key)) = crate::remote::certificates(&w) else {
        return;
    };
    let Some(front) = crate::remote::WebServer::tls_front(server.port(), &cert, &key) else {
        return;
    };
    make_input(&w, "40M");
    let endpoint = front.url("https", "").trim_end_matches('/').to_string();
    let env: Vec<(String, String)> = server
        .env_with(&endpoint)
        .into_iter()
        .filter(|(k, _)| k != "AWS_ALLOW_HTTP")
        .collect();
    let url = server.url("tls/disk.qcow2");
    let untrusted = w.vmimage_env(&["convert", "in.qcow2", &url, "-O", "qcow2"], &env);
    untrusted.expect_code(2);
    assert!(
        untrusted
            .stderr
            .starts_with(&format!("vmimage: cannot upload to {url}: ")),
        "{}",
        untrusted.stderr
    );
    assert_eq!(untrusted.stderr.lines().count(), 1, "{}", untrusted.stderr);
    assert_nothing_left(&server, "tls/disk.qcow2");

    let ca = ca.to_str().unwrap();
    w.vmimage_env(
        &["convert", "in.qcow2", &url, "-O", "qcow2", "--ca-cert", ca],
        &env,
    )
    .expect_code(0);
    w.vmimage(&["convert", "in.qcow2", "local.qcow2", "-O", "qcow2"])
        .expect_code(0);
    assert_eq!(
        std::fs::read(server.object_file("tls/disk.qcow2").unwrap()).unwrap(),
        std::fs::read(w.join("local.qcow2")).unwrap()
    );
    assert_eq!(uploads_in_progress(&server), Vec::<String>::new());
}

/// Removes the test environment's own `AWS_*` variables from `cmd`.
fn strip_aws(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("AWS_")) {
            cmd.env_remove(key);
        }
    }
}

#[test]
fn an_interrupted_upload_leaves_no_object_and_no_upload() {
    let Some(server) = s3_server() else { return };
    let w = Workdir::new();
    make_input(&w, "64M");
    let url = server.url("interrupted.raw");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmimage"));
    // The output stops growing past 20 MB: the first 8 MiB part is sent, then nothing moves.
    cmd.args(["convert", "in.qcow2", &url, "-O", "raw"])
        .current_dir(w.path())
        .env("VMIMAGE_TEST_FAULT", "stall-after=20000000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    strip_aws(&mut cmd);
    cmd.envs(server.env());
    let child = cmd.spawn().unwrap();
    let start = Instant::now();
    while uploads_in_progress(&server)
        .iter()
        .filter(|n| n.contains(".part-"))
        .count()
        < 1
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no part arrived: {:?}",
            uploads_in_progress(&server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A part is stored, and the conversion is stalled: the upload is in progress.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!uploads_in_progress(&server).is_empty());
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_nothing_left(&server, "interrupted.raw");
}

#[test]
fn a_digest_mismatch_aborts_the_upload_before_it_completes() {
    let Some(server) = s3_server() else { return };
    let w = Workdir::new();
    make_input(&w, "40M");
    w.vmimage(&["convert", "in.qcow2", "local.qcow2", "-O", "qcow2"])
        .expect_code(0);
    let md5 = coreutils_digest("md5sum", &w.join("local.qcow2"));
    let url = server.url("expected.qcow2");
    let wrong = format!("sha512:{}", "ab".repeat(64));
    let run = server.vmimage(
        &w,
        &[
            "convert",
            "in.qcow2",
            &url,
            "-O",
            "qcow2",
            "--expect",
            &format!("md5:{md5}"),
            "--expect",
            &wrong,
            "--metadata",
            "body.json",
            "--target",
            "glance",
        ],
    );
    run.expect_code(1);
    assert!(run.stderr.contains(&"ab".repeat(64)), "{}", run.stderr);
    assert!(run.stderr.contains(&url), "{}", run.stderr);
    assert!(!w.join("body.json").exists());
    assert_nothing_left(&server, "expected.qcow2");
    // The right digests let it complete.
    server
        .vmimage(
            &w,
            &[
                "convert",
                "in.qcow2",
                &url,
                "-O",
                "qcow2",
                "--expect",
                &format!("md5:{md5}"),
            ],
        )
        .expect_code(0);
    assert_eq!(
        std::fs::read(server.object_file("expected.qcow2").unwrap()).unwrap(),
        std::fs::read(w.join("local.qcow2")).unwrap()
    );
}

#[test]
fn wrong_credentials_and_a_web_url_are_one_sentence_and_exit_2() {
    let Some(server) = s3_server() else { return };
    let w = Workdir::new();
    make_input(&w, "40M");
    let url = server.url("denied.raw");
    let wrong: Vec<(String, String)> = server
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "AWS_SECRET_ACCESS_KEY" {
                (k, "not-the-secret".to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    let run = w.vmimage_env(&["convert", "in.qcow2", &url, "-O", "raw"], &wrong);
    run.expect_code(2);
    assert!(
        run.stderr.contains(&format!("cannot upload to {url}"))
            && run.stderr.contains("access denied"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // A missing bucket: a_missing_bucket_is_one_sentence_naming_it_and_leaves_nothing.
    let run = server.vmimage(
        &w,
        &[
            "convert",
            "in.qcow2",
            "https://example.invalid/disk.raw",
            "-O",
            "raw",
        ],
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("s3://bucket/key only"),
        "{}",
        run.stderr
    );
    assert_nothing_left(&server, "denied.raw");
    assert_eq!(w.listing(), ["in.qcow2"]);
}
