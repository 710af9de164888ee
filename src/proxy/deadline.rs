//! A bound on how long a client may take to send a request's header (`header_timeout`).
//!
//! Pingora bounds each read of a request header (60 s on a new connection, the keep-alive
//! time on a reused one) but not the whole header: a client that sends one byte a minute
//! holds a connection and its task for as long as it likes (slowloris). Pingora has no
//! hook before it reads the header, so the bound sits under it, on the connection: every
//! HTTP/1 connection's stream is wrapped in a [`HeaderDeadline`] before Pingora sees it.
//!
//! The wrapper starts a clock at the first byte of a request and stops it at the empty
//! line that ends the header; if the clock runs out first, the read fails and Pingora
//! drops the connection. It knows where a request begins without parsing framing: a new
//! connection begins with one, and the edge says when a request is done
//! ([`next_request`], from the logging phase), so a request body, however slow, is never
//! timed as a header. HTTP/2 connections (ALPN `h2`) are not wrapped: their header frames
//! are the h2 crate's; an h2c connection's preface ends in an empty line, so its clock
//! stops at once and never starts again.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::metrics::Metrics;

/// A server app whose HTTP/1 connections must send each request header within `limit`.
pub struct Guarded<A> {
    inner: Arc<A>,
    limit: Duration,
    metrics: Arc<Metrics>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, limit: Duration, metrics: Arc<Metrics>) -> Guarded<A> {
        Guarded {
            inner: Arc::new(inner),
            limit,
            metrics,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream: Stream = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            stream
        } else {
            Box::new(HeaderDeadline::new(
                stream,
                self.limit,
                self.metrics.clone(),
            ))
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Tell the connection under `session` that its request is done: the next byte the
/// client sends starts a new header, and with it the clock.
pub fn next_request(session: &Session) {
    if let Some(clock) = session
        .downstream_session
        .as_http1()
        .and_then(|h1| h1.stream().as_any().downcast_ref::<HeaderDeadline>())
    {
        clock.awaiting.store(true, Ordering::Relaxed);
    }
}

/// The stream under `stream`, if a [`HeaderDeadline`] wraps it.
pub fn unwrapped(stream: &Stream) -> &Stream {
    match stream.as_any().downcast_ref::<HeaderDeadline>() {
        Some(clock) => &clock.inner,
        None => stream,
    }
}

/// A client stream whose request headers run against a clock.
pub struct HeaderDeadline {
    inner: Stream,
    limit: Duration,
    /// The next byte read begins a request header.
    awaiting: AtomicBool,
    /// A header is being read.
    in_header: bool,
    /// When the header being read must be whole: set only when its first read did not
    /// bring all of it, so that the common header, whole in one read, costs no clock.
    deadline: Option<Instant>,
    /// The timer for `deadline`, made only when a read has to wait for more of it.
    timer: Option<Pin<Box<Sleep>>>,
    /// Where the reader is in the header's last lines, to see the empty line that ends it.
    end: HeaderEnd,
    metrics: Arc<Metrics>,
}

impl HeaderDeadline {
    fn new(inner: Stream, limit: Duration, metrics: Arc<Metrics>) -> HeaderDeadline {
        HeaderDeadline {
            inner,
            limit,
            awaiting: AtomicBool::new(true),
            in_header: false,
            deadline: None,
            timer: None,
            end: HeaderEnd::default(),
            metrics,
        }
    }
}

impl std::fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("inner", &self.inner)
            .field("limit", &self.limit)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// A scanner for the end of a header: an empty line, `CRLF CRLF`, or bare `LF`s as
/// RFC 9112 §2.2 lets a recipient accept.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum HeaderEnd {
    /// Inside a line.
    #[default]
    InLine,
    /// Just after a line's LF.
    LineStart,
    /// A CR at the start of a line.
    LineStartCr,
}

impl HeaderEnd {
    /// Feed `bytes`; true when the header ended among them. This runs on every request's
    /// first read, so it looks at the read's end first, and otherwise only at the bytes
    /// before each LF, found with `memchr` (SIMD) rather than by walking every byte.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        // The common case: a whole header in one read, and nothing after it.
        if bytes.ends_with(b"\r\n\r\n") {
            return true;
        }
        let before = *self;
        for lf in memchr::memchr_iter(b'\n', bytes) {
            // Where this LF's line began: an empty line (LF, or CR LF, right after an LF).
            let empty = match lf {
                0 => before != HeaderEnd::InLine,
                1 => bytes[0] == b'\n' || (bytes[0] == b'\r' && before == HeaderEnd::LineStart),
                _ => bytes[lf - 1] == b'\n' || (bytes[lf - 1] == b'\r' && bytes[lf - 2] == b'\n'),
            };
            if empty {
                return true;
            }
        }
        *self = match bytes {
            [] => before,
            [.., b'\n'] => HeaderEnd::LineStart,
            [.., b'\n', b'\r'] => HeaderEnd::LineStartCr,
            [b'\r'] if before == HeaderEnd::LineStart => HeaderEnd::LineStartCr,
            _ => HeaderEnd::InLine,
        };
        false
    }
}

