//! The fast path: a fresh (or, while the origin is failing, stale-if-error) hit
//! answered from `request_filter` straight from the store, without pingora-cache's
//! phase machine, with the header [`super::head::hit`] builds for every path.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;

use super::direct::{self, Payload};
use super::head::{self, HitBody};
use super::outcome::{Outcome, Stale};
use super::stored::{variance, Judgement, StoredCopy};
use super::{key_for, unix_secs_diff, Ctx, Edge};
use crate::storage::StoredResponse;

impl Edge {
    /// The fast path for the common cases: a fresh, complete, non-varying stored response
    /// to a GET or HEAD, or a stale one within its stale-if-error window while the
    /// origin is known to be failing (see [`health`]). It answers straight from the store,
    /// skipping pingora-cache's phase machine, and keeps every semantic of a hit:
    /// conditional requests (304), HEAD, a single `Range` (206, decided by Pingora's own
    /// range filter), `Age`, `Cache-Status`, `Via`. Anything else (several ranges or none
    /// satisfiable, Vary, stale with a healthy origin, expired by a rule) returns `false`
    /// and takes the full path.
    pub(super) async fn serve_fresh_hit(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        now: SystemTime,
    ) -> Result<bool> {
        let Some(customer) = ctx.customer.clone() else {
            return Ok(false);
        };
        let req = session.req_header();
        let mut key = key_for(&customer, req, ctx.transport.scheme());
        if let Some(slice) = ctx.slice {
            key = slice.key(key);
        }
        let stored = if self.fast_path {
            self.stored(&key).await
        } else {
            None
        };
        // The full path needs the same key; build and hash it once per request.
        ctx.key = Some(key);
        let Some(mut stored) = stored else {
            return Ok(false);
        };
        // A slice's key carries its variance already (see `super::slice`).
        if stored.has_variance() && ctx.slice.is_none() {
            // The primary slot holds one variant; another is stored under the key with
            // its variance, valid only when stored after the primary (pingora-cache's
            // rule: a purge of the primary slot is the tombstone of every variant).
            let want = variance(&stored.header().headers, req);
            if want != stored.variance() {
                let Some(mut variant_key) = ctx.key.clone() else {
                    return Ok(false);
                };
                let Some(want) = want else {
                    return Ok(false);
                };
                variant_key.set_variance_key(want);
                match self.stored(&variant_key).await {
                    Some(v) if v.created() >= stored.created() && v.variance() == Some(want) => {
                        stored = v
                    }
                    _ => return Ok(false),
                }
            }
        }
        let key_text = ctx.key.as_ref().and_then(|k| k.primary_key_str());
        let copy = StoredCopy::of_entry(&stored);
        let path = req.uri.path();
        let judged = self.judge(
            &customer,
            ctx.rule(),
            key_text.unwrap_or(""),
            path,
            &copy,
            now,
        );
        let stale = match judged {
            Judgement::Fresh => None,
            // Not forwarded: a hit on a stale copy while the origin is failing.
            Judgement::StaleShortcut => Some(Stale::IfError),
            Judgement::Purged => {
                // Applied to the store now: the full path then misses, and every `Vary`
                // variant stored before this fill is a miss too (pingora-cache counts
                // variants older than their primary entry as gone).
                if let Some(key) = &ctx.key {
                    crate::purge::remove_now(self.store, std::slice::from_ref(key)).await;
                }
                ctx.judged = Some(judged);
                return Ok(false);
            }
            Judgement::SoftPurged { .. } => {
                ctx.judged = Some(judged);
                return Ok(false);
            }
            // The full path judges these again, on what pingora-cache finds.
            Judgement::Stale
            | Judgement::ScheduleMoved { .. }
            | Judgement::ExpiredByRule { .. } => return Ok(false),
        };
        let outcome = Outcome::Hit {
            ttl: Some(unix_secs_diff(copy.fresh_until, now)),
            stale,
        };
        let body_len = stored.body_len();
        let age = stored.age(now).as_secs();
        let wire = stored.wire();
        let Some(hit) = head::hit(
            stored.header(),
            wire,
            req,
            age,
            body_len,
            &outcome,
            &self.sign,
        )?
        else {
            // Several ranges, or none satisfiable: the full path answers those.
            return Ok(false);
        };
        if let HitBody::Span(span) = &hit.body {
            // An object file's blocks are checked before any of them leaves: a corrupt
            // one drops the object, and the request goes on as a miss.
            if !stored.check(span.clone()).await {
                log::warn!(
                    "dropping the stored copy of {}: a block of its body does not match its checksum",
                    key_text.unwrap_or("")
                );
                self.store.count_corrupt();
                if let Some(key) = &ctx.key {
                    crate::purge::remove_now(self.store, std::slice::from_ref(key)).await;
                }
                return Ok(false);
            }
        }
        if matches!(outcome, Outcome::Hit { stale: Some(_), .. }) {
            self.metrics.stale_if_error.fetch_add(1, Ordering::Relaxed);
        }
        ctx.outcome = Some(outcome);
        self.metrics.fast_path_hits.fetch_add(1, Ordering::Relaxed);
        let code = hit.header.status().as_u16();
        let head::Hit { mut header, body } = hit;
        if let Some(direct) = direct::Direct::new(session) {
            // Plain HTTP/1: the header and the body in one send, or the body by
            // `sendfile` from its file. Set before sending: after a failed send nothing
            // else may be written.
            ctx.sent_directly = Some((code, 0));
            let payload = match &body {
                HitBody::Span(span) => Payload::stored(stored.body_ref(), span.clone()),
                HitBody::HeaderOnly => Payload::EMPTY,
            };
            let head = direct.head(&mut header)?;
            drop(header);
            let sent = direct.send(&head, payload).await?;
            ctx.sent_directly = Some((code, sent));
            return Ok(true);
        }
        session
            .write_response_header(
                if ctx.transport.h2 {
                    header.into_h2_header()?
                } else {
                    header.into_header()?
                },
                body == HitBody::HeaderOnly,
            )
            .await?;
        if let HitBody::Span(span) = body {
            // In pieces off the worker when it is in a file: a large object is never
            // read whole into memory.
            let mut at = span.start;
            while at < span.end {
                let chunk = stored.read_chunk(at..span.end).await.map_err(|e| {
                    Error::because(ErrorType::InternalError, "reading a cached body", e)
                })?;
                at += chunk.len();
                if chunk.is_empty() {
                    return Error::e_explain(ErrorType::InternalError, "a cached body ended early");
                }
                session
                    .write_response_body(Some(chunk), at >= span.end)
                    .await?;
            }
        }
        Ok(true)
    }
}

impl Edge {
    /// What the store holds for `key`: memory's copy, or else one read back from a tier
    /// behind it (off this worker; see [`crate::storage::CacheStore::read_through`]).
    async fn stored(&self, key: &pingora_cache::CacheKey) -> Option<StoredResponse> {
        match self.store.peek(key) {
            Some(stored) => Some(stored),
            None => self.store.read_through(key).await,
        }
    }
}
