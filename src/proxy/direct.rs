//! Writing a fast-path hit straight to the client's socket, header and body in one
//! `sendmsg`, or, for a body kept in a memory file, the header and then `sendfile`.
//!
//! Through Pingora's HTTP/1 writer a hit costs a header serialized into its 1460-byte
//! write buffer, then, for a body that does not fit, a flush of the header on its own
//! and a second send for the body: two trips through the TCP stack where one does, and
//! user-space work on every hit. A stored hit is complete and its length known, so the
//! fast path serializes the header [`super::head::hit`] built (the one every path and
//! protocol sends) and hands header and body to the kernel in one vectored send. A large
//! body that the store keeps in a file (a sealed memory file or its object file) goes
//! out with `sendfile` after the header: the kernel passes the file's pages to the
//! socket instead of copying the body, which was over a quarter of the CPU a 100 KiB hit
//! cost. The header is sent as it is, not held back with `MSG_MORE` for the body to
//! join it (see [`send_from`]). When the socket cannot take it all at once (a slow
//! reader, a large body), the rest is sent as the socket drains, as long as it keeps
//! draining ([`WRITE_IDLE_TIMEOUT`]).
//!
//! Pingora's session stays consistent: nothing went through its writer, so finishing
//! the session has nothing to flush, and the connection is reused or closed as its
//! keep-alive state says, which is also what the `Connection` header here says.

use std::fs::File;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::header;
use pingora_core::protocols::http::date::get_cached_date;
use pingora_core::protocols::l4::stream::Stream;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;

use super::head::{put_status, HitHeader, Plan};
use crate::storage::BodyRef;
use rustix::net::SendFlags;
use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How long a client may leave a response unread, not taking a single byte, before the
/// connection is dropped. A slow reader that keeps reading is never cut off.
pub const WRITE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The client connection of an HTTP/1 session over plain TCP, to be written directly.
pub struct Direct {
    fd: RawFd,
    keepalive: bool,
}

impl Direct {
    /// `None` when the session is not HTTP/1 over a TCP socket (HTTP/2, TLS, a
    /// subrequest) or was upgraded: such responses go through Pingora's writer.
    pub fn new(session: &Session) -> Option<Direct> {
        let h1 = session.downstream_session.as_http1()?;
        if h1.was_upgraded() || h1.response_written().is_some() {
            return None;
        }
        let fd = super::deadline::unwrapped(h1.stream())
            .as_any()
            .downcast_ref::<Stream>()?
            .as_raw_fd();
        Some(Direct {
            fd,
            keepalive: h1.will_keepalive(),
        })
    }