impl HeaderDeadline {
    /// Whether the running header's time is up, arming its timer (and so a wake-up at
    /// the deadline) the first time this is asked.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        timer.as_mut().poll(cx).is_ready()
    }

    fn timed_out(&mut self) -> io::Error {
        self.in_header = false;
        self.deadline = None;
        self.timer = None;
        self.metrics.header_timeouts.fetch_add(1, Ordering::Relaxed);
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the request header did not arrive whole within {:?} (header_timeout)",
                self.limit
            ),
        )
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.deadline.is_some() && this.expired(cx) {
            return Poll::Ready(Err(this.timed_out()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        match read {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return read;
                }
                if !this.in_header && this.awaiting.load(Ordering::Relaxed) {
                    this.awaiting.store(false, Ordering::Relaxed);
                    this.in_header = true;
                    this.end = HeaderEnd::default();
                }
                if this.in_header {
                    if this.end.feed(new) {
                        this.in_header = false;
                        this.deadline = None;
                        this.timer = None;
                    } else if this.deadline.is_none() {
                        // The clock counts from this first read of the header.
                        this.deadline = Some(Instant::now() + this.limit);
                    }
                }
                read
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(this.timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderEnd;
    use proptest::prelude::*;

    fn ends(parts: &[&[u8]]) -> Option<usize> {
        let mut end = HeaderEnd::default();
        parts.iter().position(|p| end.feed(p))
    }

    #[test]
    fn sees_the_empty_line_across_reads() {
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]), Some(0));
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n", b"\r", b"\n"]),
            Some(3)
        );
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"\r\n"]), Some(1));
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r", b"\n"]), Some(1));
        assert_eq!(ends(&[b"GET / HTTP/1.1\nHost: a\n\n"]), Some(0));
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"X: b\r\n"]), None);
        // A CR inside a line is not an empty line.
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nX: \r\r\n"]), None);
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nX: a\r", b"\r\n"]), None);
        // h2c's preface ends in one.
        assert_eq!(ends(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), Some(0));
    }

    /// The rule, one byte at a time: a header ends at an LF that follows an LF, or an LF
    /// and a CR.
    fn ends_bytewise(bytes: &[u8]) -> Option<usize> {
        (0..bytes.len()).find(|&i| {
            bytes[i] == b'\n'
                && ((i >= 1 && bytes[i - 1] == b'\n')
                    || (i >= 2 && bytes[i - 1] == b'\r' && bytes[i - 2] == b'\n'))
        })
    }

    proptest! {
        #[test]
        fn finds_the_end_in_the_read_that_holds_it_however_the_bytes_are_split(
            bytes in proptest::collection::vec(prop::sample::select(vec![b'\r', b'\n', b'a']), 0..40),
            cuts in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= bytes.len()).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            cuts.dedup();
            let parts: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            let expected = ends_bytewise(&bytes).map(|at| cuts.windows(2).position(|w| at >= w[0] && at < w[1]).unwrap());
            prop_assert_eq!(ends(&parts), expected);
        }
    }
}
