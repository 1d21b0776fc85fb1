//! `vmimage batch` and `vmimage merge`: results equal coreutils' digests and `verify`'s
//! verdicts; shards partition the manifest and stay put when it grows; the Kubernetes, Slurm,
//! AWS Batch and GNU parallel recipes of docs/batch.md, simulated with their environment
//! variables, one shard killed mid-run and resumed, then merged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Workdir, run_with_stdin};

/// The results lines of a file, parsed; panics on a line that is not complete JSON.
fn results(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a torn line",
        path.display()
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

fn by_id(lines: &[Value]) -> BTreeMap<String, Value> {
    lines
        .iter()
        .map(|v| (v["id"].as_str().unwrap().to_string(), v.clone()))
        .collect()
}

/// `hex` of `program FILE` (md5sum, sha512sum).
pub fn coreutils(dir: &Path, program: &str, file: &str) -> String {
    let out = run_with_stdin(program, dir, &[file], None);
    assert!(out.status.success(), "{program} {file}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// 64-bit FNV-1a, written from its definition (docs/batch.md), independent of the crate's.
fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Files of assorted sizes (around the engine's 1 MiB chunk) and a qcow2 from qemu-img.
fn some_images(w: &Workdir) -> Vec<String> {
    std::fs::create_dir(w.join("images")).unwrap();
    let mut names = Vec::new();
    for (i, len) in [0usize, 1, 4095, 4097, (1 << 20) - 1, 1 << 20, (3 << 20) + 5]
        .into_iter()
        .enumerate()
    {
        let name = format!("images/f{i}.raw");
        let data: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        w.write(&name, &data);
        names.push(name);
    }
    w.qemu_img(&["create", "-f", "qcow2", "images/q.qcow2", "64M"]);
    w.qemu_io(&["-c", "write -P 0x5a 1M 2M", "images/q.qcow2"]);
    names.push("images/q.qcow2".into());
    names
}

#[test]
fn hash_results_equal_md5sum_and_sha512sum() {
    let w = Workdir::new();
    let names = some_images(&w);
    w.vmimage(&[
        "batch",
        "--manifest",
        "images",
        "--out",
        "r.jsonl",
        "-j",
        "3",
    ])
    .expect_code(0);
    let lines = results(&w.join("r.jsonl"));
    // A directory's items are its files, sorted by path relative to it.
    let mut ids: Vec<String> = names
        .iter()
        .map(|n| n.trim_start_matches("images/").to_string())
        .collect();
    ids.sort();
    let got: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids);
    for l in &lines {
        let file = format!("images/{}", l["id"].as_str().unwrap());
        assert_eq!(l["status"], "ok", "{l}");
        assert_eq!(l["shard"], "1/1");
        assert_eq!(l["digests"]["md5"], coreutils(w.path(), "md5sum", &file));
        assert_eq!(
            l["digests"]["sha512"],
            coreutils(w.path(), "sha512sum", &file)
        );
        let len = std::fs::metadata(w.join(&file)).unwrap().len();
        assert_eq!(l["size"], len);
        assert!(l["errors"].as_array().unwrap().is_empty());
    }
    // --algo, as `hash --algo`.
    w.vmimage(&[
        "batch",
        "--manifest",
        "images",
        "--out",
        "s.jsonl",
        "--algo",
        "sha256",
    ])
    .expect_code(0);
    let first = &results(&w.join("s.jsonl"))[0];
    let file = format!("images/{}", first["id"].as_str().unwrap());
    assert_eq!(
        first["digests"],
        serde_json::json!({"sha256": coreutils(w.path(), "sha256sum", &file)})
    );
}

/// A resumed run writes the shard in manifest order, as a fresh run would: the kept `ok` lines
/// copied back at their places (byte for byte: not run again), the other items run; a
/// malformed line is still an error item at its place.
#[test]
fn a_resumed_run_keeps_manifest_order_and_copies_the_kept_lines() {
    let w = Workdir::new();
    let mut manifest = String::new();
    for i in 0..6 {
        w.write(&format!("f{i}"), format!("file {i}\n").as_bytes());
        manifest.push_str(&format!("{{\"id\": \"a{i}\", \"source\": \"f{i}\"}}\n"));
        if i == 2 {
            manifest.push_str("{not json\n");
        }
    }
    w.write("m.jsonl", manifest.as_bytes());
    let order = ["a0", "a1", "a2", "line 4", "a3", "a4", "a5"];
    std::fs::remove_file(w.join("f1")).unwrap();
    std::fs::remove_file(w.join("f4")).unwrap();
    let args = [
        "batch",
        "--manifest",
        "m.jsonl",
        "--algo",
        "md5",
        "-j",
        "2",
        "--out",
        "r.jsonl",
    ];
    w.vmimage(&args).expect_code(2);
    let first = std::fs::read_to_string(w.join("r.jsonl")).unwrap();
    let ids = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(ids(&first), order);
    w.write("f1", b"file 1\n");
    w.write("f4", b"file 4\n");
    let run = w.vmimage(&[&args[..], &["--resume", "r.jsonl"]].concat());
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("3 items run: 2 ok, 0 mismatch, 1 error, 0 skipped, 4 resumed"),
        "{}",
        run.stderr
    );
    let second = std::fs::read_to_string(w.join("r.jsonl")).unwrap();
    assert_eq!(ids(&second), order);
    for (a, b) in first.lines().zip(second.lines()) {
        let v: Value = serde_json::from_str(a).unwrap();
        if v["status"] == "ok" {
            assert_eq!(a, b, "a kept line is copied, not run again");
        }
    }
    for l in results(&w.join("r.jsonl")) {
        let want = if l["id"] == "line 4" { "error" } else { "ok" };
        assert_eq!(l["status"], want, "{l}");
    }
    assert!(
        !w.join(".r.jsonl.kept").exists(),
        "the aside file is removed"
    );
}

#[test]
fn a_verify_mismatch_is_status_mismatch_and_exit_1() {
    let w = Workdir::new();
    some_images(&w);
    let md5 = coreutils(w.path(), "md5sum", "images/f2.raw");
    let sha = coreutils(w.path(), "sha512sum", "images/f3.raw");
    let manifest = format!(
        "{}\n{}\n",
        serde_json::json!({"id": "good", "source": "images/f2.raw", "expect": {"checksum": md5, "size": 4095}}),
        serde_json::json!({"id": "bad", "source": "images/f3.raw", "expect": {"os_hash_algo": "sha512", "os_hash_value": sha.replace('a', "b").replace('0', "1")}}),
    );
    w.write("m.jsonl", manifest.as_bytes());
    w.vmimage(&[
        "batch",
        "--manifest",
        "m.jsonl",
        "--op",
        "verify",
        "--out",
        "r.jsonl",
    ])
    .expect_code(1);
    let r = by_id(&results(&w.join("r.jsonl")));
    assert_eq!(r["good"]["status"], "ok");
    assert_eq!(r["good"]["format"], "raw");
    assert_eq!(r["bad"]["status"], "mismatch");
    let failed: Vec<&Value> = r["bad"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "{}", r["bad"]);
    assert_eq!(failed[0]["id"], "os_hash_value");
    assert_eq!(failed[0]["actual"], sha);
    // merge agrees: the worst status is a mismatch.
    let run = w.vmimage(&["merge", "--manifest", "m.jsonl", "r.jsonl"]);
    run.expect_code(1);
    assert_eq!(run.stdout, "= good\n* bad\n");
}

#[test]
fn bad_lines_and_unreadable_sources_are_error_items_not_the_end_of_the_shard() {
    let w = Workdir::new();
    some_images(&w);
    w.write(
        "m.jsonl",
        b"{\"id\": \"a\", \"source\": \"images/f1.raw\"}\n{\"id\": \nnot json at all\n{\"id\": \"gone\", \"source\": \"images/nope.raw\"}\n{\"id\": \"remote\", \"source\": \"ftp://host/x.qcow2\"}\n{\"id\": \"b\", \"source\": \"images/f2.raw\"}\n",
    );
    w.vmimage(&[
        "batch",
        "--manifest",
        "m.jsonl",
        "--out",
        "r.jsonl",
        "-j",
        "2",
    ])
    .expect_code(2);
    let lines = results(&w.join("r.jsonl"));
    let summary: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_string(),
                l["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("a", "ok"),
        ("line 2", "error"),
        ("line 3", "error"),
        ("gone", "error"),
        ("remote", "error"),
        ("b", "ok"),
    ];
    assert_eq!(
        summary,
        want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
    );
    let r = by_id(&lines);
    let err = |id: &str| r[id]["errors"][0].as_str().unwrap().to_string();
    assert!(
        err("line 2").contains("m.jsonl: line 2: not JSON"),
        "{}",
        err("line 2")
    );
    assert!(err("gone").contains("images/nope.raw"), "{}", err("gone"));
    assert!(err("gone").contains("No such file"), "{}", err("gone"));
    assert!(
        err("remote").contains("ftp:// sources are not supported"),
        "{}",
        err("remote")
    );
}

#[test]
fn a_distro_sums_file_with_dot_slash_paths_and_bsd_lines_verifies() {
    let w = Workdir::new();
    // The layout of Ubuntu's installer tree (Packer #8774): SUMS at the top, `./dir/file`.
    std::fs::create_dir_all(w.join("ubuntu/netboot")).unwrap();
    w.write("ubuntu/netboot/mini.iso", &vec![0x42u8; 300_000]);
    w.write("ubuntu/boot.img", &vec![0x17u8; 5000]);
    let sha = |f: &str| coreutils(&w.join("ubuntu"), "sha512sum", f);
    let md5 = |f: &str| coreutils(&w.join("ubuntu"), "md5sum", f);
    let sums = format!(
        "{}  ./netboot/mini.iso\nMD5 (./boot.img) = {}\nSHA512 (./boot.img) = {}\n",
        sha("netboot/mini.iso"),
        md5("boot.img"),
        sha("boot.img")
    );
    w.write("ubuntu/SHA512SUMS", sums.as_bytes());
    // sha512sum -c agrees the file is right.
    let check = run_with_stdin("sha512sum", &w.join("ubuntu"), &["-c", "SHA512SUMS"], None);
    assert!(check.status.success());
    w.vmimage(&[
        "batch",
        "--manifest",
        "ubuntu/SHA512SUMS",
        "--op",
        "verify",
        "--out",
        "r.jsonl",
    ])
    .expect_code(0);
    let r = by_id(&results(&w.join("r.jsonl")));
    assert_eq!(
        r.keys().collect::<Vec<_>>(),
        ["boot.img", "netboot/mini.iso"]
    );
    assert_eq!(r["boot.img"]["status"], "ok");
    let passed: BTreeSet<&str> = r["boot.img"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "pass")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        passed.contains("checksum") && passed.contains("os_hash_value"),
        "{passed:?}"
    );
    // A mirror that lost a byte: a mismatch.
    w.write("ubuntu/netboot/mini.iso", &vec![0x42u8; 299_999]);
    w.vmimage(&[
        "batch",
        "--manifest",
        "ubuntu/SHA512SUMS",
        "--op",
        "verify",
        "--out",
        "r.jsonl",
    ])
    .expect_code(1);
    assert_eq!(
        by_id(&results(&w.join("r.jsonl")))["netboot/mini.iso"]["status"],
        "mismatch"
    );
    // A flat mirror (every file in one directory) maps with {basename}.
    std::fs::create_dir(w.join("flat")).unwrap();
    std::fs::copy(w.join("ubuntu/boot.img"), w.join("flat/boot.img")).unwrap();
    w.write("flat/mini.iso", &vec![0x42u8; 300_000]);
    w.vmimage(&[
        "batch",
        "--manifest",
        "ubuntu/SHA512SUMS",
        "--op",
        "verify",
        "--source-template",
        "flat/{basename}",
        "--source-dir",
        ".",
        "--out",
        "r.jsonl",
    ])
    .expect_code(0);
}

/// A Glance listing (`GET /v2/images`), images named `{id}.qcow2` in a directory.
#[test]
fn audit_of_a_listing_gives_verify_info_and_the_guest_hash() {
    let w = Workdir::new();
    std::fs::create_dir(w.join("bucket")).unwrap();
    w.qemu_img(&["create", "-f", "qcow2", "bucket/img-1.qcow2", "100M"]);
    w.qemu_io(&["-c", "write -P 0x11 0 1M", "bucket/img-1.qcow2"]);
    w.qemu_img(&["create", "-f", "qcow2", "base.qcow2", "10M"]);
    w.qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "../base.qcow2",
        "-F",
        "qcow2",
        "bucket/img-2.qcow2",
    ]);
    let record = |id: &str| {
        let file = format!("bucket/{id}.qcow2");
        let info = w.qemu_info(&file, Some("qcow2"));
        serde_json::json!({
            "id": id,
            "name": id,
            "status": "active",
            "disk_format": "qcow2",
            "container_format": "bare",
            "checksum": coreutils(w.path(), "md5sum", &file),
            "os_hash_algo": "sha512",
            "os_hash_value": coreutils(w.path(), "sha512sum", &file),
            "size": std::fs::metadata(w.join(&file)).unwrap().len(),
            "virtual_size": info["virtual-size"],
        })
    };
    let listing = serde_json::json!({"images": [record("img-1"), record("img-2")], "schema": "/v2/schemas/images"});
    w.write(
        "listing.json",
        serde_json::to_string_pretty(&listing).unwrap().as_bytes(),
    );
    w.vmimage(&[
        "batch",
        "--manifest",
        "listing.json",
        "--op",
        "audit",
        "--guest",
        "--source-dir",
        "bucket",
        "--out",
        "r.jsonl",
    ])
    .expect_code(1);
    let r = by_id(&results(&w.join("r.jsonl")));
    let one = &r["img-1"];
    assert_eq!(one["status"], "ok", "{one}");
    assert_eq!(one["virtual_size"], 100 << 20);
    assert_eq!(one["format"], "qcow2");
    assert_eq!(one["safety"]["safe"], true);
    // The guest hash is `hash --guest`'s.
    let guest = w.vmimage(&["hash", "--guest", "--json", "bucket/img-1.qcow2"]);
    assert_eq!(one["guest_hash"], guest.json()[0]["guest_hash"]);
    // A backing file: unsafe, so the audit fails it, with info's rule.
    let two = &r["img-2"];
    assert_eq!(two["status"], "mismatch", "{two}");
    assert_eq!(two["safety"]["safe"], false);
    crate::util::assert_rule(two, "qcow2.backing-file");
}

