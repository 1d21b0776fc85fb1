//! `convert IN s3://bucket/key`: the output streamed into an S3 multipart upload.
//!
//! - **Parts** of [`part_size`]`(bound)` = `max(8 MiB, ceil(bound / 10,000))` (S3 allows 10,000
//!   parts, each but the last at least 5 MiB), where `bound` is an upper bound of the output's
//!   length, known before a byte is written ([`output_bound`]).
//! - **Integrity per part**: every UploadPart carries `x-amz-checksum-sha256` (object_store's
//!   `Checksum::SHA256`) and a SigV4-signed `x-amz-content-sha256` of the same digest, so the
//!   server refuses a part whose bytes changed on the way (S3: `BadDigest`; s3s-fs checks the
//!   signed payload hash). The whole object's MD5 and SHA-512 are the conversion's own digests,
//!   computed from the bytes as they are handed to the upload: a multipart ETag is
//!   `md5(part md5s)-N`, never the object's MD5.
//! - **Memory**: the part being filled, one part queued and at most [`PARTS_IN_FLIGHT`] parts
//!   being sent.
//! - **Nothing left behind**: the upload is created before the conversion starts (a missing
//!   bucket or wrong credentials cost nothing), completed only by [`S3Upload::complete`], after
//!   the caller checked the digests (`--expect`); any error, a drop without completion, or a
//!   signal ([`crate::atomic::register_undo`]) aborts it, so neither an object nor an
//!   unfinished upload remains.
//!
//! The async client runs on this module's own `current_thread` runtime, on an upload thread;
//! the conversion's writer thread hands it parts through a bounded channel.

use std::io;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use object_store::MultipartId;
use object_store::aws::{AmazonS3, Checksum};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;

use super::{RemoteLocation, RemoteOptions, error};
use crate::convert::output::StreamOut;
use crate::error::{Error, ErrorKind, Operation};

/// The smallest part: S3's minimum is 5 MiB; 8 MiB is what the AWS CLI uses.
pub const MIN_PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3's largest part number.
pub const MAX_PARTS: u64 = 10_000;
/// Parts being sent at once.
pub const PARTS_IN_FLIGHT: usize = 2;

/// The part size for an output of at most `bound` bytes: `max(8 MiB, ceil(bound / 10,000))`,
/// rounded up to a whole MiB.
pub fn part_size(bound: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    bound
        .div_ceil(MAX_PARTS)
        .max(MIN_PART_SIZE)
        .next_multiple_of(MIB)
}

/// An upper bound of the length of a converted output of a `virtual_size` disk, in any
/// format: the guest data, plus metadata of at most 1/32 of it (qcow2 with 512-byte
/// clusters: 8-byte L2 entries and 2-byte refcounts per cluster, 2%; VMDK grain markers and
/// tables, VHDX and VHD block maps, less), plus 64 MiB of fixed headers and tables.
pub fn output_bound(virtual_size: u64) -> u64 {
    virtual_size
        .saturating_add(virtual_size / 32)
        .saturating_add(64 * 1024 * 1024)
}

/// What the upload thread reports.
type PartResult = Result<PartId, object_store::Error>;

/// Why the parts stopped: the part (0-based) whose request failed, when it was one, and the
/// error.
type PartFailure = (Option<usize>, object_store::Error);

/// A multipart upload in progress.
pub struct S3Upload {
    url: String,
    store: Arc<AmazonS3>,
    path: ObjectPath,
    id: MultipartId,
    part_size: usize,
    /// Builds a fresh client for an abort from the signal handler's thread.
    undo: Option<u64>,
    runtime: Arc<tokio::runtime::Runtime>,
    /// The first error of a part, kept for the caller (the writer thread sees only that the
    /// upload stopped).
    failure: Arc<Mutex<Option<PartFailure>>>,
    parts: Arc<Mutex<Vec<PartId>>>,
    done: bool,
}

impl std::fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Upload")
            .field("url", &self.url)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

/// A client for `bucket` from the `AWS_*` variables, with per-part SHA-256 checksums and the
/// same HTTP settings as reads (`--ca-cert`, timeouts: [`super::client_options`]).
fn s3_client(bucket: &str, options: &RemoteOptions) -> Result<AmazonS3, Result<Error, String>> {
    let client = super::client_options(options).map_err(Ok)?;
    let mut builder =
        super::s3_builder(bucket, client, options).with_checksum_algorithm(Checksum::SHA256);
    if crate::atomic::fault::corrupts_parts() {
        builder = builder.with_http_connector(fault_connector::CorruptingConnector);
    }
    builder
        .build()
        .map_err(|e| Err(super::settings_unusable(&e)))
}

