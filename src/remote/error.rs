//! What a failed request means, in one sentence naming the URL: the client's errors mapped to
//! the crate's [`Error`] kinds (every network, permission or missing-object failure is
//! [`ErrorKind::Io`], exit 2; see docs/commands.md, "Remote images").

use std::error::Error as StdError;
use std::path::Path;

use object_store::client::{HttpError, HttpErrorKind};

use crate::error::{Error, ErrorKind, Operation};

/// `text` on one line, at most 300 characters: servers put XML documents with newlines in
/// their error bodies, and an error must stay one sentence.
pub(super) fn one_line(text: &str) -> String {
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        line = line.chars().take(300).collect::<String>() + "...";
    }
    line
}

/// The S3 error code (`<Code>NoSuchBucket</Code>`) in an error's text, if there is one.
fn s3_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(code)
}

/// The HTTP status in an error's text ("... status code: 404 Not Found ..."): the client keeps
/// its retry error private, so its text is all there is to read.
fn status(text: &str) -> Option<u16> {
    let rest = &text[text.find("status code: ")? + "status code: ".len()..];
    rest.get(..3)?.parse().ok()
}

/// The transport failure under `e`, if one caused it.
fn http_kind(e: &(dyn StdError + 'static)) -> Option<HttpErrorKind> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(http) = err.downcast_ref::<HttpError>() {
            return Some(http.kind());
        }
        current = err.source();
    }
    None
}

/// The whole chain of `e`'s messages, for the codes and statuses in them.
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e.source();
    while let Some(err) = current {
        text.push_str(": ");
        text.push_str(&err.to_string());
        current = err.source();
    }
    text
}

/// Whether `e` is the server's answer that the bucket does not exist.
pub(super) fn is_no_such_bucket(e: &object_store::Error) -> bool {
    s3_code(&chain_text(e)) == Some("NoSuchBucket")
}

/// The problem `e` describes, as the end of "cannot read URL: ...".
pub(super) fn problem(e: &object_store::Error) -> String {
    let text = chain_text(e);
    let code = s3_code(&text);
    let status = status(&text);
    let with_code = |phrase: &str| match (status, code) {
        (Some(s), Some(c)) => format!("{phrase} (HTTP {s}, {c})"),
        (Some(s), None) => format!("{phrase} (HTTP {s})"),
        (None, Some(c)) => format!("{phrase} ({c})"),
        (None, None) => phrase.to_string(),
    };
    // Whatever the request (a list and a CreateMultipartUpload answer it too, which the
    // client reports as a generic error), the code says what is missing.
    if code == Some("NoSuchBucket") {
        return with_code("the bucket does not exist");
    }
    // The server computed other digests of the bytes it received than the request carried:
    // S3 answers BadDigest (Content-MD5, x-amz-checksum-*) or XAmzContentSHA256Mismatch (the
    // signed payload hash).
    if matches!(
        code,
        Some("BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest")
    ) {
        return with_code("the server received other bytes than were sent (corrupted on the way)");
    }
    match e {
        object_store::Error::NotFound { .. } if code == Some("NoSuchKey") => {
            with_code("no such object")
        }
        // A HEAD answer has no body to tell a missing bucket from a missing key.
        object_store::Error::NotFound { .. } => with_code("no such bucket or object"),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => with_code(
            "access denied; check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) and the region (AWS_REGION)",
        ),
        _ => match http_kind(e) {
            Some(HttpErrorKind::Connect) => {
                format!("cannot connect to the server ({})", one_line(&innermost(e)))
            }
            Some(HttpErrorKind::Timeout) => {
                "the server stopped sending (timed out, after retries)".to_string()
            }
            Some(HttpErrorKind::Interrupted | HttpErrorKind::Request) => format!(
                "the connection broke ({}, after retries)",
                one_line(&innermost(e))
            ),
            _ => match (status, code) {
                (Some(s), _) if s >= 500 => with_code("the server failed, after retries"),
                (Some(_), _) => with_code("the server refused the request"),
                _ => one_line(&text),
            },
        },
    }
}

/// The deepest message under `e`: the transport's own words ("connection refused").
fn innermost(e: &(dyn StdError + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// `e`, which a request for `url` failed with, as the crate's error: "cannot read URL: PROBLEM".
pub(super) fn from_store(url: &str, e: &object_store::Error) -> Error {
    let error = Error::new(
        ErrorKind::Io,
        Some(Path::new(url)),
        format!("cannot read {url}: {}", problem(e)),
    )
    .with_operation(Operation::Read);
    match e {
        // A missing object is a missing file to `hash --check --ignore-missing`.
        object_store::Error::NotFound { .. } => {
            error.with_source(std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        _ => error,
    }
}

/// A response body that ended before the length the request asked for.
pub(super) fn truncated(url: &str, offset: u64, want: u64, got: u64) -> Error {
    Error::new(
        ErrorKind::Io,
        Some(Path::new(url)),
        format!(
            "cannot read {url}: the server sent {got} of the {want} bytes asked for at offset {offset} (a truncated response)"
        ),
    )
    .with_operation(Operation::Read)
    .with_offset(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_are_read_from_the_text() {
        let text = "Error performing GET http://h/b/k in 2ms - Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code></Error>";
        assert_eq!(s3_code(text), Some("NoSuchBucket"));
        assert_eq!(status(text), Some(404));
        assert_eq!(s3_code("<Code></Code>"), None);
        assert_eq!(s3_code("<Code>a b</Code>"), None);
        assert_eq!(status("status code: 4"), None);
    }

    /// A generic error, as the client reports a failed list or UploadPart, with `body`.
    fn generic(status: &str, body: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: format!(
                "Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: {status}: <Error><Code>{body}</Code></Error>"
            )
            .into(),
        }
    }

    #[test]
    fn a_missing_bucket_and_a_bad_digest_are_told_whatever_the_request() {
        let e = generic("404 Not Found", "NoSuchBucket");
        assert!(is_no_such_bucket(&e));
        assert_eq!(
            problem(&e),
            "the bucket does not exist (HTTP 404, NoSuchBucket)"
        );
        assert!(!is_no_such_bucket(&generic("404 Not Found", "NoSuchKey")));
        for code in ["BadDigest", "XAmzContentSHA256Mismatch"] {
            assert_eq!(
                problem(&generic("400 Bad Request", code)),
                format!(
                    "the server received other bytes than were sent (corrupted on the way) (HTTP 400, {code})"
                )
            );
        }
        assert_eq!(
            problem(&generic("500 Internal Server Error", "InternalError")),
            "the server failed, after retries (HTTP 500, InternalError)"
        );
    }

    #[test]
    fn one_line_joins_and_caps() {
        assert_eq!(one_line("a\n  b\r\nc"), "a b c");
        assert_eq!(one_line(&"x".repeat(400)).len(), 303);
    }
}