#[test]
fn every_item_is_in_exactly_one_shard_and_hash_shards_stay_put_when_items_are_appended() {
    let w = Workdir::new();
    std::fs::create_dir(w.join("d")).unwrap();
    let mut lines = String::new();
    for i in 0..40 {
        w.write(&format!("d/{i}"), format!("{i}").as_bytes());
        lines.push_str(&format!(
            "{{\"id\": \"image-{i}\", \"source\": \"d/{i}\"}}\n"
        ));
    }
    w.write("m.jsonl", lines.as_bytes());
    let shard_ids = |n: u64, m: u64, by: &str, tag: &str| -> Vec<String> {
        let out = format!("r-{tag}-{by}-{m}-of-{n}.jsonl");
        let shard = format!("{m}/{n}");
        w.vmimage(&[
            "batch",
            "--manifest",
            "m.jsonl",
            "--shard",
            &shard,
            "--shard-by",
            by,
            "--out",
            &out,
            "-j",
            "2",
        ])
        .expect_code(0);
        results(&w.join(&out))
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect()
    };
    for n in 1..=5u64 {
        for by in ["hash", "slice"] {
            let mut all = Vec::new();
            for m in 1..=n {
                let ids = shard_ids(n, m, by, "a");
                for id in &ids {
                    let i: u64 = id.trim_start_matches("image-").parse().unwrap();
                    let want = match by {
                        "hash" => fnv1a64(id) % n + 1,
                        _ => i % n + 1,
                    };
                    assert_eq!(want, m, "{id} by {by} in {m}/{n}");
                }
                all.extend(ids);
            }
            all.sort();
            let mut want: Vec<String> = (0..40).map(|i| format!("image-{i}")).collect();
            want.sort();
            assert_eq!(all, want, "N={n} by {by}");
        }
    }
    // Ten more items, some placed before the old ones: no old item changes shard.
    let mut grown = String::new();
    for i in 40..45 {
        w.write(&format!("d/{i}"), b"x");
        grown.push_str(&format!(
            "{{\"id\": \"image-{i}\", \"source\": \"d/{i}\"}}\n"
        ));
    }
    grown.push_str(&lines);
    for i in 45..50 {
        w.write(&format!("d/{i}"), b"y");
        grown.push_str(&format!(
            "{{\"id\": \"image-{i}\", \"source\": \"d/{i}\"}}\n"
        ));
    }
    for m in 1..=4 {
        let before: BTreeSet<String> = shard_ids(4, m, "hash", "a").into_iter().collect();
        w.write("m.jsonl", grown.as_bytes());
        let after: BTreeSet<String> = shard_ids(4, m, "hash", "b").into_iter().collect();
        w.write("m.jsonl", lines.as_bytes());
        assert!(before.is_subset(&after), "shard {m}/4 lost items");
        assert!(after.difference(&before).all(|id| {
            let i: u64 = id.trim_start_matches("image-").parse().unwrap();
            i >= 40
        }));
    }
}

