//! The options every command that reads images takes for `s3://` and `https://` inputs.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use vmimage::remote::RemoteOptions;

/// How to reach remote images (docs/commands.md, "Remote images").
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Accept http:// URLs and a plain-HTTP S3 endpoint: unencrypted and unauthenticated, for
    /// a trusted network only.
    #[arg(long)]
    pub allow_http: bool,
    /// Trust the certificate authorities in this PEM file, besides the system's, for https://
    /// URLs and the S3 endpoint (SSL_CERT_FILE replaces the system's instead).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// `VMIMAGE_REMOTE_TIMEOUT`: seconds a response may send nothing before the attempt is
/// abandoned and retried (the idle timeout; default 30).
const TIMEOUT_VARIABLE: &str = "VMIMAGE_REMOTE_TIMEOUT";

impl RemoteArgs {
    /// The library's options, with the idle timeout from `VMIMAGE_REMOTE_TIMEOUT` when it is a
    /// positive number of seconds.
    pub fn options(&self) -> RemoteOptions {
        let mut options = RemoteOptions {
            allow_http: self.allow_http,
            ca_cert: self.ca_cert.clone(),
            ..RemoteOptions::default()
        };
        if let Some(seconds) = std::env::var(TIMEOUT_VARIABLE)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
        {
            options.idle_timeout = Duration::from_secs_f64(seconds);
            options.connect_timeout = options.connect_timeout.min(options.idle_timeout);
        }
        options
    }
}
