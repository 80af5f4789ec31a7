//! A connection wrapper that enforces chihaya's three HTTP timeouts.
//!
//! A connection moves through three phases, driven by its own I/O:
//!
//! - **idle**: waiting for a request's first byte. A new connection must send
//!   it within `read_timeout`; a kept-alive one within `idle_timeout`.
//! - **reading**: from a request's first byte, the whole request must arrive
//!   within `read_timeout` (a client dribbling its request slower is cut off).
//! - **writing**: from the reply's first write, every write and flush must make
//!   progress within `write_timeout` (a client that stops reading is cut off).
//!   A completed flush returns the connection to idle.
//!
//! (hyper's own header timeout starts while a kept-alive connection is still
//! idle, so it cannot tell `read_timeout` and `idle_timeout` apart.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The three timeouts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub read: Duration,
    pub write: Duration,
    /// `None` when keep-alive is off: the connection closes after one reply.
    pub idle: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Reading,
    Writing,
}

pub(crate) struct TimedIo<T> {
    inner: T,
    /// Bytes read and written, for the metrics.
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    timeouts: Timeouts,
    phase: Phase,
    /// When the current read phase (idle or reading) must end.
    read_deadline: Option<Instant>,
    /// When the current stalled write must have progressed.
    write_deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

impl<T> TimedIo<T> {
    pub(crate) fn new(
        inner: T,
        timeouts: Timeouts,
        (bytes_in, bytes_out): (Arc<AtomicU64>, Arc<AtomicU64>),
    ) -> Self {
        let deadline = Instant::now() + timeouts.read;
        TimedIo {
            inner,
            bytes_in,
            bytes_out,
            timeouts,
            phase: Phase::Idle,
            read_deadline: Some(deadline),
            write_deadline: None,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Polls the timer for `deadline`; `Ready` when it has passed.
    fn poll_deadline(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx)
    }

    fn write_stalled(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let deadline = *self
            .write_deadline
            .get_or_insert_with(|| Instant::now() + self.timeouts.write);
        match self.poll_deadline(deadline, cx) {
            Poll::Ready(()) => Err(timed_out("writing the reply")),
            Poll::Pending => Ok(()),
        }
    }

    /// Accounts for the outcome of a write: progress clears the stall timer
    /// and counts the bytes; no progress arms (or fires) it.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(r) => {
                self.write_deadline = None;
                if let Ok(n) = r {
                    self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.write_stalled(cx)?;
                Poll::Pending
            }
        }
    }

    fn start_writing(&mut self) {
        if self.phase != Phase::Writing {
            self.phase = Phase::Writing;
            self.read_deadline = None;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.read_deadline
            && Instant::now() >= deadline
        {
            return Poll::Ready(Err(timed_out("reading the request")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 && this.phase == Phase::Idle {
                    this.phase = Phase::Reading;
                    this.read_deadline = Some(Instant::now() + this.timeouts.read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(deadline) = this.read_deadline
                    && this.poll_deadline(deadline, cx).is_ready()
                {
                    return Poll::Ready(Err(timed_out("reading the request")));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.start_writing();
        let poll = Pin::new(&mut this.inner).poll_write(cx, data);
        this.after_write(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                this.write_deadline = None;
                if this.phase == Phase::Writing {
                    // The reply is out: wait for the next request.
                    this.phase = Phase::Idle;
                    this.read_deadline = this.timeouts.idle.map(|idle| Instant::now() + idle);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                this.write_stalled(cx)?;
                Poll::Pending
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                this.write_stalled(cx)?;
                Poll::Pending
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.start_writing();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