#[test]
fn auto_without_a_shard_count_fails_with_a_sentence() {
    let w = Workdir::new();
    w.write("m.jsonl", b"");
    let out = Command::new(env!("CARGO_BIN_EXE_vmimage"))
        .args([
            "batch",
            "--manifest",
            "m.jsonl",
            "--out",
            "r.jsonl",
            "--shard",
            "auto",
        ])
        .current_dir(w.path())
        .env("JOB_COMPLETION_INDEX", "1")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("AWS_BATCH_JOB_ARRAY_INDEX")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("JOB_COMPLETION_INDEX is set but the number of shards is unknown; give it with --shards N"),
        "{err}"
    );
}

/// How one engine starts shard `index` (0-based) of `count`: its environment and flags.
struct Engine {
    name: &'static str,
    env: fn(u64, u64) -> Vec<(&'static str, String)>,
    flags: fn(u64, u64) -> Vec<String>,
}

const ENGINES: [Engine; 4] = [
    // Kubernetes Indexed Job: JOB_COMPLETION_INDEX, and N from the command line.
    Engine {
        name: "kubernetes",
        env: |i, _| vec![("JOB_COMPLETION_INDEX", i.to_string())],
        flags: |_, n| {
            vec![
                "--shard".into(),
                "auto".into(),
                "--shards".into(),
                n.to_string(),
            ]
        },
    },
    // Slurm job array `sbatch --array=0-(N-1)`.
    Engine {
        name: "slurm",
        env: |i, n| {
            vec![
                ("SLURM_ARRAY_TASK_ID", i.to_string()),
                ("SLURM_ARRAY_TASK_MIN", "0".into()),
                ("SLURM_ARRAY_TASK_COUNT", n.to_string()),
            ]
        },
        flags: |_, _| vec!["--shard".into(), "auto".into()],
    },
    // AWS Batch array job of size N.
    Engine {
        name: "aws-batch",
        env: |i, n| {
            vec![
                ("AWS_BATCH_JOB_ARRAY_INDEX", i.to_string()),
                ("AWS_BATCH_JOB_ARRAY_SIZE", n.to_string()),
            ]
        },
        flags: |_, _| vec!["--shard".into(), "auto".into()],
    },
    // GNU parallel on one machine: `parallel vmimage batch ... --shard {}/N ::: 1..N`.
    Engine {
        name: "gnu-parallel",
        env: |_, _| Vec::new(),
        flags: |i, n| vec!["--shard".into(), format!("{}/{n}", i + 1)],
    },
];

fn start_shard(w: &Workdir, engine: &Engine, index: u64, count: u64, out: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmimage"));
    cmd.args([
        "batch",
        "--manifest",
        "catalogue.jsonl",
        "--op",
        "verify",
        "-j",
        "2",
        "--out",
        out,
        "--resume",
        out,
    ])
    .args((engine.flags)(index, count))
    .current_dir(w.path())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for var in [
        "JOB_COMPLETION_INDEX",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
        "AWS_BATCH_JOB_ARRAY_INDEX",
        "AWS_BATCH_JOB_ARRAY_SIZE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in (engine.env)(index, count) {
        cmd.env(k, v);
    }
    cmd.spawn().expect("run vmimage")
}

/// N shards run at once as each engine starts them; the shard holding a named pipe blocks on
/// it and is killed (SIGKILL, as a pod eviction), the pipe becomes the file, the engine's
/// retry (the same command, `--resume` of its own results) completes it; `merge` says all ok.
/// Without one shard's results, `merge` names its items as missing.
#[test]
fn each_engine_recipe_shards_resumes_a_killed_shard_and_merges() {
    const N: u64 = 3;
    const ITEMS: u64 = 24;
    let w = Workdir::new();
    std::fs::create_dir(w.join("bucket")).unwrap();
    let mut manifest = String::new();
    for i in 0..ITEMS {
        let data = vec![i as u8; 1000 + i as usize * 517];
        let name = format!("bucket/img-{i}.raw");
        w.write(&name, &data);
        let md5 = coreutils(w.path(), "md5sum", &name);
        manifest.push_str(&format!(
            "{}\n",
            serde_json::json!({"id": format!("img-{i}"), "source": name, "expect": {"checksum": md5, "size": data.len()}})
        ));
    }
    w.write("catalogue.jsonl", manifest.as_bytes());
    // The item that blocks: the third of its shard, so that lines come before it.
    let shard_of = |i: u64| fnv1a64(&format!("img-{i}")) % N;
    let victim_shard = shard_of(0);
    let victim = (0..ITEMS)
        .filter(|&i| shard_of(i) == victim_shard)
        .nth(2)
        .expect("a shard with three items");
    let victim_file = w.join(&format!("bucket/img-{victim}.raw"));
    let victim_bytes = std::fs::read(&victim_file).unwrap();
    for engine in &ENGINES {
        std::fs::remove_file(&victim_file).unwrap();
        let fifo = Command::new("mkfifo").arg(&victim_file).status().unwrap();
        assert!(fifo.success());
        let outs: Vec<String> = (0..N)
            .map(|i| format!("{}-{i}.jsonl", engine.name))
            .collect();
        for o in &outs {
            let _ = std::fs::remove_file(w.join(o));
        }
        let mut children: Vec<Child> = (0..N)
            .map(|i| start_shard(&w, engine, i, N, &outs[i as usize]))
            .collect();
        for (i, child) in children.iter_mut().enumerate() {
            if i as u64 == victim_shard {
                continue;
            }
            let status = child.wait().unwrap();
            assert!(status.success(), "{} shard {i}: {status:?}", engine.name);
        }
        // The victim has written the lines before the pipe, then blocks on it.
        let victim_out = w.join(&outs[victim_shard as usize]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(&victim_out)
            .map(|t| t.lines().count())
            .unwrap_or(0)
            < 2
        {
            assert!(Instant::now() < deadline, "{}: no progress", engine.name);
            std::thread::sleep(Duration::from_millis(20));
        }
        let child = &mut children[victim_shard as usize];
        child.kill().unwrap();
        child.wait().unwrap();
        // Every line the killed shard left is complete JSON; the blocked item is not there.
        let partial = results(&victim_out);
        assert_eq!(partial.len(), 2, "{}", engine.name);
        assert!(partial.iter().all(|l| l["status"] == "ok"));
        // Until it is retried, merge names the victim's unfinished items as missing.
        let run = w.vmimage(
            &[
                &["merge", "--manifest", "catalogue.jsonl"][..],
                &outs.iter().map(String::as_str).collect::<Vec<_>>(),
            ]
            .concat(),
        );
        run.expect_code(2);
        assert!(
            run.stdout.contains(&format!("- img-{victim}\n")),
            "{}",
            run.stdout
        );
        // The pod is retried with the same index and the same command.
        std::fs::remove_file(&victim_file).unwrap();
        std::fs::write(&victim_file, &victim_bytes).unwrap();
        let retry = start_shard(&w, engine, victim_shard, N, &outs[victim_shard as usize])
            .wait_with_output()
            .unwrap();
        assert!(
            retry.status.success(),
            "{}: {}",
            engine.name,
            String::from_utf8_lossy(&retry.stderr)
        );
        assert!(
            String::from_utf8_lossy(&retry.stderr).contains("2 resumed"),
            "{}",
            String::from_utf8_lossy(&retry.stderr)
        );
        let junit = format!("{}.xml", engine.name);
        let mut args = vec!["merge", "--manifest", "catalogue.jsonl", "--junit", &junit];
        args.extend(outs.iter().map(String::as_str));
        let run = w.vmimage(&args);
        run.expect_code(0);
        assert_eq!(run.stdout.lines().count() as u64, ITEMS);
        assert!(
            run.stdout.lines().all(|l| l.starts_with("= ")),
            "{}",
            run.stdout
        );
        let xml = std::fs::read_to_string(w.join(&junit)).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let cases = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .count() as u64;
        assert_eq!(cases, ITEMS);
        assert_eq!(doc.root_element().attribute("failures"), Some("0"));
        // A lost shard: its items are missing, named, and the merge fails.
        let lost = (victim_shard + 1) % N;
        let mut args = vec!["merge", "--manifest", "catalogue.jsonl", "--json"];
        args.extend(
            outs.iter()
                .enumerate()
                .filter(|(i, _)| *i as u64 != lost)
                .map(|(_, o)| o.as_str()),
        );
        let run = w.vmimage(&args);
        run.expect_code(2);
        let report = run.json();
        let missing: BTreeSet<String> = report["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] == "missing")
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        let want: BTreeSet<String> = (0..ITEMS)
            .filter(|&i| shard_of(i) == lost)
            .map(|i| format!("img-{i}"))
            .collect();
        assert_eq!(missing, want, "{}", engine.name);
        assert_eq!(report["totals"]["missing"], want.len());
    }
}

#[test]
fn merge_names_duplicates_and_writes_valid_junit_for_failures() {
    let w = Workdir::new();
    some_images(&w);
    let md5 = coreutils(w.path(), "md5sum", "images/f1.raw");
    let manifest = format!(
        "{}\n{}\n{}\n",
        serde_json::json!({"id": "a&<b>", "source": "images/f1.raw", "expect": {"checksum": md5}}),
        serde_json::json!({"id": "c", "source": "images/f2.raw", "expect": {"checksum": md5}}),
        serde_json::json!({"id": "d", "source": "images/none.raw"}),
    );
    w.write("m.jsonl", manifest.as_bytes());
    w.vmimage(&[
        "batch",
        "--manifest",
        "m.jsonl",
        "--op",
        "verify",
        "--out",
        "r1.jsonl",
    ])
    .expect_code(2);
    std::fs::copy(w.join("r1.jsonl"), w.join("r2.jsonl")).unwrap();
    let run = w.vmimage(&[
        "merge",
        "--manifest",
        "m.jsonl",
        "r1.jsonl",
        "r2.jsonl",
        "--junit",
        "j.xml",
    ]);
    run.expect_code(2);
    assert_eq!(run.stdout, "= a&<b>\n* c\n! d\n");
    assert!(
        run.stderr
            .contains("3 items have more results than the manifest lists them"),
        "{}",
        run.stderr
    );
    let xml = std::fs::read_to_string(w.join("j.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let names: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|n| n.attribute("name").unwrap())
        .collect();
    assert_eq!(names, ["a&<b>", "c", "d"]);
    let error = doc.descendants().find(|n| n.has_tag_name("error")).unwrap();
    assert!(
        error
            .attribute("message")
            .unwrap()
            .contains("images/none.raw")
    );
}