impl S3Upload {
    /// Starts a multipart upload to `location` (an `s3://` URL) for an output of at most
    /// `bound` bytes.
    pub fn start(
        location: &RemoteLocation,
        options: &RemoteOptions,
        bound: u64,
    ) -> Result<Self, Error> {
        let url = location.url();
        let RemoteLocation::S3 { bucket, .. } = location else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                Some(Path::new(&url)),
                format!("{url}: convert uploads to s3://bucket/key only"),
            ));
        };
        let unusable = |problem: String| {
            Error::new(
                ErrorKind::InvalidArgument,
                Some(Path::new(&url)),
                format!("cannot upload to {url}: {problem}"),
            )
        };
        let store = Arc::new(s3_client(bucket, options).map_err(|e| match e {
            Ok(error) => error,
            Err(problem) => unusable(problem),
        })?);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unusable(format!("cannot start the I/O runtime: {e}")))?;
        let path = location.object_path();
        // A missing bucket is refused now, before any part: some servers (s3s-fs 0.14.1)
        // accept a multipart upload to a bucket that does not exist and create it at
        // completion. A list of the key's prefix answers NoSuchBucket there (the client
        // reports it as a generic error, so the code is read from its text). Only that answer
        // counts: an upload-only key may not be allowed to list.
        let listed = runtime.block_on(async {
            use object_store::ObjectStore;
            store.list_with_delimiter(Some(&path)).await
        });
        if let Err(e) = &listed
            && error::is_no_such_bucket(e)
        {
            return Err(Error::new(
                ErrorKind::Io,
                Some(Path::new(&url)),
                format!(
                    "cannot upload to {url}: the bucket {bucket} does not exist (NoSuchBucket)"
                ),
            )
            .with_operation(Operation::Write));
        }
        let id = runtime
            .block_on(store.create_multipart(&path))
            .map_err(|e| upload_error(&url, &e))?;
        let part_size = usize::try_from(part_size(bound))
            .map_err(|_| unusable("the output is too large for this machine".into()))?;
        let mut upload = Self {
            url,
            store,
            path,
            id,
            part_size,
            undo: None,
            runtime: Arc::new(runtime),
            failure: Arc::new(Mutex::new(None)),
            parts: Arc::new(Mutex::new(Vec::new())),
            done: false,
        };
        // On a signal, abort with a client of its own: the handler's thread has no runtime,
        // and this one may be busy on the upload thread.
        let (bucket, options, path, id) = (
            bucket.clone(),
            options.clone(),
            upload.path.clone(),
            upload.id.clone(),
        );
        let undo = crate::atomic::register_undo(Box::new(move || {
            abort_with_new_client(&bucket, &options, &path, &id);
        }));
        match undo {
            Ok(u) => upload.undo = Some(u),
            Err(e) => {
                upload.abort();
                return Err(crate::convert::error::output_io(Path::new(&upload.url), e));
            }
        }
        Ok(upload)
    }

    /// The URL, as errors name it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The part size in bytes.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// The writer of the parts: what [`crate::convert::output::StreamSink`] writes to. It
    /// starts the upload thread.
    pub fn writer(&self) -> io::Result<PartWriter> {
        let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Bytes)>(1);
        let store = Arc::clone(&self.store);
        let path = self.path.clone();
        let id = self.id.clone();
        let runtime = Arc::clone(&self.runtime);
        let failure = Arc::clone(&self.failure);
        let parts = Arc::clone(&self.parts);
        let thread = std::thread::Builder::new()
            .name("upload".into())
            .spawn(move || {
                let result = runtime.block_on(send_parts(store, path, id, rx));
                match result {
                    Ok(done) => *parts.lock().unwrap_or_else(|p| p.into_inner()) = done,
                    Err(e) => *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e),
                }
            })?;
        Ok(PartWriter {
            part_size: self.part_size,
            buf: Vec::new(),
            next_part: 0,
            tx: Some(tx),
            thread: Some(thread),
            failure: Arc::clone(&self.failure),
        })
    }

    /// The error that stopped the parts, if one did: the cause to report instead of the
    /// writer's "the upload stopped".
    pub fn failure(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(part, e)| part_error(&self.url, *part, e))
    }

    /// Completes the upload: the object appears, whole. Runs under
    /// [`crate::atomic::commit_undoable`], so a signal either comes first (and aborts) or
    /// waits for the object to be complete.
    pub fn complete(mut self) -> Result<(), Error> {
        let parts = std::mem::take(&mut *self.parts.lock().unwrap_or_else(|p| p.into_inner()));
        let Some(undo) = self.undo else {
            return Err(crate::convert::error::interrupted());
        };
        let result = crate::atomic::commit_undoable(undo, || {
            self.runtime
                .block_on(self.store.complete_multipart(&self.path, &self.id, parts))
                .map_err(io::Error::other)
        });
        match result {
            Ok(_) => {
                self.done = true;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                Err(crate::convert::error::interrupted())
            }
            Err(e) => {
                let error = match e
                    .get_ref()
                    .and_then(|s| s.downcast_ref::<object_store::Error>())
                {
                    Some(store_error) => upload_error(&self.url, store_error),
                    None => crate::convert::error::output_io(Path::new(&self.url), e),
                };
                Err(error)
            }
        }
    }

    /// Aborts the upload (what a drop without completion does).
    fn abort(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(u) = self.undo.take() {
            crate::atomic::forget_undo(u);
        }
        let _ = self
            .runtime
            .block_on(self.store.abort_multipart(&self.path, &self.id));
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Aborts upload `id` of `path` with a new client and runtime (from the signal handler).
fn abort_with_new_client(
    bucket: &str,
    options: &RemoteOptions,
    path: &ObjectPath,
    id: &MultipartId,
) {
    let Ok(store) = s3_client(bucket, options) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let _ = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), store.abort_multipart(path, id)).await
    });
}

