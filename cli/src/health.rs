//! Health checks for `herald announce`: a TCP connect, or an HTTP GET answered 2xx.

use std::time::Duration;

use anyhow::bail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::AnnounceArgs;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A configured check.
#[derive(Debug)]
pub(crate) enum Check {
    Tcp(String),
    Http { host_port: String, path: String },
}

impl Check {
    pub(crate) fn from_args(args: &AnnounceArgs) -> anyhow::Result<Option<Check>> {
        if let Some(t) = &args.check_tcp {
            return Ok(Some(Check::Tcp(t.clone())));
        }
        let Some(url) = &args.check_http else {
            return Ok(None);
        };
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--check-http: only http:// URLs are supported, got `{url}`");
        };
        let (host_port, path) = match rest.split_once('/') {
            Some((h, p)) => (h.to_owned(), format!("/{p}")),
            None => (rest.to_owned(), "/".to_owned()),
        };
        let host_port = if host_port.contains(':') {
            host_port
        } else {
            format!("{host_port}:80")
        };
        Ok(Some(Check::Http { host_port, path }))
    }

    /// Whether the check passes now.
    pub(crate) async fn run(&self) -> bool {
        let attempt = async {
            match self {
                Check::Tcp(addr) => TcpStream::connect(addr).await.is_ok(),
                Check::Http { host_port, path } => http_ok(host_port, path).await.unwrap_or(false),
            }
        };
        tokio::time::timeout(CHECK_TIMEOUT, attempt)
            .await
            .unwrap_or(false)
    }
}

async fn http_ok(host_port: &str, path: &str) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(host_port).await?;
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: herald\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut head = [0u8; 32];
    let n = s.read(&mut head).await?;
    // "HTTP/1.x 2xx"
    let line = String::from_utf8_lossy(&head[..n]);
    Ok(line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2')))
}
