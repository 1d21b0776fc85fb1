//! The body of one streaming GET as a [`std::io::Read`], checked against the length of the
//! version it started from.

use std::io::{self, Read};
use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::RemoteStore;
use crate::error::Error;

/// The failure behind an [`io::Error`] a remote read returns: already the crate's error (a
/// change, a network failure), carried through `Read` and [`crate::source::ReadAt`] to
/// [`Error::io`], which hands it back whole. Its text is the problem alone, so that a caller
/// that prints "cannot read NAME: {io error}" still says one sentence.
#[derive(Debug)]
struct Failure {
    error: Error,
    problem: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problem)
    }
}

impl std::error::Error for Failure {}

/// `error` as an [`io::Error`] for `Read` and `ReadAt`.
pub(crate) fn failure(error: Error) -> io::Error {
    let sentence = error.to_string();
    let problem = error
        .path()
        .and_then(|p| sentence.strip_prefix(&format!("cannot read {}: ", p.display())))
        .unwrap_or(&sentence)
        .to_string();
    io::Error::other(Failure { error, problem })
}

/// The crate error carried by `e`, when a remote read made it; `e` back otherwise.
pub(crate) fn take_failure(e: io::Error) -> Result<Error, io::Error> {
    if e.get_ref().is_some_and(|inner| inner.is::<Failure>()) {
        match e.into_inner().map(|inner| inner.downcast::<Failure>()) {
            Some(Ok(failure)) => return Ok(failure.error),
            // Unreachable: the check above saw a Failure.
            Some(Err(inner)) => return Err(io::Error::other(inner)),
            None => return Err(io::Error::other("remote read failed")),
        }
    }
    Err(e)
}

/// The crate error an [`ObjectReader`]'s `io::Error` stands for; any other `io::Error` is a
/// read of `url` that failed.
pub(super) fn into_error(url: &str, e: io::Error) -> Error {
    match take_failure(e) {
        Ok(error) => error,
        Err(e) => Error::io(Path::new(url), e),
    }
}

/// The body of one GET of a whole object, read in the order the server sends it.
pub struct ObjectReader<'s> {
    store: &'s RemoteStore,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    position: u64,
    len: u64,
    done: bool,
}

impl std::fmt::Debug for ObjectReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("url", &self.store.url())
            .field("position", &self.position)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<'s> ObjectReader<'s> {
    pub(super) fn new(
        store: &'s RemoteStore,
        len: u64,
        stream: BoxStream<'static, object_store::Result<Bytes>>,
    ) -> Self {
        Self {
            store,
            stream,
            chunk: Bytes::new(),
            position: 0,
            len,
            done: false,
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn fail(&self, error: Error) -> io::Error {
        failure(error)
    }

    fn changed(&self, detail: &str) -> io::Error {
        self.fail(Error::changed(Path::new(self.store.url()), detail))
    }
}

impl Read for ObjectReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.store.block_on(self.stream.next()) {
                Some(Ok(bytes)) => {
                    let after = self.position.saturating_add(bytes.len() as u64);
                    if after > self.len {
                        return Err(self.changed(&format!(
                            "it sent more than the {} bytes it had when the read started",
                            self.len
                        )));
                    }
                    self.chunk = bytes;
                }
                Some(Err(e)) => {
                    let error =
                        super::error::from_store(self.store.url(), &e).with_offset(self.position);
                    return Err(self.fail(error));
                }
                None => {
                    self.done = true;
                    if self.position != self.len {
                        return Err(self.fail(super::error::truncated(
                            self.store.url(),
                            0,
                            self.len,
                            self.position,
                        )));
                    }
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        self.position += n as u64;
        Ok(n)
    }
}
