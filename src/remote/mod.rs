//! Images where they live: S3-compatible object storage (`s3://bucket/key`) and HTTPS
//! (`https://host/path`), read in place through a synchronous interface.
//!
//! The client is `object_store` (the Apache Arrow project's), chosen by measurement against a
//! strict server (docs/architecture.md, "Remote sources"): it signs with SigV4, retries 5xx
//! answers and timeouts with backoff, resumes a broken streaming body with a ranged GET, and
//! sends no `aws-chunked` uploads that S3-compatible stores refuse. Its API is async; the async
//! stays in this module: every [`RemoteStore`] owns a private `current_thread` tokio runtime
//! and its methods block on it, so nothing else in the crate sees a future.
//!
//! Credentials and the endpoint come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL` or
//! `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, ...), as `object_store` reads them; `~/.aws` profiles
//! are not read.
//!
//! Change detection (SPEC "Honest"): a read starts from one [`ObjectVersion`] (length, ETag,
//! Last-Modified, from a HEAD); every later response must describe that same version, or the
//! read fails with [`ErrorKind::Changed`].

mod error;
mod file;
mod reader;
pub mod upload;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt,
    RetryConfig,
};

use crate::error::{Error, ErrorKind};

pub use file::{BLOCK, CACHE_BLOCKS, RemoteFile};
pub use reader::ObjectReader;
pub(crate) use reader::{failure, take_failure};

/// How long a connection may take to open before the attempt counts as failed (and is retried).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response may send nothing before the attempt counts as stalled (and is retried):
/// an idle timeout, not a limit on the whole transfer, which for a large image takes minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of one request after a 5xx answer, a timeout or a broken connection, with
/// exponential backoff from 100 ms (the AWS SDKs' "standard" mode makes 3 attempts).
pub const DEFAULT_MAX_RETRIES: usize = 3;

/// Where a remote image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteLocation {
    /// An object in an S3-compatible store, at the endpoint the `AWS_*` variables name.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object's key (no leading `/`).
        key: String,
    },
    /// A file on a web server.
    Http {
        /// `https://host[:port]` (or `http://` when plain HTTP was allowed).
        origin: String,
        /// The path on the server, as in the URL (percent-encoded, with its leading `/`).
        path: String,
    },
}

/// Whether `arg` names a remote image (`s3://`, `https://` or `http://`) rather than a file.
pub fn is_remote(arg: &std::ffi::OsStr) -> bool {
    let bytes = arg.as_encoded_bytes();
    ["s3://", "https://", "http://"].iter().any(|scheme| {
        bytes.len() >= scheme.len() && bytes[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
    })
}

impl RemoteLocation {
    /// Parses `s3://bucket/key`, `https://host/path`, or `http://host/path` when
    /// `options.allow_http` is set. Any other scheme, an empty bucket, key or path, a query or a
    /// fragment is an [`ErrorKind::InvalidArgument`] naming the URL.
    pub fn parse(url: &str, options: &RemoteOptions) -> Result<Self, Error> {
        let invalid = |problem: &str| {
            Error::new(
                ErrorKind::InvalidArgument,
                Some(Path::new(url)),
                format!("{url}: {problem}"),
            )
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("not a URL (expected s3://bucket/key or https://host/path)"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "s3" => {
                let (bucket, key) = rest
                    .split_once('/')
                    .ok_or_else(|| invalid("names no object (expected s3://bucket/key)"))?;
                Self::s3(bucket, key).map_err(|problem| invalid(&problem))
            }
            scheme @ ("https" | "http") => {
                if scheme == "http" && !options.allow_http {
                    return Err(invalid(
                        "plain HTTP is neither encrypted nor authenticated; pass --allow-http to read it anyway",
                    ));
                }
                if rest.contains(['?', '#']) {
                    return Err(invalid(
                        "URLs with a query or a fragment are not supported (a presigned URL, for example)",
                    ));
                }
                let (authority, path) = match rest.find('/') {
                    Some(i) => rest.split_at(i),
                    None => (rest, ""),
                };
                if authority.is_empty() || authority.contains('@') {
                    return Err(invalid(
                        "names no host (or names a user, which is not supported)",
                    ));
                }
                if path.trim_matches('/').is_empty() {
                    return Err(invalid("names no file on the server"));
                }
                ObjectPath::from_url_path(path.trim_start_matches('/'))
                    .map_err(|e| invalid(&format!("its path cannot be read ({e})")))?;
                Ok(Self::Http {
                    origin: format!("{scheme}://{authority}"),
                    path: path.to_string(),
                })
            }
            _ => Err(invalid(
                "unsupported scheme (expected s3://bucket/key or https://host/path)",
            )),
        }
    }

    /// Huawei IMS's `image_url` form, `bucket:object`: an object in OBS, whose endpoint the
    /// `AWS_*` variables name. Separate from [`RemoteLocation::parse`] because `a:b` is also a
    /// valid local file name: only a caller that knows the target is IMS may read it this way.
    pub fn ims_object(bucket_object: &str) -> Result<Self, Error> {
        let (bucket, key) = bucket_object.split_once(':').ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                Some(Path::new(bucket_object)),
                format!("{bucket_object}: not an IMS image URL (expected bucket:object)"),
            )
        })?;
        Self::s3(bucket, key).map_err(|problem| {
            Error::new(
                ErrorKind::InvalidArgument,
                Some(Path::new(bucket_object)),
                format!("{bucket_object}: {problem}"),
            )
        })
    }

    fn s3(bucket: &str, key: &str) -> Result<Self, String> {
        if bucket.is_empty() || bucket.contains(['/', ':']) {
            return Err("names no valid bucket".to_string());
        }
        ObjectPath::parse(key).map_err(|e| format!("its key cannot be used ({e})"))?;
        if key.is_empty() || key.ends_with('/') {
            return Err("names no object".to_string());
        }
        Ok(Self::S3 {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The URL, as errors and reports name the image.
    pub fn url(&self) -> String {
        self.to_string()
    }

    /// The object's path in its store.
    fn object_path(&self) -> ObjectPath {
        match self {
            // Both were checked by `parse`; a failure here would be a bug, not an input.
            RemoteLocation::S3 { key, .. } => ObjectPath::parse(key).unwrap_or_default(),
            RemoteLocation::Http { path, .. } => {
                ObjectPath::from_url_path(path.trim_start_matches('/')).unwrap_or_default()
            }
        }
    }
}

impl fmt::Display for RemoteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteLocation::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            RemoteLocation::Http { origin, path } => write!(f, "{origin}{path}"),
        }
    }
}

