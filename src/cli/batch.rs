//! `vmimage batch --manifest M --out RESULTS.jsonl [--op hash|verify|audit] [--shard m/N |
//! --shard auto [--shards N]] [--shard-by hash|slice] [-j JOBS] [--algo LIST] [--resume R]`:
//! one result line per item of one shard of a manifest.
//!
//! Exit statuses: 0 every item of the shard is ok; 1 an item mismatched or could compare
//! nothing (skipped); 2 an item is an error, or the run could not be done (unreadable
//! manifest, unwritable results, unknown shard).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use vmimage::batch::{
    ItemOptions, Kept, ManifestReader, Op, RunOptions, Shard, ShardBy, SourceMap, aside_path,
    prepare_resume, run_shard,
};
use vmimage::digest::Algorithm;

use super::hash::AlgorithmList;
use super::{EXIT_ERROR, print_error};

/// `--op`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OpArg {
    /// The file's digests, as `vmimage hash`.
    Hash,
    /// The file against the item's expect and record, as `vmimage verify`.
    Verify,
    /// verify, plus info's safety findings and the guest hash (recorded, or with --guest).
    Audit,
}

/// `--shard-by`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShardByArg {
    /// By a stable hash of the item's id (FNV-1a 64 mod N): adding items moves no other.
    Hash,
    /// By the item's index in the manifest, round-robin.
    Slice,
}

/// Arguments of `vmimage batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The items: JSON Lines ({"id", "source", "expect", "record"}), a service listing
    /// {"images": [...]}, a GNU/BSD checksum file, or a directory.
    #[arg(long, value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// How to reach `s3://` and `https://` sources.
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
    /// What to do with each item.
    #[arg(long, value_enum, default_value = "hash")]
    pub op: OpArg,
    /// Where the result lines go (JSON Lines, one per item, in manifest order).
    #[arg(long, value_name = "RESULTS.jsonl")]
    pub out: PathBuf,
    /// This run's shard: m/N (1-based), or auto (from JOB_COMPLETION_INDEX,
    /// SLURM_ARRAY_TASK_ID/COUNT or AWS_BATCH_JOB_ARRAY_INDEX/SIZE) [default: 1/1].
    #[arg(long, value_name = "m/N|auto")]
    pub shard: Option<String>,
    /// With --shard auto: the number of shards (Kubernetes does not tell it); beats the
    /// environment's.
    #[arg(long, value_name = "N")]
    pub shards: Option<u64>,
    /// How items are dealt to shards.
    #[arg(long, value_enum, default_value = "hash")]
    pub shard_by: ShardByArg,
    /// Items run at once [default: the number of cores].
    #[arg(short = 'j', long, value_name = "JOBS")]
    pub jobs: Option<usize>,
    /// With --op hash: the algorithms, comma-separated [default: md5,sha512].
    #[arg(long, value_name = "LIST", value_parser = parse_algorithms)]
    pub algo: Option<AlgorithmList>,
    /// Keep the ok lines of this earlier results file (it may be --out itself) and run only
    /// the other items; a file that does not exist yet resumes nothing.
    #[arg(long, value_name = "RESULTS.jsonl")]
    pub resume: Option<PathBuf>,
    /// Where items without a source are: {id}, {name}, {disk_format}, {path}, {basename}
    /// replaced (e.g. 's3://bucket/{id}.qcow2').
    #[arg(long, value_name = "TEMPLATE")]
    pub source_template: Option<String>,
    /// The directory relative sources and listed images are in [default: the manifest's].
    #[arg(long, value_name = "DIR")]
    pub source_dir: Option<PathBuf>,
    /// With --op audit: compute each image's guest hash even when its record states none.
    #[arg(long)]
    pub guest: bool,
}

fn parse_algorithms(s: &str) -> Result<AlgorithmList, String> {
    vmimage::digest::algorithm::parse_list(s).map(AlgorithmList)
}

