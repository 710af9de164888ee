//! Slices (`cache.slice`): a customer's large objects fetched from the origin and stored
//! in pieces, as nginx's `slice` module does.
//!
//! A GET of a sliced customer is answered by the edge itself from the slices that cover
//! it: each slice is a subrequest (Pingora's, through every phase of this proxy: the
//! fast path, the cache, the origin pool with its failover) for the same URL, keyed
//! apart by a variance of its own, and asked of the origin with `Range: bytes=a-b`. The
//! first slice's answer gives the object's length (`Content-Range`) and validators; the
//! client gets `200` with the whole length, or `206` for its range, assembled from the
//! slices in order, fetching only those it covers.
//!
//! What it must never do:
//! - mix two versions of an object: a slice whose `ETag`, `Last-Modified` or length
//!   differs from the first's breaks the transfer, and the slices fetched for it are
//!   dropped so that the next request fetches them again;
//! - send a length it cannot keep: a slice that comes short breaks the transfer;
//! - fail an origin that ignores `Range`: its `200` is the whole object, stored whole
//!   (under the slice's key) and served as such.

use bytes::Bytes;
use http::{header, StatusCode};
use pingora_cache::key::HashBinary;
use pingora_cache::CacheKey;
use pingora_core::protocols::http::subrequest::server::SubrequestHandle;
use pingora_core::protocols::http::HttpTask;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::subrequest::Ctx as SubrequestCtx;
use pingora_proxy::Session;

use super::outcome::{Fwd, Outcome};
use super::{Ctx, Edge};

/// One slice of an object: the `index`-th piece of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub index: u64,
    pub size: u64,
}

impl Slice {
    /// The slice a subrequest is for, when it is one.
    pub(super) fn of(session: &Session) -> Option<Slice> {
        session
            .subrequest_ctx
            .as_ref()?
            .user_ctx()?
            .downcast_ref::<Slice>()
            .copied()
    }

    fn start(&self) -> u64 {
        self.index * self.size
    }

    /// What keys the slice apart from the object's other slices (pingora-cache's
    /// variance: the same primary key, so purges of the URL reach every slice).
    pub(super) fn variance(&self) -> HashBinary {
        // The same 16-byte BLAKE2b as key texts, of a text naming the slice.
        crate::storage::primary_hash(&format!("holdfast slice {} of {}", self.index, self.size))
    }

    /// `base` (the object's key) made this slice's.
    pub(super) fn key(&self, mut base: CacheKey) -> CacheKey {
        base.set_variance_key(self.variance());
        base
    }

    /// The `Range` the origin is asked with.
    pub(super) fn range(&self) -> String {
        format!(
            "bytes={}-{}",
            self.start(),
            self.start() + self.size.saturating_sub(1)
        )
    }

    /// Make `req` (a copy of the client's) the slice's own request: no range or
    /// condition of the client's, which the whole answer applies.
    pub(super) fn clean(req: &mut RequestHeader) {
        for name in [
            header::RANGE,
            header::IF_RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
        ] {
            req.remove_header(&name);
        }
    }
}

/// What a client asked with `Range`, as far as slices answer it: one range, or none
/// (several ranges, another unit, or a malformed header: the whole object, as RFC 9110
/// allows a server to answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Whole,
    /// `bytes=a-b` (b inclusive) or `bytes=a-` (`None`).
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

fn want(req: &RequestHeader) -> Want {
    let Some(value) = req.headers.get(header::RANGE) else {
        return Want::Whole;
    };
    let Some(spec) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Want::Whole;
    };
    if spec.contains(',') {
        return Want::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Want::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => Want::From(a, Some(b)),
        (Ok(a), Err(_)) if b.is_empty() => Want::From(a, None),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => Want::Suffix(n),
        _ => Want::Whole,
    }
}

/// The validators and length that make two slices parts of one object.
#[derive(Debug, PartialEq, Eq)]
struct Version {
    etag: Option<Vec<u8>>,
    last_modified: Option<Vec<u8>>,
    total: u64,
}

impl Version {
    fn of(header: &ResponseHeader, total: u64) -> Version {
        let field = |name| {
            header
                .headers
                .get(name)
                .map(|v: &http::HeaderValue| v.as_bytes().to_vec())
        };
        Version {
            etag: field(header::ETAG),
            last_modified: field(header::LAST_MODIFIED),
            total,
        }
    }
}