/// How to reach remote images.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Accept `http://` URLs and plain-HTTP endpoints (`--allow-http`; `AWS_ALLOW_HTTP=true`
    /// also allows an `http://` S3 endpoint).
    pub allow_http: bool,
    /// A PEM file of certificate authorities to trust besides the system's (`--ca-cert`).
    pub ca_cert: Option<PathBuf>,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`DEFAULT_MAX_RETRIES`].
    pub max_retries: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            allow_http: false,
            ca_cert: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }
}

/// The options of remote reads opened by path ([`crate::source::ImageFile::open`] of an
/// `s3://` or `https://` URL), set once by the command line from its flags.
static OPTIONS: RwLock<Option<RemoteOptions>> = RwLock::new(None);

/// Sets the options every later remote read opened by path uses.
pub fn set_options(options: RemoteOptions) {
    *OPTIONS.write().unwrap_or_else(|e| e.into_inner()) = Some(options);
}

/// The options set by [`set_options`], or the defaults.
pub fn options() -> RemoteOptions {
    OPTIONS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

/// What a read starts from: the object as one HEAD described it. Every later response must
/// describe the same version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    meta: ObjectMeta,
}

impl ObjectVersion {
    /// The object's length in bytes.
    pub fn len(&self) -> u64 {
        self.meta.size
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.meta.size == 0
    }

    /// The entity tag the server gave, quotes included; `None` when it gave none.
    pub fn etag(&self) -> Option<&str> {
        self.meta.e_tag.as_deref()
    }

    /// The Last-Modified time, RFC 3339.
    pub fn last_modified(&self) -> String {
        self.meta.last_modified.to_rfc3339()
    }

    /// How `other` differs from this version, as a phrase for [`Error::changed`]; `None` when
    /// it is the same.
    fn difference(&self, other: &ObjectMeta) -> Option<String> {
        if other.size != self.meta.size {
            Some(format!(
                "its length went from {} to {} bytes",
                self.meta.size, other.size
            ))
        } else if other.e_tag.is_some() && other.e_tag != self.meta.e_tag {
            Some(format!(
                "its ETag went from {} to {}",
                self.meta.e_tag.as_deref().unwrap_or("none"),
                other.e_tag.as_deref().unwrap_or("none")
            ))
        } else if other.last_modified != self.meta.last_modified {
            Some(format!(
                "its Last-Modified went from {} to {}",
                self.meta.last_modified.to_rfc3339(),
                other.last_modified.to_rfc3339()
            ))
        } else {
            None
        }
    }
}