    fn connection(&self) -> &'static str {
        if self.keepalive {
            "keep-alive"
        } else {
            "close"
        }
    }

    /// The bytes of `header` on this connection: it must frame the body with
    /// `Content-Length`, and gets the `Date` and `Connection` fields Pingora would have
    /// added. Made before anything is sent (and without moving the header into the
    /// sending future), so that [`Direct::send`] only writes.
    pub fn head(&self, header: &mut HitHeader<'_>) -> Result<BytesMut> {
        let mut head = BytesMut::with_capacity(512);
        let date = get_cached_date();
        match header {
            HitHeader::Plan(plan) => plan.put_h1(&mut head, &date, self.connection()),
            // Built whole (a ranged hit): written as a plan that changes nothing.
            HitHeader::Built(resp) if resp.has_case() => {
                Plan::new(resp).put_h1(&mut head, &date, self.connection())
            }
            // No stored header lacks its fields' case, but Pingora's own writer would
            // take one: as it does, after inserting `Date` and `Connection`.
            HitHeader::Built(resp) => {
                head.put_slice(b"HTTP/1.1 ");
                put_status(&mut head, resp.status, resp.get_reason_phrase());
                resp.insert_header(header::DATE, date)?;
                resp.insert_header(header::CONNECTION, self.connection())?;
                resp.header_to_h1_wire(&mut head);
            }
        }
        head.put_slice(b"\r\n");
        Ok(head)
    }

    /// Send `head` (from [`Direct::head`]) and `body` ([`Payload::EMPTY`] for a
    /// response without one: HEAD, 304, 204). Returns the body bytes sent. An error
    /// means the client went away or stopped reading: the connection must not be
    /// reused, and nothing more may be written to it.
    pub async fn send(&self, head: &[u8], body: Payload<'_>) -> Result<usize> {
        match self.write_all(head, body).await {
            Ok(()) => Ok(body.len()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Error::e_because(
                ErrorType::WriteTimedout,
                format!("writing a hit: the client read nothing for {WRITE_IDLE_TIMEOUT:?}"),
                e,
            )
            .map_err(|e| e.into_down()),
            Err(e) => Error::e_because(ErrorType::WriteError, "writing a hit", e)
                .map_err(|e| e.into_down()),
        }
    }

    async fn write_all(&self, head: &[u8], body: Payload<'_>) -> io::Result<()> {
        let total = head.len() + body.len();
        let mut sent = match send_from(self.fd, head, body, 0) {
            Ok(n) if n == total => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        // The socket is full: wait for it to drain, on a second descriptor of the same
        // socket registered for writability (the first one is Pingora's registration).
        log::debug!("client socket full after {sent} of {total} bytes; sending as it drains");
        let waiter = register_writable(borrow(self.fd).try_clone_to_owned()?)?;
        while sent < total {
            let mut ready = tokio::time::timeout(WRITE_IDLE_TIMEOUT, waiter.writable())
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            match ready.try_io(|fd| send_from(fd.as_raw_fd(), head, body, sent)) {
                Ok(n) => sent = n?,
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// The body that follows a header: bytes in memory, or a span of a file (a sealed
/// memory file, or the disk tier's object file), which is never changed while it is sent.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    Memory(&'a [u8]),
    File {
        file: &'a File,
        /// Where the span starts in the file.
        start: u64,
        len: usize,
    },
}

impl<'a> Payload<'a> {
    /// No body.
    pub const EMPTY: Payload<'static> = Payload::Memory(&[]);

    /// `span` of a stored body, sent from its file when it has one.
    pub fn stored(body: BodyRef<'a>, span: Range<usize>) -> Payload<'a> {
        match body {
            BodyRef::File { file, offset } => Payload::File {
                file,
                start: offset + span.start as u64,
                len: span.len(),
            },
            BodyRef::Memory(bytes) => Payload::Memory(&bytes[span]),
        }
    }

    fn len(&self) -> usize {
        match *self {
            Payload::Memory(bytes) => bytes.len(),
            Payload::File { len, .. } => len,
        }
    }
}

/// Send what is left of `head` + `body` after `sent` bytes, as far as the socket takes
/// it. Returns the new total sent, or `WouldBlock` when the socket took nothing.
fn send_from(fd: RawFd, head: &[u8], body: Payload<'_>, start: usize) -> io::Result<usize> {
    let socket = borrow(fd);
    let (file, from, len) = match body {
        Payload::Memory(body) => return send_vectored_from(socket, head, body, start),
        Payload::File { file, start, len } => (file, start, len),
    };
    let mut sent = start;
    if sent < head.len() {
        // Not `MSG_MORE`. Held back, the header is unsent data in the socket when
        // `sendfile` hands TCP the body, so TCP's rate sampling takes the connection
        // for one the application keeps busy rather than one waiting for requests.
        // Under BBR (the default congestion control of many hosts) such samples end
        // its start-up phase, and every response is then paced by a kernel timer:
        // 5-6 µs of system time more per 100 KiB hit (18.1 against 12.8 µs, random
        // 100 KiB hits; docs/benchmarks.md, "One segment less is not cheaper"). Under
        // CUBIC both cost the same. nginx sends its header the same way (`writev`,
        // then `sendfile`).
        let n = retry(|| {
            Ok(rustix::net::send(
                socket,
                &head[sent..],
                SendFlags::empty(),
            )?)
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += n;
        if sent < head.len() {
            return Ok(sent);
        }
    }
    let done = sent - head.len();
    if done == len {
        return Ok(sent);
    }
    let mut offset = from + done as u64;
    match retry(|| {
        Ok(rustix::fs::sendfile(
            socket,
            file,
            Some(&mut offset),
            len - done,
        )?)
    }) {
        // A memory file is sealed at its length, and an object file is never changed
        // in place (a rewrite renames a new file over it): neither can end early.
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(n) => Ok(sent + n),
        // The header went out in this call: report that progress, not the full socket.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && sent > start => Ok(sent),
        Err(e) => Err(e),
    }
}

fn send_vectored_from(
    socket: BorrowedFd<'_>,
    head: &[u8],
    body: &[u8],
    sent: usize,
) -> io::Result<usize> {
    let (head_left, body_left) = if sent < head.len() {
        (&head[sent..], body)
    } else {
        (&[][..], &body[sent - head.len()..])
    };
    let slices = [IoSlice::new(head_left), IoSlice::new(body_left)];
    let n = retry(|| SockRef::from(&socket).send_vectored(&slices))?;
    if n == 0 && head_left.len() + body_left.len() > 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(sent + n)
}

/// Run a system call again for as long as a signal interrupts it.
fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[allow(unsafe_code)]
fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: `fd` is the client socket of the session a `Direct` was made for, or the
    // duplicate of it that `write_all` holds in its `AsyncFd` while it uses it. The fast
    // hit path holds that session (`&mut Session`) while it sends, so the stream, and
    // the descriptor with it, outlive every use of this borrow.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

#[allow(unsafe_code)]
fn register_writable(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is open and names the same descriptor until it is dropped,
    // which the `AsyncFd` that takes it does last.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) }?)
}