/// `Content-Range: bytes a-b/total` of a slice: (a, b, total).
fn content_range(header: &ResponseHeader) -> Option<(u64, u64, u64)> {
    let value = header.headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// A slice subrequest under way: its answer's header, and the rest to come.
struct Fetched {
    header: Box<ResponseHeader>,
    /// The header was the whole answer.
    ended: bool,
    handle: Option<SubrequestHandle>,
}

impl Drop for Fetched {
    /// A slice let go before its end (a `304`, a suffix range's first guess, a range
    /// that ended inside it) runs to its end in the background: the subrequest is
    /// neither cut off as an error nor is its fill.
    fn drop(&mut self) {
        if !self.ended {
            if let Some(handle) = self.handle.take() {
                handle.drain_tasks();
            }
        }
    }
}

impl Fetched {
    /// The next piece of the body; `None` at its end.
    async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.ended {
            return Ok(None);
        }
        let Some(handle) = self.handle.as_mut() else {
            return Ok(None);
        };
        loop {
            match handle.rx.recv().await {
                Some(HttpTask::Body(Some(bytes), end)) => {
                    self.ended = end;
                    return Ok(Some(bytes));
                }
                Some(HttpTask::Body(None, true)) | Some(HttpTask::Done) | None => {
                    self.ended = true;
                    return Ok(None);
                }
                Some(HttpTask::Failed(e)) => return Err(e),
                Some(_) => continue,
            }
        }
    }
}