/// One remote object and the client that reaches it: synchronous methods over a private
/// `current_thread` runtime.
pub struct RemoteStore {
    location: RemoteLocation,
    url: String,
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    requests: Arc<AtomicU64>,
}

impl fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RemoteStore {
    /// A client for `location`: an S3 client configured from the `AWS_*` variables, or an
    /// HTTPS client for a web server. Opens no connection.
    pub fn open(location: &RemoteLocation, options: &RemoteOptions) -> Result<Self, Error> {
        let url = location.url();
        let failed = |problem: String| {
            Error::new(
                ErrorKind::InvalidArgument,
                Some(Path::new(&url)),
                format!("cannot read {url}: {problem}"),
            )
        };
        let client = client_options(options)?;
        let store: Arc<dyn ObjectStore> = match location {
            RemoteLocation::S3 { bucket, .. } => Arc::new(
                s3_builder(bucket, client, options)
                    .build()
                    .map_err(|e| failed(settings_unusable(&e)))?,
            ),
            RemoteLocation::Http { origin, .. } => Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(origin.as_str())
                    .with_client_options(client)
                    .with_retry(retry_config(options))
                    .build()
                    .map_err(|e| failed(error::one_line(&e.to_string())))?,
            ),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    Some(Path::new(&url)),
                    format!("cannot read {url}: cannot start the I/O runtime: {e}"),
                )
            })?;
        Ok(Self {
            path: location.object_path(),
            location: location.clone(),
            url,
            runtime,
            store,
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Where the object is.
    pub fn location(&self) -> &RemoteLocation {
        &self.location
    }

    /// The URL, as errors name it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests (HEAD and GET, not counting the client's retries) this store has
    /// sent: what `info` and `check` promise to keep small.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The client, for the multipart upload beside this module.
    #[allow(dead_code)]
    pub(crate) fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object's path in its store.
    #[allow(dead_code)]
    pub(crate) fn object_path(&self) -> &ObjectPath {
        &self.path
    }

    /// Runs `future` to completion on this store's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The object's length, ETag and Last-Modified (one HEAD).
    pub fn head(&self) -> Result<ObjectVersion, Error> {
        self.count();
        let meta = match self.block_on(self.store.head(&self.path)) {
            Ok(meta) => meta,
            Err(e) => return Err(error::from_store(&self.url, &e)),
        };
        Ok(ObjectVersion { meta })
    }

    /// Bytes `range` of the object as it is in `version` (one ranged GET); the object having
    /// changed since is [`ErrorKind::Changed`].
    pub fn read_range(&self, version: &ObjectVersion, range: Range<u64>) -> Result<Bytes, Error> {
        let want = range.end.saturating_sub(range.start);
        if want == 0 {
            return Ok(Bytes::new());
        }
        if range.end > version.len() {
            return Err(Error::new(
                ErrorKind::Internal,
                Some(Path::new(&self.url)),
                format!(
                    "cannot read {}: bytes {}..{} lie past its end ({} bytes)",
                    self.url,
                    range.start,
                    range.end,
                    version.len()
                ),
            ));
        }
        self.count();
        let options = self.get_options(version, Some(GetRange::Bounded(range.clone())));
        let bytes = self.block_on(async {
            let result = self.store.get_opts(&self.path, options).await?;
            let meta = result.meta.clone();
            let bytes = result.bytes().await?;
            Ok::<_, object_store::Error>((meta, bytes))
        });
        let (meta, bytes) = bytes.map_err(|e| self.error(version, &e))?;
        if let Some(detail) = version.difference(&meta) {
            return Err(Error::changed(Path::new(&self.url), &detail));
        }
        if bytes.len() as u64 != want {
            return Err(error::truncated(
                &self.url,
                range.start,
                want,
                bytes.len() as u64,
            ));
        }
        Ok(bytes)
    }

    /// The whole object as it is in `version`, streamed by one GET: a [`std::io::Read`] that
    /// fails with [`ErrorKind::Changed`] (through [`into_error`]) when the object changes.
    pub fn stream(&self, version: &ObjectVersion) -> Result<ObjectReader<'_>, Error> {
        self.count();
        let options = self.get_options(version, None);
        let result = self
            .block_on(self.store.get_opts(&self.path, options))
            .map_err(|e| self.error(version, &e))?;
        if let Some(detail) = version.difference(&result.meta) {
            return Err(Error::changed(Path::new(&self.url), &detail));
        }
        Ok(ObjectReader::new(self, version.len(), result.into_stream()))
    }

    /// A GET that the server refuses (412) unless the object still has `version`'s ETag, and
    /// that the client's own resumption of a broken body checks against the same ETag.
    fn get_options(&self, version: &ObjectVersion, range: Option<GetRange>) -> GetOptions {
        GetOptions {
            if_match: version.meta.e_tag.clone(),
            range,
            ..GetOptions::default()
        }
    }

    fn error(&self, version: &ObjectVersion, e: &object_store::Error) -> Error {
        if matches!(e, object_store::Error::Precondition { .. }) {
            return Error::changed(
                Path::new(&self.url),
                &format!(
                    "it no longer has the ETag {}",
                    version.etag().unwrap_or("none")
                ),
            );
        }
        error::from_store(&self.url, e)
    }
}

