//! The agent's HTTP connections. hyper answers a request it cannot parse by itself, before
//! any handler runs, with an empty body: 414 for a URI over 64 KiB, 431 for a head over its
//! buffer, 400 for a malformed request line or header. [`Listener`] wraps every accepted
//! connection in [`JsonRefusals`], which gives such an answer the agent's JSON error body,
//! and then reads what the client still sends before closing (a lingering close), so that
//! the client reads the answer instead of a connection reset.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// How long a refused connection is read from, at most, before it is closed.
const LINGER_FOR: Duration = Duration::from_secs(2);
/// How much of a refused request is read, at most, before the connection is closed.
const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// The agent's listener: a TCP listener whose connections are [`JsonRefusals`].
pub(crate) struct Listener(pub(crate) tokio::net::TcpListener);

impl axum::serve::Listener for Listener {
    type Io = JsonRefusals<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's accept loop: it waits out errors such as too many open files.
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (JsonRefusals::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection whose automatic refusals from hyper carry a JSON body.
pub(crate) struct JsonRefusals<S> {
    inner: S,
    refusal: Refusal,
}

/// Where a connection stands with its refusal.
enum Refusal {
    /// None written: writes pass through.
    None,
    /// Written in place of hyper's head of `replaces` bytes, up to `written`.
    Writing {
        answer: Vec<u8>,
        written: usize,
        replaces: usize,
    },
    /// Written; the client's remaining bytes are read and dropped until EOF, the deadline,
    /// or `LINGER_BYTES`.
    Sent {
        shut: bool,
        linger: Option<Pin<Box<Sleep>>>,
        read: usize,
    },
}

impl<S> JsonRefusals<S> {
    pub(crate) fn new(inner: S) -> Self {
        JsonRefusals {
            inner,
            refusal: Refusal::None,
        }
    }
}

/// The JSON answer that replaces `head`, when `head` is one of hyper's automatic refusals: a
/// whole response head of status 400, 414 or 431 with an empty body. The agent's own errors
/// always have a body, so they never match.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    if !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = response.parse(head) else {
        return None;
    };
    let empty = response
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("content-length") && h.value == b"0");
    let message = match response.code? {
        400 => "the request is not valid HTTP/1.1",
        414 => "the request's URI is too long: at most 65,534 bytes",
        431 => "the request's head (its line and headers) is too large",
        _ => return None,
    };
    if len != head.len() || !empty {
        return None;
    }
    let code = response.code?;
    let reason = response.reason.unwrap_or_default();
    let body = serde_json::json!({ "error": message }).to_string();
    let answer = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(answer.into_bytes())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for JsonRefusals<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Refusal::None = this.refusal {
            match json_answer(buf) {
                Some(answer) => {
                    tracing::debug!(
                        bytes = buf.len(),
                        "a request hyper refused gets a JSON body"
                    );
                    this.refusal = Refusal::Writing {
                        answer,
                        written: 0,
                        replaces: buf.len(),
                    };
                }
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let Refusal::Writing {
            answer,
            written,
            replaces,
        } = &mut this.refusal
        else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *written < answer.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let replaces = *replaces;
        this.refusal = Refusal::Sent {
            shut: false,
            linger: None,
            read: 0,
        };
        Poll::Ready(Ok(replaces))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Refusal::Sent { shut, .. } = &mut this.refusal else {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        };
        if !*shut {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            *shut = true;
        }
        ready!(this.poll_linger(cx));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> JsonRefusals<S> {
    /// Once a refusal is sent and the write side shut: reads until the client has sent
    /// everything (bounded in time and bytes), so that closing does not reset the
    /// connection under the answer. Pending while there is more to read.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Refusal::Sent { linger, read, .. } = &mut self.refusal else {
            return Poll::Ready(());
        };
        let deadline = linger.get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER_FOR)));
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if *read >= LINGER_BYTES || deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => *read += buf.filled().len(),
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonRefusals<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