impl Edge {
    /// Answer a GET or HEAD of a sliced customer from its slices: `Ok(false)` when it
    /// cannot (no subrequests on this session), and the request goes the usual way.
    pub(super) async fn serve_sliced(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        size: u64,
    ) -> Result<bool> {
        if session.subrequest_spawner.is_none() {
            return Ok(false);
        }
        let mut want = want(session.req_header());
        let head_only = session.req_header().method == http::Method::HEAD;
        let first_index = match want {
            Want::From(a, _) => a / size,
            Want::Whole | Want::Suffix(_) => 0,
        };
        let mut fetched = self.fetch_slice(session, first_index, size).await?;
        let (total, whole) = match fetched.header.status {
            StatusCode::PARTIAL_CONTENT => match content_range(&fetched.header) {
                Some((_, _, total)) => (total, false),
                None => return self.relay(session, ctx, fetched).await,
            },
            // The origin ignored the range: this is the whole object.
            StatusCode::OK => match crate::storage::content_length(&fetched.header.headers) {
                Some(total) => (total, true),
                None => return self.relay(session, ctx, fetched).await,
            },
            // 416 for a slice past the end (a range request beyond the object), or an
            // error: answered as the origin gave it.
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let total = content_range_total(&fetched.header);
                if total == Some(0) && want == Want::Whole {
                    // An empty object has no first slice: it is answered empty.
                    (0, true)
                } else {
                    return self.unsatisfiable(session, ctx, fetched, total).await;
                }
            }
            // An error: answered as the origin gave it.
            _ => return self.relay(session, ctx, fetched).await,
        };
        let req = session.req_header();
        if let Some(etag) = fetched.header.headers.get(header::ETAG) {
            if condition_matches(req.headers.get(header::IF_NONE_MATCH), etag, false) {
                return self.not_modified(session, ctx, fetched).await;
            }
            // A range of another version than the client holds: the whole object.
            if req.headers.contains_key(header::IF_RANGE)
                && !condition_matches(req.headers.get(header::IF_RANGE), etag, true)
            {
                want = Want::Whole;
            }
        } else if req.headers.contains_key(header::IF_RANGE) {
            want = Want::Whole;
        }
        let span = match want {
            Want::Whole => Some(0..total),
            Want::From(a, b) if a < total => Some(a..b.map_or(total, |b| (b + 1).min(total))),
            Want::From(..) => None,
            Want::Suffix(n) => Some(total.saturating_sub(n)..total),
        };
        let Some(span) = span else {
            return self.unsatisfiable(session, ctx, fetched, Some(total)).await;
        };
        let partial = want != Want::Whole;
        let Some(customer) = ctx.customer.clone() else {
            return Error::e_explain(ErrorType::InternalError, "a sliced answer without customer");
        };
        let base = super::key_for(&customer, session.req_header(), ctx.transport.scheme());
        let version = Version::of(&fetched.header, total);
        let mut header = fetched.header.clone();
        header.set_status(if partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })?;
        header.remove_header(&header::CONTENT_RANGE);
        header.remove_header(&header::TRANSFER_ENCODING);
        header.insert_header(header::CONTENT_LENGTH, span.end - span.start)?;
        if partial {
            header.insert_header(
                header::CONTENT_RANGE,
                format!(
                    "bytes {}-{}/{total}",
                    span.start,
                    span.end.saturating_sub(1)
                ),
            )?;
        }
        header.insert_header(header::ACCEPT_RANGES, "bytes")?;
        let status = header.status.as_u16();
        ctx.outcome = Some(outcome_of(&fetched.header));
        session
            .write_response_header(header, head_only || span.is_empty())
            .await?;
        if head_only || span.is_empty() {
            ctx.sent_directly = Some((status, 0));
            return Ok(true);
        }
        let mut sent = 0u64;
        let mut index = if whole { 0 } else { first_index };
        // Bytes before this one are in slices already passed over.
        let mut at = if whole { 0 } else { index * size };
        if !whole && span.start / size != index {
            // A suffix range: its slice was not known before the length was.
            index = span.start / size;
            at = index * size;
            fetched = self
                .next_slice(session, &base, index, size, &version)
                .await?;
        }
        loop {
            while let Some(piece) = fetched.next().await? {
                let piece_end = at + piece.len() as u64;
                let from = span.start.max(at);
                let to = span.end.min(piece_end);
                if from < to {
                    let bytes = piece.slice((from - at) as usize..(to - at) as usize);
                    sent += bytes.len() as u64;
                    session
                        .write_response_body(Some(bytes), sent == span.end - span.start)
                        .await?;
                }
                at = piece_end;
                if at >= span.end {
                    break;
                }
            }
            if at >= span.end {
                break;
            }
            if whole || at != (index + 1) * size {
                return Error::e_explain(
                    ErrorType::ReadError,
                    format!(
                        "slice {index} of {} ended at byte {at}, short of {}",
                        session.req_header().uri,
                        ((index + 1) * size).min(total)
                    ),
                );
            }
            index += 1;
            fetched = self
                .next_slice(session, &base, index, size, &version)
                .await?;
        }
        ctx.sent_directly = Some((status, sent as usize));
        Ok(true)
    }

    /// Slice `index` of an object whose first slice said `version`; a slice of another
    /// version drops the slices fetched so far and breaks the transfer.
    async fn next_slice(
        &self,
        session: &mut Session,
        base: &CacheKey,
        index: u64,
        size: u64,
        version: &Version,
    ) -> Result<Fetched> {
        let fetched = self.fetch_slice(session, index, size).await?;
        let same = fetched.header.status == StatusCode::PARTIAL_CONTENT
            && content_range(&fetched.header).is_some_and(|(a, _, total)| {
                a == index * size && Version::of(&fetched.header, total) == *version
            });
        if !same {
            self.drop_slices(base, size, index).await;
            return Error::e_explain(
                ErrorType::ReadError,
                format!(
                    "slice {index} of {} is not of the object the first slice was of \
                     (changed at the origin); its slices are dropped",
                    session.req_header().uri
                ),
            );
        }
        Ok(fetched)
    }

    /// Drop the stored slices `0..=last` of the object keyed `base`.
    async fn drop_slices(&self, base: &CacheKey, size: u64, last: u64) {
        let keys: Vec<_> = (0..=last)
            .map(|index| Slice { index, size }.key(base.clone()))
            .collect();
        crate::purge::remove_now(self.store, &keys).await;
    }

    /// Run the subrequest for slice `index` until its answer's header.
    async fn fetch_slice(&self, session: &Session, index: u64, size: u64) -> Result<Fetched> {
        let Some(spawner) = session.subrequest_spawner.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no subrequests on this session");
        };
        let sub_ctx = SubrequestCtx::builder()
            .user_ctx(Box::new(Slice { index, size }))
            .build();
        let (subrequest, mut handle) =
            spawner.create_subrequest(&session.downstream_session, sub_ctx);
        tokio::spawn(subrequest.run());
        loop {
            match handle.rx.recv().await {
                Some(HttpTask::Header(header, ended)) => {
                    return Ok(Fetched {
                        header,
                        ended,
                        handle: Some(handle),
                    })
                }
                Some(HttpTask::Failed(e)) => return Err(e),
                Some(_) => continue,
                None => {
                    return Error::e_explain(
                        ErrorType::ReadError,
                        format!("slice {index} ended without an answer"),
                    )
                }
            }
        }
    }

    /// Send the slice's answer as it is (an error, or an answer slices cannot frame).
    async fn relay(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut fetched: Fetched,
    ) -> Result<bool> {
        let status = fetched.header.status.as_u16();
        ctx.outcome = Some(outcome_of(&fetched.header));
        let ended = fetched.ended;
        let header = fetched.header.clone();
        session.write_response_header(header, ended).await?;
        let mut sent = 0;
        while let Some(piece) = fetched.next().await? {
            sent += piece.len();
            session.write_response_body(Some(piece), false).await?;
        }
        if !ended {
            session.write_response_body(None, true).await?;
        }
        ctx.sent_directly = Some((status, sent));
        Ok(true)
    }

    /// `304`: the client's `If-None-Match` names the object's `ETag`.
    async fn not_modified(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        fetched: Fetched,
    ) -> Result<bool> {
        let mut header = fetched.header.clone();
        header.set_status(StatusCode::NOT_MODIFIED)?;
        for name in [
            header::CONTENT_RANGE,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
        ] {
            header.remove_header(&name);
        }
        ctx.outcome = Some(outcome_of(&fetched.header));
        session.write_response_header(header, true).await?;
        ctx.sent_directly = Some((304, 0));
        Ok(true)
    }

    /// `416` for a range past the object's end.
    async fn unsatisfiable(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        fetched: Fetched,
        total: Option<u64>,
    ) -> Result<bool> {
        let mut header = fetched.header.clone();
        header.set_status(StatusCode::RANGE_NOT_SATISFIABLE)?;
        header.remove_header(&header::TRANSFER_ENCODING);
        header.insert_header(header::CONTENT_LENGTH, 0)?;
        match total {
            Some(total) => {
                header.insert_header(header::CONTENT_RANGE, format!("bytes */{total}"))?
            }
            None => {
                header.remove_header(&header::CONTENT_RANGE);
            }
        }
        ctx.outcome = Some(outcome_of(&fetched.header));
        session.write_response_header(header, true).await?;
        ctx.sent_directly = Some((416, 0));
        Ok(true)
    }
}