/// The crate error that an [`io::Error`](std::io::Error) from an [`ObjectReader`] stands for:
/// the change or network failure it carries, or a plain read error naming `url`.
pub fn into_error(url: &str, e: std::io::Error) -> Error {
    reader::into_error(url, e)
}

/// The HTTP client settings of every request, reads and uploads alike: the timeouts, plain
/// HTTP when allowed, and the certificate authorities of `--ca-cert` besides the system's.
pub(crate) fn client_options(options: &RemoteOptions) -> Result<ClientOptions, Error> {
    let mut client = ClientOptions::new()
        .with_allow_http(options.allow_http)
        .with_connect_timeout(options.connect_timeout)
        .with_read_timeout(options.idle_timeout)
        // A whole-request limit would cut off every transfer longer than it; stalls are
        // caught by the idle (read) timeout instead.
        .with_timeout_disabled();
    if let Some(ca) = &options.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| {
            Error::new(
                crate::error::io_kind(&e),
                Some(ca),
                format!(
                    "cannot read the CA certificate file {}: {}",
                    ca.display(),
                    crate::error::describe_io(&e)
                ),
            )
        })?;
        let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                Some(ca),
                format!(
                    "{}: not a PEM file of CA certificates ({})",
                    ca.display(),
                    error::one_line(&e.to_string())
                ),
            )
        })?;
        if certs.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                Some(ca),
                format!("{}: holds no PEM certificate", ca.display()),
            ));
        }
        for cert in certs {
            client = client.with_root_certificate(cert);
        }
    }
    Ok(client)
}

/// Retries of one request, as [`RemoteOptions::max_retries`] says, with exponential backoff.
fn retry_config(options: &RemoteOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: options.max_retries,
        retry_timeout: Duration::from_secs(300),
    }
}

/// The S3 client of `bucket`, for reads and uploads alike: `client` and the retries first,
/// then every `AWS_*` variable (as `AmazonS3Builder::from_env`, but after the options above,
/// so that the variables (`AWS_ALLOW_HTTP`, `AWS_READ_TIMEOUT`, ...) can still override them).
pub(crate) fn s3_builder(
    bucket: &str,
    client: ClientOptions,
    options: &RemoteOptions,
) -> object_store::aws::AmazonS3Builder {
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_client_options(client)
        .with_retry(retry_config(options));
    for (key, value) in std::env::vars_os() {
        if let (Some(key), Some(value)) = (key.to_str(), value.to_str())
            && key.starts_with("AWS_")
            && let Ok(config) = key.to_ascii_lowercase().parse()
        {
            builder = builder.with_config(config, value);
        }
    }
    builder.with_bucket_name(bucket)
}

/// The sentence for an S3 client the `AWS_*` settings could not build.
pub(crate) fn settings_unusable(e: &object_store::Error) -> String {
    format!(
        "the AWS_* settings are unusable ({})",
        error::one_line(&e.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IMS's `image_url` form names the same object as `s3://bucket/object`; a URL, an empty
    /// part or a bucket with a slash is refused, naming the argument.
    #[test]
    fn an_ims_bucket_object_is_the_s3_object() {
        let ims = RemoteLocation::ims_object("images:linux/disk.qcow2").unwrap();
        let s3 = RemoteLocation::parse("s3://images/linux/disk.qcow2", &RemoteOptions::default())
            .unwrap();
        assert_eq!(ims, s3);
        assert_eq!(ims.url(), "s3://images/linux/disk.qcow2");
        for bad in [
            "images",
            ":disk",
            "images:",
            "a/b:disk",
            "https://obs.example/b/k",
        ] {
            let e = RemoteLocation::ims_object(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(e.to_string().starts_with(bad), "{bad}: {e}");
        }
    }
}
