//! Requests hyper refuses before the service sees them: a head over
//! [`MAX_REQUEST_HEAD`](crate::server::MAX_REQUEST_HEAD) bytes or with too
//! many headers (431), or one that is not HTTP (400).
//!
//! hyper answers those itself, with an empty body, then closes the
//! connection with the rest of the request unread, which makes the kernel
//! reset it; a client still sending its 1 MB head sees the reset, often
//! before the reply. So:
//!
//! - [`ServiceReplies`] sits between hyper and the connection and lets
//!   through only the replies of the service; hyper's own reply (a write
//!   when the service has not been called since the last reply) goes
//!   nowhere, nor does hyper's shutdown after it.
//! - Once hyper has returned its parse error, [`refuse`] writes the tracker's
//!   reply (a bencoded `failure reason`, as for every tracker error), shuts
//!   down writing, and reads and drops what the client still sends, for at
//!   most [`LINGER_TIME`] and [`LINGER_BYTES`], so that closing finds nothing
//!   unread and the client reads the reply.
//!
//! A reply is one run of writes ended by a flush: the service's bodies are
//! whole (`Full`) and it never reads a request body, so hyper sends no
//! `100 Continue` and flushes once per reply (as [`crate::io`] assumes too).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bittorrent::{BencodeWriter, ClientError};
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The failure reason of a 431: the limits `server` gives hyper.
const HEAD_TOO_LARGE: ClientError =
    ClientError::new("request head too large: at most 8192 bytes and 64 headers");
/// The failure reason of a 400.
const MALFORMED: ClientError = ClientError::new("malformed HTTP request");
/// How long a refused client may go on sending before the connection closes.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much of what a refused client sends is read and dropped, at most: a
/// 1 MB head whole.
const LINGER_BYTES: usize = 1024 * 1024;

/// Whose reply is being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// None yet: the next write says whose it is.
    Nobody,
    Service,
    /// hyper's own, to a request the service never saw: swallowed.
    Hyper,
}

/// A connection as hyper sees it, minus hyper's own replies.
pub(crate) struct ServiceReplies<'a, T> {
    inner: T,
    /// Set by the service for every request it is given; taken by the first
    /// write of the reply.
    served: &'a AtomicBool,
    writer: Writer,
}

impl<'a, T> ServiceReplies<'a, T> {
    pub(crate) fn new(inner: T, served: &'a AtomicBool) -> Self {
        ServiceReplies {
            inner,
            served,
            writer: Writer::Nobody,
        }
    }

    /// Whether hyper wrote a reply of its own (which went nowhere).
    pub(crate) fn hyper_replied(&self) -> bool {
        self.writer == Writer::Hyper
    }

    pub(crate) fn into_inner(self) -> T {
        self.inner
    }

    /// Whose reply the next write belongs to.
    fn writer(&mut self) -> Writer {
        if self.writer == Writer::Nobody {
            self.writer = if self.served.swap(false, Ordering::Relaxed) {
                Writer::Service
            } else {
                Writer::Hyper
            };
        }
        self.writer
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ServiceReplies<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ServiceReplies<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.writer() {
            Writer::Hyper => Poll::Ready(Ok(data.len())),
            _ => Pin::new(&mut self.inner).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.writer() {
            Writer::Hyper => Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum())),
            _ => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.writer {
            Writer::Hyper => Poll::Ready(Ok(())),
            _ => {
                let flushed = Pin::new(&mut self.inner).poll_flush(cx);
                if let Poll::Ready(Ok(())) = flushed {
                    self.writer = Writer::Nobody;
                }
                flushed
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.writer {
            Writer::Hyper => Poll::Ready(Ok(())),
            _ => Pin::new(&mut self.inner).poll_shutdown(cx),
        }
    }
}

/// The reply to a request hyper refused with `error`, if it is one hyper
/// answers (a parse error): status and failure reason.
fn refusal_for(error: &hyper::Error) -> Option<(StatusCode, ClientError)> {
    if error.is_parse_too_large() {
        Some((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, HEAD_TOO_LARGE))
    } else if error.is_parse() && !error.is_parse_version_h2() {
        Some((StatusCode::BAD_REQUEST, MALFORMED))
    } else {
        None
    }
}

/// Answers a request hyper refused with `error` (after [`ServiceReplies`]
/// swallowed hyper's reply), then closes gracefully: writing shut down,
/// what the client still sends read and dropped (bounded), so that the
/// client reads the reply instead of a reset. Does nothing for an error
/// that is no refusal.
pub(crate) async fn refuse<T>(io: &mut T, error: &hyper::Error) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Some((status, reason)) = refusal_for(error) else {
        return Ok(());
    };
    let mut body = Vec::with_capacity(32 + reason.message().len());
    BencodeWriter::failure(&mut body, reason.message());
    let mut reply = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    io.write_all(&reply).await?;
    io.shutdown().await?;
    // On the heap, not in every connection's future.
    let mut sink = vec![0u8; 16 * 1024];
    let drain = async {
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        io::Result::Ok(())
    };
    // Past the bounds the connection closes all the same.
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{MAX_HEADERS, MAX_REQUEST_HEAD};

    #[test]
    fn the_431_states_the_limits_the_server_applies() {
        assert_eq!(
            HEAD_TOO_LARGE.message(),
            format!(
                "request head too large: at most {MAX_REQUEST_HEAD} bytes and {MAX_HEADERS} headers"
            )
        );
    }
}