/// Whether a condition field (`If-None-Match`, a list or `*`; or `If-Range`, one tag)
/// names `etag`. `strong`: weak tags never match (RFC 9110 13.1.5, If-Range); else the
/// weak comparison (13.1.2, If-None-Match).
fn condition_matches(
    field: Option<&http::HeaderValue>,
    etag: &http::HeaderValue,
    strong: bool,
) -> bool {
    let Some(field) = field.and_then(|f| f.to_str().ok()) else {
        return false;
    };
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    let opaque = |tag: &str| -> Option<(bool, String)> {
        let tag = tag.trim();
        let (weak, rest) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        rest.starts_with('"').then(|| (weak, rest.to_string()))
    };
    let Some((etag_weak, etag_tag)) = opaque(etag) else {
        return false;
    };
    if !strong && field.trim() == "*" {
        return true;
    }
    field
        .split(',')
        .filter_map(opaque)
        .any(|(weak, tag)| tag == etag_tag && (!strong || (!weak && !etag_weak)))
}

fn content_range_total(header: &ResponseHeader) -> Option<u64> {
    let value = header.headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    value.rsplit_once('/')?.1.trim().parse().ok()
}

/// What the access log says of a sliced answer: what its first slice was.
fn outcome_of(first: &ResponseHeader) -> Outcome {
    let status = first
        .headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status.contains("; hit") {
        Outcome::Hit {
            ttl: None,
            stale: None,
        }
    } else {
        Outcome::Forwarded {
            fwd: Fwd::Miss,
            fwd_status: None,
            stored: status.contains("stored"),
            ttl: None,
            detail: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(range: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("Range", range).unwrap();
        r
    }

    #[test]
    fn ranges_slices_answer() {
        assert_eq!(want(&req("bytes=0-99")), Want::From(0, Some(99)));
        assert_eq!(want(&req("bytes=100-")), Want::From(100, None));
        assert_eq!(want(&req("bytes=-500")), Want::Suffix(500));
        assert_eq!(want(&req("bytes=5-1")), Want::Whole);
        assert_eq!(want(&req("bytes=0-1,5-9")), Want::Whole);
        assert_eq!(want(&req("pages=1-2")), Want::Whole);
        assert_eq!(want(&req("bytes=abc")), Want::Whole);
        assert_eq!(want(&req("bytes=-0")), Want::Whole);
    }

    #[test]
    fn conditions_compare_tags_as_rfc_9110_says() {
        let etag = http::HeaderValue::from_static("\"v1\"");
        let weak = http::HeaderValue::from_static("W/\"v1\"");
        let field = |v: &'static str| http::HeaderValue::from_static(v);
        assert!(condition_matches(Some(&field("\"v1\"")), &etag, false));
        assert!(condition_matches(
            Some(&field("\"x\", W/\"v1\"")),
            &etag,
            false
        ));
        assert!(condition_matches(Some(&field("*")), &etag, false));
        assert!(!condition_matches(Some(&field("\"v2\"")), &etag, false));
        assert!(condition_matches(Some(&field("\"v1\"")), &etag, true));
        assert!(!condition_matches(Some(&field("W/\"v1\"")), &etag, true));
        assert!(!condition_matches(Some(&field("\"v1\"")), &weak, true));
        assert!(!condition_matches(None, &etag, false));
    }

    #[test]
    fn slices_are_keyed_and_asked_apart() {
        let a = Slice {
            index: 0,
            size: 1 << 20,
        };
        let b = Slice {
            index: 1,
            size: 1 << 20,
        };
        assert_ne!(a.variance(), b.variance());
        assert_eq!(a.range(), "bytes=0-1048575");
        assert_eq!(b.range(), "bytes=1048576-2097151");
    }
}
