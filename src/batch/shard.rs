//! Which items of a manifest one shard runs (`--shard m/N`, `--shard auto`, `--shard-by`).
//!
//! Shards are numbered from 1, as cargo-nextest's `--partition` and Jest's `--shard` number
//! them. Two ways to deal items out:
//!
//! - `hash` (the default): the shard of an item is `fnv1a64(id) mod N`, plus 1, where
//!   `fnv1a64` is 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over
//!   the id's UTF-8 bytes. It depends on the id alone, so adding items to a manifest does not
//!   move the others, and any tool can reproduce it (docs/batch.md has a Python one-liner).
//! - `slice`: the item with 0-based index `i` in the manifest (every item counts, malformed
//!   lines included; blank and comment lines do not) goes to shard `i mod N`, plus 1.
//!
//! `auto` takes the shard from the array-job engine's environment (wave2 reference §4):
//! Kubernetes Indexed Jobs give `JOB_COMPLETION_INDEX` (0-based) but not the count, which
//! `--shards N` must give; Slurm job arrays `SLURM_ARRAY_TASK_ID` and
//! `SLURM_ARRAY_TASK_COUNT` (an array that does not start at 0, `--array=1-8`, is offset by
//! `SLURM_ARRAY_TASK_MIN`); AWS Batch array jobs `AWS_BATCH_JOB_ARRAY_INDEX` and
//! `AWS_BATCH_JOB_ARRAY_SIZE`. An explicit `--shards N` beats the environment's count.

use std::fmt;

/// How items are dealt out to shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardBy {
    /// By a stable hash of the item's id: adding items does not move the others.
    #[default]
    Hash,
    /// By the item's index in the manifest, round-robin.
    Slice,
}

/// One shard: number `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based shard number, at most `count`.
    pub index: u64,
    /// How many shards there are, at least 1.
    pub count: u64,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why a shard could not be determined; each is one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// `--shard` is not `m/N` with 1 <= m <= N.
    #[error("--shard {0:?} is not m/N with 1 <= m <= N (for example 3/8), nor auto")]
    Spec(String),
    /// An environment variable holds something other than a number.
    #[error("{name}={value:?} is not a non-negative integer")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// `--shard auto` found no engine's index in the environment.
    #[error(
        "--shard auto found no shard index in the environment (JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX)"
    )]
    NoIndex,
    /// The index is known but the number of shards is not.
    #[error(
        "--shard auto: {index_var} is set but the number of shards is unknown; give it with --shards N"
    )]
    NoCount {
        /// The variable that gave the index.
        index_var: &'static str,
    },
    /// The index is not below the count.
    #[error(
        "--shard auto: {index_var} gives shard index {index} (0-based), not below the {count} shards"
    )]
    OutOfRange {
        /// The variable that gave the index.
        index_var: &'static str,
        /// The 0-based index.
        index: u64,
        /// The number of shards.
        count: u64,
    },
    /// `--shards 0`.
    #[error("--shards must be at least 1")]
    ZeroCount,
}

