//! HTTP requests to the servers' health and monitoring endpoints on loopback, through
//! `reqwest`: one plain-HTTP GET or JSON POST with a deadline, the answer as status and text,
//! and JSON bodies decoded with `serde_json` into the caller's type.
//!
//! Each call builds its own client: a pooled connection belongs to the tokio runtime that
//! opened it, and every `#[tokio::test]` has a runtime of its own.

use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::ports::LOCALHOST;

/// How long one request may take, connection and body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The body decoded as JSON into `T`.
    ///
    /// # Errors
    /// `InvalidData` when the body is not JSON of that shape.
    pub fn json<T: DeserializeOwned>(&self) -> io::Result<T> {
        serde_json::from_str(&self.body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// `GET path` on 127.0.0.1:`port`.
///
/// # Errors
/// `TimedOut` after two seconds; any other failure to connect or read as `Other`.
pub async fn get(port: u16, path: &str) -> io::Result<Response> {
    let client = client()?;
    send(client.get(url(port, path))).await
}

/// `POST path` on 127.0.0.1:`port` with a JSON body.
///
/// # Errors
/// As for [`get`].
pub async fn post_json(port: u16, path: &str, body: &str) -> io::Result<Response> {
    let client = client()?;
    let request = client
        .post(url(port, path))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_owned());
    send(request).await
}

fn url(port: u16, path: &str) -> String {
    format!("http://{LOCALHOST}:{port}{path}")
}

fn client() -> io::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        // Loopback only: a proxy from the environment must not be asked.
        .no_proxy()
        .build()
        .map_err(io_error)
}

async fn send(request: reqwest::RequestBuilder) -> io::Result<Response> {
    let response = request.send().await.map_err(io_error)?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(io_error)?;
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

fn io_error(e: reqwest::Error) -> io::Error {
    let kind = if e.is_timeout() {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_json_bodies() {
        #[derive(serde::Deserialize)]
        struct Routez {
            num_routes: u64,
        }
        let r = Response {
            status: 200,
            body: r#"{"num_routes": 2, "routes": []}"#.into(),
        };
        assert_eq!(r.json::<Routez>().unwrap().num_routes, 2);
        let bad = Response {
            status: 200,
            body: "not json".into(),
        };
        let err = bad.json::<Routez>().err().expect("text is not JSON");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn refused_connection_is_an_error() {
        let port = crate::ports::free_port();
        assert!(get(port, "/").await.is_err(), "nothing listens on {port}");
    }
}
