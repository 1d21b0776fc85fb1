//! Many inputs at once: files spread across cores (rayon), results delivered in argument order.

use std::collections::BTreeMap;
use std::sync::mpsc;

use rayon::prelude::*;

use super::algorithm::Algorithm;
use super::digests::Digests;
use super::source::{HashOptions, Input, hash_input};
use crate::error::Error;

/// Digests every input, several at a time, and calls `sink(index, result)` for each in the
/// order of `inputs` as soon as it and every input before it are done (so output can stream
/// while later files are still being read). One input's failure does not stop the others.
pub fn hash_inputs<F>(
    inputs: &[Input],
    algorithms: &[Algorithm],
    options: &HashOptions<'_>,
    sink: F,
) where
    F: FnMut(usize, Result<Digests, Error>),
{
    hash_jobs(inputs.len(), |i| (&inputs[i], algorithms), options, sink);
}

/// [`hash_inputs`] where each input has its own algorithms: `job(i)` gives input `i` and what
/// to compute for it.
pub fn hash_jobs<'j, J, F>(count: usize, job: J, options: &HashOptions<'_>, mut sink: F)
where
    J: Fn(usize) -> (&'j Input, &'j [Algorithm]) + Sync,
    F: FnMut(usize, Result<Digests, Error>),
{
    let run = |i: usize| {
        let (input, algorithms) = job(i);
        hash_input(input, algorithms, options)
    };
    if count <= 1 {
        for i in 0..count {
            sink(i, run(i));
        }
        return;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            (0..count).into_par_iter().for_each_with(tx, |tx, i| {
                // The receiver lives until every sender is gone.
                let _ = tx.send((i, run(i)));
            });
        });
        // Results arrive in completion order; hold each until those before it are out.
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (i, result) in rx {
            waiting.insert(i, result);
            while let Some(result) = waiting.remove(&next) {
                sink(next, result);
                next += 1;
            }
        }
    });
}