/// `e`, which a request of the upload to `url` failed with: "cannot upload to URL: PROBLEM".
fn upload_error(url: &str, e: &object_store::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        Some(Path::new(url)),
        format!("cannot upload to {url}: {}", error::problem(e)),
    )
    .with_operation(Operation::Write)
}

/// `e`, which the request for part `part` (0-based; `None`: no part's) failed with.
fn part_error(url: &str, part: Option<usize>, e: &object_store::Error) -> Error {
    match part {
        Some(index) => Error::new(
            ErrorKind::Io,
            Some(Path::new(url)),
            format!(
                "cannot upload to {url}: part {} was not stored: {}",
                index + 1,
                error::problem(e)
            ),
        )
        .with_operation(Operation::Write),
        None => upload_error(url, e),
    }
}

/// Sends the parts received on `rx`, [`PARTS_IN_FLIGHT`] at a time, until the channel closes;
/// returns their ids in part order, or the first error (which drops `rx`, so that the writer
/// stops at its next part).
async fn send_parts(
    store: Arc<AmazonS3>,
    path: ObjectPath,
    id: MultipartId,
    mut rx: tokio::sync::mpsc::Receiver<(usize, Bytes)>,
) -> Result<Vec<PartId>, PartFailure> {
    use futures_util::future::{Either, select};
    let mut in_flight = tokio::task::JoinSet::new();
    let mut done: Vec<Option<PartId>> = Vec::new();
    let mut record =
        |joined: Option<Result<(usize, PartResult), tokio::task::JoinError>>| match joined {
            Some(Ok((index, Ok(part)))) => {
                if done.len() <= index {
                    done.resize(index + 1, None);
                }
                done[index] = Some(part);
                Ok(())
            }
            Some(Ok((index, Err(e)))) => Err((Some(index), e)),
            Some(Err(e)) => Err((
                None,
                object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(e),
                },
            )),
            None => Ok(()),
        };
    loop {
        let next = if in_flight.is_empty() {
            Either::Left(rx.recv().await)
        } else if in_flight.len() >= PARTS_IN_FLIGHT {
            Either::Right(in_flight.join_next().await)
        } else {
            let recv = pin!(rx.recv());
            let joined = pin!(in_flight.join_next());
            match select(recv, joined).await {
                Either::Left((part, _)) => Either::Left(part),
                Either::Right((joined, _)) => Either::Right(joined),
            }
        };
        match next {
            Either::Left(Some((index, data))) => {
                let (store, path, id) = (Arc::clone(&store), path.clone(), id.clone());
                in_flight.spawn(async move {
                    (index, store.put_part(&path, &id, index, data.into()).await)
                });
            }
            Either::Left(None) => break,
            Either::Right(joined) => record(joined)?,
        }
    }
    while let Some(joined) = in_flight.join_next().await {
        record(Some(joined))?;
    }
    done.into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.ok_or_else(|| {
                (
                    None,
                    object_store::Error::Generic {
                        store: "S3",
                        source: format!("part {} was never sent", i + 1).into(),
                    },
                )
            })
        })
        .collect()
}