/// Runs `vmimage batch`; returns the exit status.
pub fn run(args: &BatchArgs) -> u8 {
    vmimage::remote::set_options(args.remote.options());
    let shard = match shard_of(args) {
        Ok(s) => s,
        Err(sentence) => {
            print_error(sentence);
            return EXIT_ERROR;
        }
    };
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let jobs = args.jobs.unwrap_or(cores);
    if jobs == 0 {
        print_error("-j must be at least 1");
        return EXIT_ERROR;
    }
    let op = match args.op {
        OpArg::Hash => Op::Hash,
        OpArg::Verify => Op::Verify,
        OpArg::Audit => Op::Audit,
    };
    let options = RunOptions {
        shard,
        by: match args.shard_by {
            ShardByArg::Hash => ShardBy::Hash,
            ShardByArg::Slice => ShardBy::Slice,
        },
        jobs,
        item: ItemOptions {
            op,
            algorithms: args
                .algo
                .as_ref()
                .map_or_else(|| Algorithm::DEFAULT.to_vec(), |l| l.0.clone()),
            guest: args.guest,
            // Items already run on every core: one guest-hash thread each.
            guest_threads: (jobs > 1).then_some(1),
            // Likewise a file's digests get threads of their own only when items leave cores
            // idle (docs/batch.md, "Speed and memory").
            digest_threads: jobs < cores,
        },
    };
    let sources = SourceMap {
        template: args.source_template.clone(),
        dir: args.source_dir.clone(),
    };
    let manifest = match ManifestReader::open(&args.manifest, sources) {
        Ok(m) => m,
        Err(e) => {
            print_error(e);
            return EXIT_ERROR;
        }
    };
    let out_error = |e: std::io::Error| {
        print_error(format!(
            "{}: cannot write the results: {}",
            args.out.display(),
            vmimage::error::describe_io(&e)
        ));
        EXIT_ERROR
    };
    let (mut kept, mut out) = match &args.resume {
        Some(resume) => match prepare_resume(resume, &args.out) {
            Ok(r) => r,
            Err(e) => {
                print_error(format!(
                    "{}: cannot resume: {}",
                    resume.display(),
                    vmimage::error::describe_io(&e)
                ));
                return EXIT_ERROR;
            }
        },
        None => match std::fs::File::create(&args.out) {
            Ok(f) => {
                // A fresh run: lines an interrupted resumed run left aside are stale.
                let _ = std::fs::remove_file(aside_path(&args.out));
                (Kept::default(), f)
            }
            Err(e) => return out_error(e),
        },
    };
    let summary = match run_shard(manifest, &mut kept, &options, &mut out) {
        Ok(s) => s,
        Err(e) => return out_error(e),
    };
    if let Err(e) = kept.finish() {
        // Every kept line is in --out again; a stale aside file costs only a re-read.
        print_error(format!(
            "{}: cannot remove: {}",
            aside_path(&args.out).display(),
            vmimage::error::describe_io(&e)
        ));
    }
    let run = summary.ok + summary.mismatch + summary.error + summary.skipped;
    let resumed = if summary.resumed > 0 {
        format!(", {} resumed", summary.resumed)
    } else {
        String::new()
    };
    eprintln!(
        "vmimage: shard {shard}: {run} items run: {} ok, {} mismatch, {} error, {} skipped{resumed}",
        summary.ok, summary.mismatch, summary.error, summary.skipped
    );
    summary.worst().exit_status()
}

fn shard_of(args: &BatchArgs) -> Result<Shard, String> {
    match args.shard.as_deref() {
        None if args.shards.is_some() => Err("--shards N needs --shard auto".into()),
        None => Ok(Shard::ALL),
        Some("auto") => {
            Shard::from_env(|k| std::env::var(k).ok(), args.shards).map_err(|e| e.to_string())
        }
        Some(_) if args.shards.is_some() => {
            Err("--shards N goes with --shard auto; --shard m/N already says N".into())
        }
        Some(spec) => Shard::parse(spec).map_err(|e| e.to_string()),
    }
}
