//! A future that is either already finished or a boxed computation.
//!
//! `async fn` in a trait is not object-safe, and `#[async_trait]` boxes every
//! call. The hot path (an in-memory store, a hook that only inspects the
//! request) finishes synchronously, so trait methods return `ReadyOrBoxed`:
//! the synchronous case is a plain value, and only implementations that really
//! wait (Redis, a database) pay for a box.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Either a value available now or a boxed future producing it.
pub enum ReadyOrBoxed<'a, T> {
    Ready(Option<T>),
    Boxed(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> ReadyOrBoxed<'a, T> {
    /// A finished computation: no allocation.
    pub fn ready(value: T) -> Self {
        ReadyOrBoxed::Ready(Some(value))
    }

    /// A computation that has to wait for I/O.
    pub fn boxed(fut: impl Future<Output = T> + Send + 'a) -> Self {
        ReadyOrBoxed::Boxed(Box::pin(fut))
    }
}

// Neither variant is self-referential: the `Option` is plain data and the boxed
// future is already pinned on the heap.
impl<T> Unpin for ReadyOrBoxed<'_, T> {}

impl<T> Future for ReadyOrBoxed<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            ReadyOrBoxed::Ready(value) => {
                Poll::Ready(value.take().expect("ReadyOrBoxed polled after completion"))
            }
            ReadyOrBoxed::Boxed(fut) => fut.as_mut().poll(cx),
        }
    }
}
