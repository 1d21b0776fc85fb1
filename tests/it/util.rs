//! Test harness: run the built `vmimage` binary and `qemu-img` in a temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory for one test, removed when dropped.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    /// A fresh, empty directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("vmimage-test-")
                .tempdir()
                .expect("create temp dir"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `data` to `name` and returns its path.
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, data).expect("write file");
        p
    }

    /// Runs `qemu-img ARGS` in the directory and panics with its stderr on failure.
    pub fn qemu_img(&self, args: &[&str]) -> Output {
        let out = Command::new("qemu-img")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("qemu-img is required: it is the test oracle");
        assert!(
            out.status.success(),
            "qemu-img {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `qemu-img ARGS` and returns its output whatever the status.
    pub fn qemu_img_any(&self, args: &[&str]) -> Output {
        Command::new("qemu-img")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("qemu-img is required: it is the test oracle")
    }

    /// Runs `qemu-io ARGS` in the directory (used to write guest data).
    pub fn qemu_io(&self, args: &[&str]) -> Output {
        let out = Command::new("qemu-io")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("qemu-io is required");
        assert!(
            out.status.success(),
            "qemu-io {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `qemu-img info --output=json -f FMT FILE` as JSON.
    pub fn qemu_info(&self, file: &str, format: Option<&str>) -> serde_json::Value {
        let mut args = vec!["info", "--output=json"];
        if let Some(f) = format {
            args.extend(["-f", f]);
        }
        args.push(file);
        let out = self.qemu_img(&args);
        serde_json::from_slice(&out.stdout).expect("qemu-img info json")
    }

    /// The names of the files in the directory, sorted.
    pub fn listing(&self) -> Vec<String> {
        listing(self.path())
    }

    /// Runs `vmimage ARGS` in the directory with no standard input and, when given, the test
    /// fault hook `VMIMAGE_TEST_FAULT=fault`; the raw output, whatever the status.
    pub fn vmimage_with_fault(&self, args: &[&str], fault: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmimage"));
        cmd.args(args)
            .current_dir(self.path())
            .stdin(std::process::Stdio::null());
        if let Some(f) = fault {
            cmd.env("VMIMAGE_TEST_FAULT", f);
        }
        cmd.output().expect("run vmimage")
    }

    /// Runs `vmimage ARGS` in the directory.
    pub fn vmimage(&self, args: &[&str]) -> Run {
        self.vmimage_stdin(args, None)
    }

    /// Runs `vmimage ARGS` with `input` on stdin.
    pub fn vmimage_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Run {
        let out = run_with_stdin(env!("CARGO_BIN_EXE_vmimage"), self.path(), args, input);
        Run::from(out, args)
    }

    /// Runs `vmimage ARGS` in the directory with the variables `env` set (an S3 server's
    /// `AWS_*`, for example) and every other `AWS_*` variable of the test's environment removed.
    pub fn vmimage_env(&self, args: &[&str], env: &[(String, String)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmimage"));
        cmd.args(args)
            .current_dir(self.path())
            .stdin(std::process::Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        Run::from(cmd.output().expect("run vmimage"), args)
    }
}

/// The names of the files in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Runs `program ARGS` in `dir` with `input` on stdin (fed from a thread, so a program that
/// writes before it has read everything cannot deadlock) and collects its output.
pub fn run_with_stdin(program: &str, dir: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is required to run the tests: {e}"));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {program}: {e}"))
}

/// The outcome of one `vmimage` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

impl Run {
    fn from(out: Output, args: &[&str]) -> Self {
        let code = out.status.code().unwrap_or_else(|| {
            panic!(
                "vmimage {args:?} died from a signal: {:?}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "vmimage {args:?} panicked: {stderr}"
        );
        Self {
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
            args: format!("{args:?}"),
        }
    }

    /// Asserts the exit status, showing the whole run when it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "vmimage {} exited {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "vmimage {} printed invalid JSON ({e}):\n{}",
                self.args, self.stdout
            )
        })
    }
}

/// A Python virtual environment at `dir` with `packages` from PyPI, in which `probe` (Python
/// code) runs; returns its python. Made once (a stamp names the packages), in a scratch
/// directory renamed into place when complete, so an interrupted run never leaves a
/// half-installed one behind.
pub fn python_venv(dir: &Path, packages: &[&str], probe: &str) -> Result<PathBuf, String> {
    let python = dir.join("bin/python");
    let stamp = dir.join("vmimage-packages");
    let wanted = packages.join(" ");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(python);
    }
    let scratch = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.parent().expect("parent")).map_err(|e| e.to_string())?;
    let run = |program: &Path, args: &[&str]| -> Result<(), String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {args:?} failed: {}",
                program.display(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let scratch_str = scratch.to_str().expect("utf-8 path");
    run(Path::new("python3"), &["-m", "venv", scratch_str])?;
    let mut pip_args = vec!["install", "--quiet", "--disable-pip-version-check"];
    pip_args.extend(packages);
    run(&scratch.join("bin/pip"), &pip_args)?;
    // A venv's scripts name its directory, so it is made at a scratch path and moved: move
    // the whole venv, then check that Python runs from there.
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&scratch, dir).map_err(|e| e.to_string())?;
    run(&python, &["-c", probe])?;
    std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    Ok(python)
}

/// Asserts that an `info --json` document (or any object with a `safety.findings` list) holds a
/// finding of the rule `id`. Every rule id must appear in a call of this (or of the library's
/// `safety::assert_fires`): `rules::every_rule_is_tested` checks that.
#[track_caller]
pub fn assert_rule(info: &serde_json::Value, id: &str) {
    assert!(
        vmimage::safety::all_rules().any(|r| r.id == id),
        "{id} is not a registered rule"
    );
    let fired: Vec<&str> = info["safety"]["findings"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["rule"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        fired.contains(&id),
        "expected rule {id} to fire, got {fired:?}"
    );
}
