//! A minimal plain-HTTP client over a tokio `TcpStream`, for the servers' health and monitoring
//! endpoints on loopback: HTTP/1.0 requests (so responses are never chunked), the whole body
//! read until the server closes.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ports::LOCALHOST;

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

/// `GET path` on 127.0.0.1:`port`.
pub async fn get(port: u16, path: &str) -> io::Result<Response> {
    request(port, "GET", path, None).await
}

/// `POST path` on 127.0.0.1:`port` with a JSON body.
pub async fn post_json(port: u16, path: &str, body: &str) -> io::Result<Response> {
    request(port, "POST", path, Some(body)).await
}

async fn request(port: u16, method: &str, path: &str, body: Option<&str>) -> io::Result<Response> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = TcpStream::connect((LOCALHOST, port)).await?;
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
        if let Some(body) = body {
            req.push_str("Content-Type: application/json\r\n");
            req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        } else {
            req.push_str("\r\n");
        }
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse(&raw)
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "HTTP request timed out"))?
}

fn parse(raw: &[u8]) -> io::Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad HTTP response: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

/// The string value of `"key": "value"` in a flat JSON text (first occurrence), enough for the
/// few fields the kit reads from monitoring responses without a JSON parser.
pub(crate) fn json_str<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let rest = json_value(json, key)?;
    let rest = rest.strip_prefix('"')?;
    rest.find('"').map(|end| &rest[..end])
}

/// The numeric value of `"key": 123` in a JSON text (first occurrence).
pub(crate) fn json_u64(json: &str, key: &str) -> Option<u64> {
    let rest = json_value(json, key)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn json_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\"");
    let at = json.find(&pattern)? + pattern.len();
    let rest = json[at..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let r = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "{}");
    }

    #[test]
    fn reads_flat_json_fields() {
        let j = r#"{"header":{"member_id":"42"}, "leader": "42", "num_routes": 2,}"#;
        assert_eq!(json_str(j, "member_id"), Some("42"));
        assert_eq!(json_str(j, "leader"), Some("42"));
        assert_eq!(json_u64(j, "num_routes"), Some(2));
        assert_eq!(json_u64(j, "missing"), None);
    }
}
