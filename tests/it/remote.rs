//! Images where they live: `s3://` objects on a real S3 server (s3s-fs, see `s3.rs`) and
//! `https://` files, read in place by every command that reads images.

use crate::s3::s3_server;
use crate::util::Workdir;

/// Some bytes that are not all alike, `len` of them.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `hash s3://...` streams the object through the same digest engine as a file: the same
/// digests, the line naming the URL.
#[test]
fn hash_of_an_object_equals_hash_of_the_file() {
    let Some(s3) = s3_server() else { return };
    let dir = Workdir::new();
    let file = dir.write("disk.raw", &noise(3 << 20 | 12345));
    s3.put_file("images/disk.raw", &file);
    let url = s3.url("images/disk.raw");
    let remote = s3.vmimage(&dir, &["hash", "--algo", "md5,sha256,sha512", &url]);
    remote.expect_code(0);
    let local = dir.vmimage(&["hash", "--algo", "md5,sha256,sha512", "disk.raw"]);
    local.expect_code(0);
    assert_eq!(
        remote.stdout,
        local.stdout.replace("(disk.raw)", &format!("({url})"))
    );
}

/// `batch` reads an `s3://` item in place, as `hash` does: the shard's result line holds the
/// digests `hash` prints for the local file, and a missing object is that item's `error`.
#[test]
fn batch_hashes_s3_items_in_place() {
    let Some(s3) = s3_server() else { return };
    let dir = Workdir::new();
    let file = dir.write("disk.raw", &noise(2 << 20 | 777));
    s3.put_file("images/disk.raw", &file);
    let url = s3.url("images/disk.raw");
    let gone = s3.url("images/gone.raw");
    dir.write(
        "m.jsonl",
        format!(
            "{{\"id\": \"a\", \"source\": \"{url}\"}}\n{{\"id\": \"b\", \"source\": \"{gone}\"}}\n"
        )
        .as_bytes(),
    );
    let run = s3.vmimage(
        &dir,
        &[
            "batch",
            "--manifest",
            "m.jsonl",
            "--algo",
            "md5,sha512",
            "--out",
            "r.jsonl",
        ],
    );
    run.expect_code(2);
    let results = std::fs::read_to_string(dir.path().join("r.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{results}");
    for (algo, program) in [("md5", "md5sum"), ("sha512", "sha512sum")] {
        let want = crate::batch::coreutils(dir.path(), program, "disk.raw");
        assert_eq!(
            lines[0]["digests"][algo].as_str(),
            Some(want.as_str()),
            "{results}"
        );
    }
    assert_eq!(lines[0]["status"], "ok", "{results}");
    assert_eq!(lines[1]["status"], "error", "{results}");
    let sentence = lines[1]["errors"][0].as_str().unwrap_or_default();
    assert!(
        sentence.contains("gone.raw") && sentence.contains("404"),
        "{sentence}"
    );
}

/// The web server of `tests/remote_server.py`, serving one directory (HTTPS when given a
/// certificate), recording every request, misbehaving on request.
pub struct WebServer {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WebServer {
    /// Serves `root`; `tls`: the certificate and key files; `fault`: `stall`, `truncate`,
    /// `error500`, `etag-changes`.
    pub fn start(
        root: &std::path::Path,
        tls: Option<(&std::path::Path, &std::path::Path)>,
        fault: Option<&str>,
    ) -> Option<Self> {
        Self::spawn(root, tls, fault, None)
    }

    /// An HTTPS front for a plain-HTTP server on loopback port `upstream`: TLS with `cert`
    /// and `key`, each connection's bytes forwarded untouched.
    pub fn tls_front(upstream: u16, cert: &std::path::Path, key: &std::path::Path) -> Option<Self> {
        let root = tempfile::tempdir().expect("temp dir");
        Self::spawn(root.path(), Some((cert, key)), None, Some(upstream))
    }

    fn spawn(
        root: &std::path::Path,
        tls: Option<(&std::path::Path, &std::path::Path)>,
        fault: Option<&str>,
        forward: Option<u16>,
    ) -> Option<Self> {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/remote_server.py");
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let log = dir.path().join("requests.log");
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(&script)
            .arg("--dir")
            .arg(root)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if let Some((cert, key)) = tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(f) = fault {
            cmd.args(["--fault", f]);
        }
        if let Some(port) = forward {
            cmd.args(["--forward", &port.to_string()]);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return crate::s3::skip(&format!("python3 cannot run: {e}")),
        };
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(10) {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse()
            {
                return Some(Self {
                    child,
                    port,
                    log,
                    _dir: dir,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("tests/remote_server.py did not start");
    }

    /// `SCHEME://127.0.0.1:PORT/name`.
    pub fn url(&self, scheme: &str, name: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/{name}", self.port)
    }

    /// The requests served so far, one `METHOD PATH RANGE` line each.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A certificate authority and a server certificate for 127.0.0.1 that it signed, made with
/// the openssl command in `dir`: (`ca.pem`, `server.pem`, `server.key`).
pub fn certificates(
    dir: &Workdir,
) -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=vmimage test CA",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    dir.write(
        "server.ext",
        b"subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    for args in &steps {
        match openssl(args) {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => return crate::s3::skip(&format!("the openssl command cannot run: {e}")),
        }
    }
    Some((
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))
}

/// `info` of a multi-GiB qcow2 object reads its header with ranged GETs: the HEAD and at most
/// two GETs, whatever its size, and reports what it reports of the local file.
#[test]
fn info_of_a_multi_gib_qcow2_object_takes_at_most_3_requests() {
    let Some(s3) = s3_server() else { return };
    let dir = Workdir::new();
    // 6 GiB of preallocated metadata: a sparse file of about 6 GiB whose tables span it.
    dir.qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "preallocation=metadata",
        "big.qcow2",
        "6G",
    ]);
    let len = std::fs::metadata(dir.join("big.qcow2")).unwrap().len();
    assert!(len > 6 << 30, "{len}");
    s3.put_file("big.qcow2", &dir.join("big.qcow2"));
    let proxy = crate::s3::CountingProxy::start(s3.port());
    let url = s3.url("big.qcow2");
    let remote = dir.vmimage_env(&["info", "--json", &url], &s3.env_with(&proxy.endpoint()));
    remote.expect_code(0);
    let requests = proxy.requests();
    assert!(requests.len() <= 3, "{requests:#?}");
    assert!(proxy.ranged_bytes() <= 2 << 20, "{requests:#?}");
    let local = dir.vmimage(&["info", "--json", "big.qcow2"]);
    local.expect_code(0);
    let (mut r, mut l) = (remote.json(), local.json());
    for j in [&mut r, &mut l] {
        let o = j.as_object_mut().unwrap();
        o.remove("filename");
        o.remove("actual-size");
    }
    assert_eq!(r, l);
}

/// A fixed VHD keeps its footer in its last 512 bytes: the tail is read by one more GET.
#[test]
fn info_of_a_fixed_vhd_object_reads_its_footer() {
    let Some(s3) = s3_server() else { return };
    let dir = Workdir::new();
    dir.qemu_img(&[
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=fixed",
        "disk.vhd",
        "3G",
    ]);
    s3.put_file("disk.vhd", &dir.join("disk.vhd"));
    let proxy = crate::s3::CountingProxy::start(s3.port());
    let run = dir.vmimage_env(
        &["info", "--json", &s3.url("disk.vhd")],
        &s3.env_with(&proxy.endpoint()),
    );
    run.expect_code(0);
    assert_eq!(run.json()["format"], "vpc", "{}", run.stdout);
    let requests = proxy.requests();
    assert!(requests.len() <= 3, "{requests:#?}");
}

/// `check` reads the qcow2 tables with a few coalesced ranged GETs, never the data clusters,
/// and gives the local file's verdict.
#[test]
fn check_of_an_object_reads_the_tables_not_the_data() {
    let Some(s3) = s3_server() else { return };
    let dir = Workdir::new();
    dir.qemu_img(&["create", "-q", "-f", "qcow2", "disk.qcow2", "256M"]);
    // 48 MiB of data in three runs across the disk.
    dir.qemu_io(&[
        "-c",
        "write -P 0x5a 0 16M",
        "-c",
        "write -P 0x33 96M 16M",
        "-c",
        "write -P 0x11 200M 16M",
        "disk.qcow2",
    ]);
    s3.put_file("disk.qcow2", &dir.join("disk.qcow2"));
    let proxy = crate::s3::CountingProxy::start(s3.port());
    let remote = dir.vmimage_env(
        &["check", "--json", &s3.url("disk.qcow2")],
        &s3.env_with(&proxy.endpoint()),
    );
    remote.expect_code(0);
    let local = dir.vmimage(&["check", "--json", "disk.qcow2"]);
    local.expect_code(0);
    let (mut r, mut l) = (remote.json(), local.json());
    for j in [&mut r, &mut l] {
        j.as_object_mut().unwrap().remove("filename");
    }
    assert_eq!(r, l);
    let requests = proxy.requests();
    assert!(requests.len() <= 8, "{requests:#?}");
    assert!(
        proxy.ranged_bytes() <= 8 << 20,
        "{} bytes: {requests:#?}",
        proxy.ranged_bytes()
    );
}

/// `verify`, `metadata` and `convert` read an object as they read the file: the same
/// verdict, the same body, the same converted image.
#[test]
fn verify_metadata_and_convert_read_an_object_as_a_file() {
    let Some(s3) = s3_server() else { return };
    let dir = Workdir::new();
    dir.qemu_img(&["create", "-q", "-f", "qcow2", "disk.qcow2", "64M"]);
    dir.qemu_io(&[
        "-c",
        "write -P 0x7e 0 3M",
        "-c",
        "write -P 0x21 40M 1M",
        "disk.qcow2",
    ]);
    s3.put_file("vm/disk.qcow2", &dir.join("disk.qcow2"));
    let url = s3.url("vm/disk.qcow2");
    let md5 = dir.vmimage(&["hash", "--algo", "md5", "disk.qcow2"]);
    let md5 = md5.stdout.trim().rsplit(' ').next().unwrap().to_string();

    let run = s3.vmimage(&dir, &["verify", "--json", &url, "--checksum", &md5]);
    run.expect_code(0);
    assert_eq!(run.json()["verdict"], "verified", "{}", run.stdout);
    let wrong = "0".repeat(32);
    s3.vmimage(&dir, &["verify", &url, "--checksum", &wrong])
        .expect_code(1);

    let remote = s3.vmimage(
        &dir,
        &["metadata", &url, "--target", "glance", "--name", "vm"],
    );
    remote.expect_code(0);
    let local = dir.vmimage(&[
        "metadata",
        "disk.qcow2",
        "--target",
        "glance",
        "--name",
        "vm",
    ]);
    local.expect_code(0);
    assert_eq!(remote.stdout, local.stdout);

    s3.vmimage(&dir, &["convert", &url, "remote.raw", "-O", "raw"])
        .expect_code(0);
    dir.vmimage(&["convert", "disk.qcow2", "local.raw", "-O", "raw"])
        .expect_code(0);
    assert!(
        std::fs::read(dir.join("remote.raw")).unwrap()
            == std::fs::read(dir.join("local.raw")).unwrap()
    );
    dir.qemu_img(&[
        "compare",
        "-q",
        "-f",
        "raw",
        "-F",
        "qcow2",
        "remote.raw",
        "disk.qcow2",
    ]);
}

/// `hash --check` reads manifests that name URLs, and `--ignore-missing` skips a missing
/// object as it skips a missing file.
#[test]
fn a_manifest_may_name_objects() {
    let Some(s3) = s3_server() else { return };
    let dir = Workdir::new();
    let file = dir.write("a.img", &noise(100_000));
    s3.put_file("a.img", &file);
    let sum = dir.vmimage(&["hash", "--algo", "sha256", "a.img"]);
    let hex = sum.stdout.trim().rsplit(' ').next().unwrap().to_string();
    let url = s3.url("a.img");
    let missing = s3.url("missing.img");
    dir.write(
        "SHA256SUMS",
        format!("{hex}  {url}\n{hex}  {missing}\n").as_bytes(),
    );
    let run = s3.vmimage(&dir, &["hash", "--check", "--ignore-missing", "SHA256SUMS"]);
    run.expect_code(0);
    assert_eq!(run.stdout, format!("{url}: OK\n"));
}

/// Each failure is one sentence on stderr naming the URL, and exit status 2.
#[test]
fn wrong_credentials_a_missing_bucket_and_a_missing_object_are_one_sentence_each() {
    let Some(s3) = s3_server() else { return };
    let dir = Workdir::new();
    let file = dir.write("a.img", &noise(4096));
    s3.put_file("a.img", &file);
    let url = s3.url("a.img");
    let one_sentence = |run: &crate::util::Run, url: &str, words: &str| {
        run.expect_code(2);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        assert!(
            lines[0].starts_with(&format!("vmimage: cannot read {url}: ")),
            "{}",
            run.stderr
        );
        assert!(lines[0].contains(words), "{}", run.stderr);
    };
    let mut env = s3.env();
    for (k, v) in &mut env {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "not-the-secret".into();
        }
    }
    for command in [&["hash"][..], &["info"], &["check"]] {
        let args: Vec<&str> = command.iter().copied().chain([url.as_str()]).collect();
        let run = dir.vmimage_env(&args, &env);
        if command == ["check"] {
            // qemu-img check's statuses: 1, the check could not run.
            run.expect_code(1);
            continue;
        }
        one_sentence(&run, &url, "access denied");
    }
    let no_bucket = "s3://no-such-bucket/a.img";
    one_sentence(
        &s3.vmimage(&dir, &["info", no_bucket]),
        no_bucket,
        "no such bucket or object",
    );
    let missing = s3.url("missing.img");
    one_sentence(
        &s3.vmimage(&dir, &["hash", &missing]),
        &missing,
        "no such bucket or object",
    );
    one_sentence(
        &s3.vmimage(&dir, &["convert", &missing, "out.qcow2", "-O", "qcow2"]),
        &missing,
        "no such bucket or object",
    );
    assert!(!dir.join("out.qcow2").exists());
}

/// HTTPS with a private certificate authority: refused until `--ca-cert` (or SSL_CERT_FILE)
/// names it; then every command reads the file as it reads a local one.
#[test]
fn https_sources_with_a_private_certificate_authority() {
    let dir = Workdir::new();
    let Some((ca, cert, key)) = certificates(&dir) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data = noise(2 << 20 | 777);
    std::fs::write(root.path().join("disk.raw"), &data).unwrap();
    std::fs::write(dir.join("disk.raw"), &data).unwrap();
    let Some(server) = WebServer::start(root.path(), Some((&cert, &key)), None) else {
        return;
    };
    let url = server.url("https", "disk.raw");
    let untrusted = dir.vmimage_env(&["hash", &url], &[]);
    untrusted.expect_code(2);
    assert!(
        untrusted
            .stderr
            .starts_with(&format!("vmimage: cannot read {url}: ")),
        "{}",
        untrusted.stderr
    );
    assert_eq!(untrusted.stderr.lines().count(), 1, "{}", untrusted.stderr);

    let ca = ca.to_str().unwrap();
    let local = dir.vmimage(&["hash", "disk.raw"]);
    let remote = dir.vmimage_env(&["hash", "--ca-cert", ca, &url], &[]);
    remote.expect_code(0);
    assert_eq!(
        remote.stdout,
        local.stdout.replace("(disk.raw)", &format!("({url})"))
    );
    let by_env = dir.vmimage_env(&["hash", &url], &[("SSL_CERT_FILE".into(), ca.into())]);
    by_env.expect_code(0);
    assert_eq!(by_env.stdout, remote.stdout);
    dir.vmimage_env(&["info", "--ca-cert", ca, &url], &[])
        .expect_code(0);
}

/// Plain HTTP only with `--allow-http`.
#[test]
fn http_sources_need_allow_http() {
    let dir = Workdir::new();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.img"), noise(5000)).unwrap();
    let Some(server) = WebServer::start(root.path(), None, None) else {
        return;
    };
    let url = server.url("http", "a.img");
    let refused = dir.vmimage(&["hash", &url]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("--allow-http"),
        "{}",
        refused.stderr
    );
    assert!(server.requests().is_empty());
    dir.vmimage(&["hash", "--allow-http", &url]).expect_code(0);
}

/// A server that stalls, truncates its answer, fails every time, or whose object changes
/// between the HEAD and the GET: one sentence naming the URL, exit 2, soon.
#[test]
fn a_stalling_truncating_failing_or_changing_server_is_one_sentence_and_exit_2() {
    let dir = Workdir::new();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.img"), noise(3 << 20)).unwrap();
    let timeout = [("VMIMAGE_REMOTE_TIMEOUT".to_string(), "0.5".to_string())];
    for (fault, words) in [
        ("stall", "stopped sending"),
        ("truncate", "connection broke"),
        ("error500", "server failed"),
        ("etag-changes", "changed while it was read"),
    ] {
        let Some(server) = WebServer::start(root.path(), None, Some(fault)) else {
            return;
        };
        let url = server.url("http", "a.img");
        let start = std::time::Instant::now();
        let run = dir.vmimage_env(&["hash", "--allow-http", &url], &timeout);
        run.expect_code(2);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{fault}"
        );
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{fault}: {}", run.stderr);
        assert!(lines[0].contains(&url), "{fault}: {}", run.stderr);
        assert!(lines[0].contains(words), "{fault}: {}", run.stderr);
    }
}
