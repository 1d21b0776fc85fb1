//! `convert IN s3://...` and `hash s3://...` against a second S3 server, Garage, when
//! `GARAGE_BIN` names its binary (`cargo install garage --version 2.5.0 --locked`, about
//! 10-30 minutes on 2 cores: too slow for `.ci/run`, so these tests skip without it, under
//! `CI=true` too; s3s-fs stays the server CI runs, see `crate::s3`). Garage is AGPL-3.0 and
//! runs here only as an external program.
//!
//! Garage differs from s3s-fs where an upload is concerned: it keeps a multipart upload's
//! parts as its blocks (completion is metadata only, as on S3), checks `x-amz-checksum-sha256`
//! as well as the signed payload hash, and lists uploads in progress
//! (ListMultipartUploads), so "nothing left behind" is asked of the server itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::s3::{free_port, wait_listening};
use crate::s3_upload::make_input;
use crate::util::{Run, Workdir};

// Garage's own rules for an imported key: an id of 8+ characters, a secret of 16+.
const ACCESS_KEY: &str = "GKvmimage0test0key";
const SECRET_KEY: &str = "vmimage-garage-test-secret";
const BUCKET: &str = "vmimage-test";

/// A single-node Garage on loopback in a temporary directory, killed on drop.
struct Garage {
    endpoint: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `garage -c CONFIG ARGS` (an admin command, over the node's RPC port); panics with its
/// output when it fails.
fn admin(binary: &Path, config: &Path, args: &[&str]) -> String {
    let out = Command::new(binary)
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run garage");
    assert!(
        out.status.success(),
        "garage {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A started Garage with bucket [`BUCKET`] writable by the test key, or `None` (skipped) when
/// `GARAGE_BIN` is not set.
fn garage() -> Option<Garage> {
    let Some(binary) = std::env::var_os("GARAGE_BIN").map(PathBuf::from) else {
        eprintln!("skipped: GARAGE_BIN is not set (an optional second S3 server)");
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("vmimage-garage-")
        .tempdir()
        .expect("create Garage's directory");
    let (s3_port, rpc_port) = (free_port(), free_port());
    let config = dir.path().join("garage.toml");
    let root = dir.path().display();
    // One node, one copy, no compression: the blocks hold the bytes as sent.
    std::fs::write(
        &config,
        format!(
            "metadata_dir = \"{root}/meta\"\n\
             data_dir = \"{root}/data\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             compression_level = \"none\"\n\
             disable_scrub = true\n\
             rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_secret = \"{:064}\"\n\
             [s3_api]\n\
             s3_region = \"us-east-1\"\n\
             api_bind_addr = \"127.0.0.1:{s3_port}\"\n",
            17
        ),
    )
    .expect("write Garage's configuration");
    let log =
        std::fs::File::create(dir.path().join("garage.log")).map_or(Stdio::null(), Stdio::from);
    let child = Command::new(&binary)
        .arg("-c")
        .arg(&config)
        .arg("server")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start garage");
    let garage = Garage {
        endpoint: format!("http://127.0.0.1:{s3_port}"),
        child,
        _dir: dir,
    };
    assert!(
        wait_listening(s3_port, Duration::from_secs(20))
            && wait_listening(rpc_port, Duration::from_secs(20)),
        "Garage did not start listening"
    );
    let node = admin(&binary, &config, &["node", "id", "-q"]);
    let node = node
        .trim()
        .split('@')
        .next()
        .unwrap_or_default()
        .to_string();
    admin(
        &binary,
        &config,
        &["layout", "assign", "-z", "dc1", "-c", "1G", &node],
    );
    admin(&binary, &config, &["layout", "apply", "--version", "1"]);
    admin(
        &binary,
        &config,
        &[
            "key", "import", "--yes", "-n", "test", ACCESS_KEY, SECRET_KEY,
        ],
    );
    admin(&binary, &config, &["bucket", "create", BUCKET]);
    admin(
        &binary,
        &config,
        &[
            "bucket", "allow", "--read", "--write", "--owner", "--key", "test", BUCKET,
        ],
    );
    Some(garage)
}

impl Garage {
    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn vmimage(&self, w: &Workdir, args: &[&str]) -> Run {
        w.vmimage_env(args, &self.env())
    }

    /// A signed request with curl: `(status, body)`.
    fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .arg(format!("{}/{BUCKET}/{path}", self.endpoint))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The object's bytes.
    fn get(&self, key: &str, to: &Path) {
        let (status, _) = self.curl(&["-o", to.to_str().unwrap()], key);
        assert_eq!(status, 200, "GET {key}");
    }

    /// Whether object `key` exists (HEAD).
    fn exists(&self, key: &str) -> bool {
        self.curl(&["-I", "-o", "/dev/null"], key).0 == 200
    }

    /// Multipart uploads in progress in the bucket (ListMultipartUploads): their keys.
    fn uploads_in_progress(&self) -> Vec<String> {
        let (status, body) = self.curl(&[], "?uploads=");
        assert_eq!(status, 200, "ListMultipartUploads: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

/// `--json`'s digests.
fn digests(run: &Run) -> (String, String) {
    let json = run.json();
    let get = |k: &str| json["digests"][k].as_str().unwrap_or_default().to_string();
    (get("md5"), get("sha512"))
}

#[test]
fn an_upload_to_garage_is_the_local_conversion_and_hashes_the_same_remotely() {
    let Some(garage) = garage() else { return };
    let w = Workdir::new();
    make_input(&w, "40M");
    let url = format!("s3://{BUCKET}/images/disk.qcow2");
    let upload = garage.vmimage(&w, &["convert", "in.qcow2", &url, "-O", "qcow2", "--json"]);
    upload.expect_code(0);
    let local = w.vmimage(&[
        "convert",
        "in.qcow2",
        "local.qcow2",
        "-O",
        "qcow2",
        "--json",
    ]);
    local.expect_code(0);
    // Garage stored the local conversion's bytes, and the digests printed are theirs.
    garage.get("images/disk.qcow2", &w.join("fetched.qcow2"));
    let fetched = std::fs::read(w.join("fetched.qcow2")).unwrap();
    assert!(fetched.len() > 8 << 20, "one part only: {}", fetched.len());
    assert_eq!(fetched, std::fs::read(w.join("local.qcow2")).unwrap());
    assert_eq!(digests(&upload), digests(&local));
    // A remote hash of the object (one streaming GET) gives the same digests.
    let remote = garage.vmimage(&w, &["hash", "--algo", "md5,sha512", "--json", &url]);
    remote.expect_code(0);
    let file = w.vmimage(&["hash", "--algo", "md5,sha512", "--json", "local.qcow2"]);
    file.expect_code(0);
    assert_eq!(remote.json()[0]["digests"], file.json()[0]["digests"]);
    assert_eq!(remote.json()[0]["digests"], local.json()["digests"]);
    assert_eq!(garage.uploads_in_progress(), Vec::<String>::new());
}

#[test]
fn garage_refuses_a_part_corrupted_on_the_way_and_nothing_is_left() {
    let Some(garage) = garage() else { return };
    let w = Workdir::new();
    make_input(&w, "40M");
    let url = format!("s3://{BUCKET}/corrupt.raw");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmimage"));
    cmd.args(["convert", "in.qcow2", &url, "-O", "raw"])
        .current_dir(w.path())
        .stdin(Stdio::null())
        .env("VMIMAGE_TEST_FAULT", "corrupt-part");
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("AWS_")) {
            cmd.env_remove(key);
        }
    }
    cmd.envs(garage.env());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("part 1 was not stored: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!garage.exists("corrupt.raw"), "the object was left behind");
    assert_eq!(garage.uploads_in_progress(), Vec::<String>::new());
}