impl Shard {
    /// Everything in one shard.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Parses `m/N` (1-based, as nextest's `--partition`).
    pub fn parse(spec: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError::Spec(spec.to_string());
        let (m, n) = spec.split_once('/').ok_or_else(bad)?;
        let index: u64 = m.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// `--shard auto`: the shard from the environment `env` (a lookup such as
    /// `|k| std::env::var(k).ok()`), with `shards` (`--shards N`) beating the environment's count.
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
        shards: Option<u64>,
    ) -> Result<Shard, ShardError> {
        if shards == Some(0) {
            return Err(ShardError::ZeroCount);
        }
        let number = |name: &'static str| -> Result<Option<u64>, ShardError> {
            match env(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| ShardError::NotANumber { name, value: v }),
            }
        };
        // (index variable, count variable, variable the index is offset by)
        const ENGINES: [(&str, Option<&str>, Option<&str>); 3] = [
            ("JOB_COMPLETION_INDEX", None, None),
            (
                "SLURM_ARRAY_TASK_ID",
                Some("SLURM_ARRAY_TASK_COUNT"),
                Some("SLURM_ARRAY_TASK_MIN"),
            ),
            (
                "AWS_BATCH_JOB_ARRAY_INDEX",
                Some("AWS_BATCH_JOB_ARRAY_SIZE"),
                None,
            ),
        ];
        for (index_var, count_var, min_var) in ENGINES {
            let Some(raw) = number(index_var)? else {
                continue;
            };
            let offset = match min_var {
                Some(v) => number(v)?.unwrap_or(0),
                None => 0,
            };
            let index = raw.checked_sub(offset).ok_or(ShardError::OutOfRange {
                index_var,
                index: raw,
                count: shards.unwrap_or(0),
            })?;
            let env_count = match count_var {
                Some(v) => number(v)?,
                None => None,
            };
            let count = shards
                .or(env_count)
                .ok_or(ShardError::NoCount { index_var })?;
            if count == 0 {
                return Err(ShardError::ZeroCount);
            }
            if index >= count {
                return Err(ShardError::OutOfRange {
                    index_var,
                    index,
                    count,
                });
            }
            return Ok(Shard {
                index: index + 1,
                count,
            });
        }
        Err(ShardError::NoIndex)
    }

    /// Whether the item with 0-based manifest index `index` and id `id` belongs to this shard.
    pub fn holds(&self, by: ShardBy, index: u64, id: &str) -> bool {
        self.shard_of(by, index, id) == self.index
    }

    /// The 1-based shard, of `self.count`, that the item belongs to.
    pub fn shard_of(&self, by: ShardBy, index: u64, id: &str) -> u64 {
        let key = match by {
            ShardBy::Hash => fnv1a64(id.as_bytes()),
            ShardBy::Slice => index,
        };
        key % self.count + 1
    }
}

/// 64-bit FNV-1a (Fowler, Noll, Vo): the stable hash of `--shard-by hash`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn m_of_n_is_one_based() {
        assert_eq!(Shard::parse("1/1"), Ok(Shard::ALL));
        assert_eq!(Shard::parse("3/8"), Ok(Shard { index: 3, count: 8 }));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", "-1/2", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_item_is_in_exactly_one_shard() {
        for count in 1..=5 {
            for by in [ShardBy::Hash, ShardBy::Slice] {
                for i in 0..200u64 {
                    let id = format!("image-{i}");
                    let holders = (1..=count)
                        .filter(|&m| Shard { index: m, count }.holds(by, i, &id))
                        .count();
                    assert_eq!(holders, 1, "{id} in {count} shards by {by:?}");
                }
            }
        }
    }

    #[test]
    fn auto_reads_each_engine_and_explicit_count_wins() {
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert_eq!(
            Shard::from_env(&k8s, Some(4)),
            Ok(Shard { index: 3, count: 4 })
        );
        assert_eq!(
            Shard::from_env(&k8s, None),
            Err(ShardError::NoCount {
                index_var: "JOB_COMPLETION_INDEX"
            })
        );
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(
            Shard::from_env(&slurm, None),
            Ok(Shard { index: 1, count: 3 })
        );
        assert_eq!(
            Shard::from_env(&slurm, Some(5)),
            Ok(Shard { index: 1, count: 5 })
        );
        let slurm_from_1 = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(
            Shard::from_env(&slurm_from_1, None),
            Ok(Shard { index: 3, count: 3 })
        );
        let aws = env(&[
            ("AWS_BATCH_JOB_ARRAY_INDEX", "4"),
            ("AWS_BATCH_JOB_ARRAY_SIZE", "5"),
        ]);
        assert_eq!(
            Shard::from_env(&aws, None),
            Ok(Shard { index: 5, count: 5 })
        );
        assert!(matches!(
            Shard::from_env(&aws, Some(4)),
            Err(ShardError::OutOfRange {
                index: 4,
                count: 4,
                ..
            })
        ));
        assert_eq!(Shard::from_env(env(&[]), Some(3)), Err(ShardError::NoIndex));
        assert!(matches!(
            Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "x")]), Some(3)),
            Err(ShardError::NotANumber { .. })
        ));
    }
}
