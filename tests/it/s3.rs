//! A real S3-compatible server on loopback for the remote tests: `s3s-fs` 0.14.1 (crate
//! `s3s-fs`, `cargo install s3s-fs --version 0.14.1 --locked --features binary`, which `.ci/run`
//! does), which verifies SigV4 signatures, `Content-MD5` and SHA-256 digests, ranges and
//! multipart rules. Each test starts its own on a free port with a temporary data directory
//! (it starts in about 15 ms), or uses the server at `VMIMAGE_TEST_S3_ENDPOINT` when that is
//! set (with `VMIMAGE_TEST_S3_BUCKET` and the `AWS_*` keys of the environment).
//!
//! Without the binary the remote tests skip, saying so, on a developer machine, and fail under
//! `CI=true`.

#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Run, Workdir};

/// The version the tests are written against: later versions need a newer rustc than 1.95.
pub const S3S_FS_VERSION: &str = "0.14.1";

const ACCESS_KEY: &str = "vmimage-test";
const SECRET_KEY: &str = "vmimage-test-secret";
const BUCKET: &str = "vmimage-test";

/// An S3 server the tests can use, and the environment that points `vmimage` at it.
pub struct S3Server {
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
    /// The data directory of a server this harness started: objects are files in
    /// `data/BUCKET/KEY`, so a test can place a sparse multi-GiB object without uploading it.
    data: Option<tempfile::TempDir>,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a missing tool fails the test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (returns `None` after saying why) on a developer machine; panics under `CI=true`.
pub fn skip<T>(reason: &str) -> Option<T> {
    assert!(!under_ci(), "{reason} (required under CI=true)");
    eprintln!("skipped: {reason}");
    None
}

/// The `s3s-fs` binary: on `PATH`, or where `cargo install` puts it.
fn s3s_fs_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")))
        .map(|dir| dir.join("s3s-fs"));
    for path in candidates {
        if let Ok(out) = Command::new(&path).arg("--version").output()
            && out.status.success()
        {
            let version = String::from_utf8_lossy(&out.stdout);
            if version.split_whitespace().last() == Some(S3S_FS_VERSION) {
                return Some(path);
            }
        }
    }
    None
}