/// Cuts the output into parts and hands them to the upload thread.
pub struct PartWriter {
    part_size: usize,
    buf: Vec<u8>,
    next_part: usize,
    tx: Option<tokio::sync::mpsc::Sender<(usize, Bytes)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failure: Arc<Mutex<Option<PartFailure>>>,
}

impl PartWriter {
    fn send_part(&mut self) -> io::Result<()> {
        if self.next_part as u64 >= MAX_PARTS {
            return Err(io::Error::other(format!(
                "the output needs more than {MAX_PARTS} parts of {} bytes",
                self.part_size
            )));
        }
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        let sent = match &self.tx {
            Some(tx) => tx
                .blocking_send((self.next_part, Bytes::from(part)))
                .is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.stopped());
        }
        self.next_part += 1;
        Ok(())
    }

    /// The upload thread stopped early: wait for it, and say so (the caller reports the
    /// cause from [`S3Upload::failure`]).
    fn stopped(&mut self) -> io::Error {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let cause = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, e)| error::one_line(&e.to_string()));
        io::Error::other(format!(
            "the upload stopped: {}",
            cause.unwrap_or_else(|| "the upload thread ended".into())
        ))
    }
}

impl StreamOut for PartWriter {
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.part_size);
        }
        while !data.is_empty() {
            let n = (self.part_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.part_size {
                self.send_part()?;
            }
        }
        Ok(())
    }

    /// Sends the last part (an empty one when the output is empty: an upload needs one) and
    /// waits until every part is stored.
    fn end(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() || self.next_part == 0 {
            self.send_part()?;
        }
        self.tx = None;
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| io::Error::other("the upload thread panicked"))?;
        }
        if self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Err(self.stopped());
        }
        Ok(())
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // Closing the channel ends the upload thread once its parts are sent or failed.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The test fault hook's `corrupt-part`: a transport that flips one byte of the body of every
/// UploadPart request for part 1, after the client computed the part's checksums and signed
/// them, as a corrupting network would.
mod fault_connector {
    use std::future::Future;
    use std::pin::Pin;

    use http_body_util::BodyExt;
    use object_store::ClientOptions;
    use object_store::client::{
        HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    };

    #[derive(Debug)]
    pub(super) struct CorruptingConnector;

    impl HttpConnector for CorruptingConnector {
        fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
            let inner = object_store::client::ReqwestConnector::default().connect(options)?;
            Ok(HttpClient::new(Corrupting { inner }))
        }
    }

    #[derive(Debug)]
    struct Corrupting {
        inner: HttpClient,
    }

    impl HttpService for Corrupting {
        fn call<'a, 'b>(
            &'a self,
            req: HttpRequest,
        ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'b>>
        where
            'a: 'b,
            Self: 'b,
        {
            Box::pin(async move {
                let first_part = req
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv == "partNumber=1"));
                if !first_part {
                    return self.inner.execute(req).await;
                }
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?
                    .to_bytes();
                let mut data = bytes.to_vec();
                if let Some(b) = data.first_mut() {
                    *b ^= 0x01;
                }
                let req = HttpRequest::from_parts(parts, bytes::Bytes::from(data).into());
                self.inner.execute(req).await
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_8_mib_until_10000_of_them_would_not_hold_the_output() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(part_size(0), 8 * MIB);
        assert_eq!(part_size(80_000 * MIB), 8 * MIB);
        // One byte more needs 8 MiB + 1 per part, rounded up to a whole MiB.
        assert_eq!(part_size(80_000 * MIB + 1), 9 * MIB);
        let bound = output_bound(5 << 40);
        assert!(part_size(bound) * MAX_PARTS >= bound);
        // The bound covers the largest metadata share, qcow2 with 512-byte clusters.
        assert!(output_bound(1 << 30) >= (1 << 30) + (1 << 30) / 50);
        assert_eq!(output_bound(u64::MAX), u64::MAX);
    }
}
