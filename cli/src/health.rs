//! Health checks for `herald announce`: a TCP connect, or an HTTP GET answered 2xx (through
//! `reqwest`, without following redirects: a check asks about exactly the URL it was given).

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpStream;

use crate::args::AnnounceArgs;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A configured check.
#[derive(Debug)]
pub(crate) enum Check {
    Tcp(String),
    Http {
        url: reqwest::Url,
        client: reqwest::Client,
    },
}

impl Check {
    pub(crate) fn from_args(args: &AnnounceArgs) -> anyhow::Result<Option<Check>> {
        if let Some(t) = &args.check_tcp {
            return Ok(Some(Check::Tcp(t.clone())));
        }
        match &args.check_http {
            Some(url) => Check::http(url).map(Some),
            None => Ok(None),
        }
    }

    fn http(url: &str) -> anyhow::Result<Check> {
        let parsed =
            reqwest::Url::parse(url).with_context(|| format!("--check-http: bad URL `{url}`"))?;
        if parsed.scheme() != "http" {
            bail!("--check-http: only http:// URLs are supported, got `{url}`");
        }
        let client = reqwest::Client::builder()
            .timeout(CHECK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // The checked service is local to the announcer: no proxy from the environment,
            // and a new connection each time, as a new client of the service would open.
            .no_proxy()
            .pool_max_idle_per_host(0)
            .user_agent("herald")
            .build()
            .context("--check-http: cannot build the HTTP client")?;
        Ok(Check::Http {
            url: parsed,
            client,
        })
    }

    /// What passing means, for messages: "accept connections on HOST:PORT".
    pub(crate) fn describe(&self) -> String {
        match self {
            Check::Tcp(addr) => format!("accept connections on {addr}"),
            Check::Http { url, .. } => format!("answer 2xx on {url}"),
        }
    }

    /// Whether the check passes now.
    pub(crate) async fn run(&self) -> bool {
        let attempt = async {
            match self {
                Check::Tcp(addr) => TcpStream::connect(addr).await.is_ok(),
                Check::Http { url, client } => match client.get(url.clone()).send().await {
                    Ok(response) => response.status().is_success(),
                    Err(e) => {
                        tracing::debug!("health check GET {url}: {e}");
                        false
                    }
                },
            }
        };
        tokio::time::timeout(CHECK_TIMEOUT, attempt)
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Answers one request with `response`, written in pieces of `chunk` bytes.
    async fn serve_once(response: &'static str, chunk: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                request.extend_from_slice(&buf[..n]);
            }
            for piece in response.as_bytes().chunks(chunk) {
                stream.write_all(piece).await.unwrap();
                stream.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        format!("http://{addr}/healthz")
    }

    async fn check(response: &'static str, chunk: usize) -> bool {
        Check::http(&serve_once(response, chunk).await)
            .unwrap()
            .run()
            .await
    }

    #[tokio::test]
    async fn http_2xx_passes_even_when_the_answer_comes_in_pieces() {
        let ok = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        assert!(check(ok, 1024).await, "204 must pass");
        assert!(
            check(ok, 3).await,
            "a status line split across reads must still pass"
        );
    }

    #[tokio::test]
    async fn http_errors_and_redirects_fail() {
        let unavailable = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert!(!check(unavailable, 1024).await, "503 must fail");
        let moved = "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n";
        assert!(
            !check(moved, 1024).await,
            "a redirect is not followed and fails"
        );
    }

    #[tokio::test]
    async fn http_without_a_listener_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let check = Check::http(&format!("http://{addr}/")).unwrap();
        assert!(
            !check.run().await,
            "a refused connection must fail the check"
        );
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(
            Check::http("https://127.0.0.1:1/").is_err(),
            "https is refused"
        );
        assert!(
            Check::http("127.0.0.1:8080/health").is_err(),
            "a URL needs its scheme"
        );
        assert!(Check::http("http://localhost/health").is_ok());
    }
}