/// A free loopback port (the listener is closed before the server binds it; a clash is
/// retried by the caller).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Waits until something listens on `port`, up to `limit`.
pub fn wait_listening(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// An S3 server for one test, or `None` (skipped) when none can be had outside CI.
pub fn s3_server() -> Option<S3Server> {
    if let Ok(endpoint) = std::env::var("VMIMAGE_TEST_S3_ENDPOINT") {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        return Some(S3Server {
            endpoint,
            bucket: std::env::var("VMIMAGE_TEST_S3_BUCKET").unwrap_or_else(|_| BUCKET.into()),
            access_key: var("AWS_ACCESS_KEY_ID"),
            secret_key: var("AWS_SECRET_ACCESS_KEY"),
            data: None,
            child: None,
            log: None,
        });
    }
    let Some(binary) = s3s_fs_binary() else {
        return skip(&format!(
            "s3s-fs {S3S_FS_VERSION} is not installed (cargo install s3s-fs --version {S3S_FS_VERSION} --locked --features binary)"
        ));
    };
    for _ in 0..5 {
        let data = tempfile::Builder::new()
            .prefix("vmimage-s3-")
            .tempdir()
            .expect("create the server's data directory");
        std::fs::create_dir(data.path().join(BUCKET)).expect("create the bucket directory");
        let log = data.path().with_extension("log");
        let port = free_port();
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_or(Stdio::null(), Stdio::from))
            .spawn()
            .expect("start s3s-fs");
        if wait_listening(port, Duration::from_secs(5)) && child.try_wait().ok().flatten().is_none()
        {
            return Some(S3Server {
                endpoint: format!("http://127.0.0.1:{port}"),
                bucket: BUCKET.into(),
                access_key: ACCESS_KEY.into(),
                secret_key: SECRET_KEY.into(),
                data: Some(data),
                child: Some(child),
                log: Some(log),
            });
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("s3s-fs did not start listening on a loopback port")
}

impl S3Server {
    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The test bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://BUCKET/key`.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The `AWS_*` variables that point `vmimage` at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_with(&self.endpoint)
    }

    /// [`S3Server::env`] with another endpoint (a proxy in front of the server).
    pub fn env_with(&self, endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", &self.access_key),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_key),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Runs `vmimage ARGS` in `dir` pointed at this server.
    pub fn vmimage(&self, dir: &Workdir, args: &[&str]) -> Run {
        dir.vmimage_env(args, &self.env())
    }

    /// The file that holds object `key`, when this harness started the server.
    pub fn object_file(&self, key: &str) -> Option<PathBuf> {
        self.data
            .as_ref()
            .map(|d| d.path().join(&self.bucket).join(key))
    }

    /// Stores the file at `path` as object `key`. On a server this harness started the file
    /// is copied into the data directory (holes stay holes, so a sparse multi-GiB image costs
    /// nothing), with the ETag s3s-fs would otherwise compute by reading it all; on another
    /// server it is uploaded.
    pub fn put_file(&self, key: &str, path: &Path) {
        if let Some(dest) = self.object_file(key) {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).expect("create the key's directories");
            }
            let status = Command::new("cp")
                .args(["--sparse=always", "--"])
                .arg(path)
                .arg(&dest)
                .status()
                .expect("run cp");
            assert!(status.success(), "cp {} failed", path.display());
            self.write_etag(key, &format!("{:032x}", fnv_of_file(path)));
            return;
        }
        self.upload(key, path);
    }

    /// s3s-fs keeps an object's ETag in `.bucket-B64.object-B64.internal.json` beside the
    /// buckets (s3s-fs 0.14.1 `src/fs.rs`, `get_internal_info_path`); without one it reads the
    /// whole object to compute an MD5 at every HEAD and GET.
    fn write_etag(&self, key: &str, etag: &str) {
        let Some(data) = &self.data else { return };
        let name = format!(
            ".bucket-{}.object-{}.internal.json",
            base64_url(self.bucket.as_bytes()),
            base64_url(key.as_bytes())
        );
        std::fs::write(data.path().join(name), format!("{{\"e_tag\":\"{etag}\"}}"))
            .expect("write the object's internal info");
    }

    /// Replaces object `key`'s bytes and ETag in place (a server this harness started): what
    /// another writer does while vmimage reads.
    pub fn overwrite(&self, key: &str, data: &[u8]) {
        let dest = self.object_file(key).expect("a local data directory");
        std::fs::write(&dest, data).expect("overwrite the object");
        self.write_etag(key, &format!("{:032x}", fnv(data)));
    }

    fn upload(&self, key: &str, path: &Path) {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_region("us-east-1")
            .with_allow_http(true)
            .build()
            .expect("an S3 client for the test server");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut file = std::fs::File::open(path).expect("open the file to upload");
        runtime.block_on(async {
            let location = object_store::path::Path::from(key);
            let mut upload = store
                .put_multipart(&location)
                .await
                .expect("start an upload");
            loop {
                let mut part = vec![0u8; 8 << 20];
                let mut filled = 0;
                while filled < part.len() {
                    let n = file.read(&mut part[filled..]).expect("read the file");
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                part.truncate(filled);
                if filled > 0 {
                    upload.put_part(part.into()).await.expect("upload a part");
                }
                if filled < 8 << 20 {
                    break;
                }
            }
            upload.complete().await.expect("complete the upload");
        });
    }
}

/// A stand-in ETag: any value that changes with the content will do for the tests.
fn fnv(data: &[u8]) -> u128 {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for &b in data {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    h
}

/// [`fnv`] of a file's length and first MiB (sparse multi-GiB files stay cheap).
fn fnv_of_file(path: &Path) -> u128 {
    let mut head = Vec::new();
    let file = std::fs::File::open(path).expect("open");
    let len = file.metadata().expect("metadata").len();
    file.take(1 << 20).read_to_end(&mut head).expect("read");
    head.extend_from_slice(&len.to_le_bytes());
    fnv(&head)
}

fn base64_url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

#[test]
fn base64_url_has_no_padding() {
    assert_eq!(base64_url(b"vmimage-test"), "dm1pbWFnZS10ZXN0");
    assert_eq!(base64_url(b"a"), "YQ");
    assert_eq!(base64_url(b"ab"), "YWI");
}

/// A TCP proxy on loopback in front of a server that records the requests passing through it
/// (their request lines and `Range` headers): how the tests count what `info` and `check` ask
/// for. Bytes are forwarded untouched, so SigV4 signatures (which cover the `Host` header the
/// client sent to the proxy) still verify. Only requests without bodies (HEAD, GET) are told
/// apart reliably, which is all the read tests send.
pub struct CountingProxy {
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl CountingProxy {
    /// A proxy to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Self {
        use std::io::Write;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let log = shared.clone();
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut line = Vec::new();
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        for &b in &buf[..n] {
                            if b == b'\n' {
                                let text = String::from_utf8_lossy(&line).trim().to_string();
                                let lower = text.to_ascii_lowercase();
                                if ["GET ", "HEAD ", "PUT ", "POST ", "DELETE "]
                                    .iter()
                                    .any(|m| text.starts_with(m))
                                    || lower.starts_with("range:")
                                {
                                    log.lock().expect("log").push(text);
                                }
                                line.clear();
                            } else if line.len() < 4096 {
                                line.push(b);
                            }
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { port, log }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines seen so far (`GET /bucket/key HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| !l.to_ascii_lowercase().starts_with("range:"))
            .cloned()
            .collect()
    }

    /// The bytes the `Range: bytes=A-B` headers seen so far asked for, in all.
    pub fn ranged_bytes(&self) -> u64 {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter_map(|l| {
                let spec = l.split_once('=')?.1;
                let (a, b) = spec.trim().split_once('-')?;
                Some(b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?)
            })
            .sum()
    }

    /// Forgets what was seen.
    pub fn clear(&self) {
        self.log.lock().expect("log").clear();
    }
}

impl S3Server {
    /// The port of the server's endpoint.
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("the endpoint ends in a port")
    }
}
