//! What happened to one request, as one value.
//!
//! Each phase records what it learns as a typed fact in the request's context: the
//! judgement of a stored copy ([`Judgement`]), what the origin did ([`OriginRecord`]),
//! the bypass and the stale copy served. The outcome is decided from them once (when the
//! answer's header is made, or by the edge when it answers itself), kept in the
//! context, and everything that reports on the request is a `match` on it: the
//! `Cache-Status` field ([`Outcome::cache_status`]), the access log, and the
//! per-customer metrics ([`Outcome::served`], [`Outcome::origin_failed`]). Every RFC 9211
//! `detail` token is a [`Detail`], rendered in [`Detail::as_str`] alone.

use std::time::SystemTime;

use pingora_cache::{CachePhase, NoCacheReason};
use pingora_proxy::Session;

use super::status::CacheStatus;
use super::stored::Judgement;
use super::{unix_secs_diff, Ctx};
use crate::metrics::Served;
use crate::policy::{BypassReason, NoStore};

/// Why a request went forward to the origin (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// No stored copy.
    Miss,
    /// A stored copy that could not be used as it was (expired, or revalidated).
    Stale,
    /// The request is not cached (a rule, a request body).
    Bypass,
    /// The method is not one the cache answers.
    Method,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Miss => "miss",
            Fwd::Stale => "stale",
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
        }
    }
}

/// Why a stale copy was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The origin failed (`stale-if-error`).
    IfError,
    /// Within `stale-while-revalidate`, a refresh running behind it.
    WhileRevalidate,
}

/// Why nothing could be served when the origin was needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The origin did not answer in time.
    OriginTimeout,
    /// The origin could not be reached (refused, reset, no address).
    OriginUnreachable,
    /// A stored copy exists, but its rule's `expires_at` forbids serving it stale.
    ExpiresAt,
    /// The edge itself failed.
    Edge,
}

/// Why a request went as it did: the RFC 9211 `detail` of its `Cache-Status`, and the
/// access log's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Passed around the cache, as the policy said.
    Bypass(BypassReason),
    /// A GET or HEAD with a body, which no cache key holds.
    RequestBody,
    /// The origin's answer was not stored, as the policy said.
    NotStored(NoStore),
    /// The stored copy's rule `expires_at` has passed.
    ExpiresAt,
    /// The rule that applies changed since the copy was stored (an `active` window).
    Schedule,
    /// pingora-cache did not store the answer: larger than `max_object`.
    TooLarge,
    /// ... it waited for another request's fill longer than `lock_timeout`.
    LockTimeout,
    /// ... the origin failed while the answer came.
    OriginError,
    /// ... for a reason of its own, which it names (`304 on miss`).
    NotCached(&'static str),
    /// ... for a reason it does not name.
    Uncacheable,
    /// A stale copy was served, and why.
    Stale(Stale),
    /// Nothing could be served, and why.
    Failed(Failure),
    /// Answered by the edge: no customer serves the Host (or there is none).
    UnknownHost,
    /// ... a TLS connection opened for another customer's name.
    Misdirected,
    /// ... the request has passed this node, or too many Holdfast nodes.
    Loop,
    /// ... a `PURGE` that was applied.
    Purged,
    /// ... a `PURGE` without a valid token.
    PurgeRefused,
    /// ... a method the customer does not allow.
    MethodNotAllowed,
    /// ... a method HTTP does not define.
    MethodNotImplemented,
    /// ... an `OPTIONS` with `Max-Forwards: 0`.
    MaxForwards,
    /// ... `Content-Length` values that disagree.
    BadFraming,
}

impl Detail {
    /// The RFC 9211 `detail` token: the one place these are spelt.
    pub fn as_str(self) -> &'static str {
        match self {
            Detail::Bypass(reason) => reason.as_str(),
            Detail::RequestBody => "request-body",
            Detail::NotStored(reason) => reason.as_str(),
            Detail::ExpiresAt | Detail::Failed(Failure::ExpiresAt) => "expires-at",
            Detail::Schedule => "schedule",
            Detail::TooLarge => "too-large",
            Detail::LockTimeout => "lock-timeout",
            Detail::OriginError => "origin-error",
            Detail::NotCached(reason) => reason,
            Detail::Uncacheable => "uncacheable",
            Detail::Stale(Stale::IfError) => "stale-if-error",
            Detail::Stale(Stale::WhileRevalidate) => "stale-while-revalidate",
            Detail::Failed(Failure::OriginTimeout) => "origin-timeout",
            Detail::Failed(Failure::OriginUnreachable) => "origin-unreachable",
            Detail::Failed(Failure::Edge) => "edge-error",
            Detail::UnknownHost => "unknown-host",
            Detail::Misdirected => "misdirected",
            Detail::Loop => "loop",
            Detail::Purged => "purged",
            Detail::PurgeRefused => "purge-refused",
            Detail::MethodNotAllowed => "method-not-allowed",
            Detail::MethodNotImplemented => "method-not-implemented",
            Detail::MaxForwards => "max-forwards",
            Detail::BadFraming => "bad-framing",
        }
    }
}

/// What the origin did for this request, as the phases learn it.
#[derive(Debug, Default)]
pub(super) struct OriginRecord {
    /// The status it answered with (the last try's).
    pub status: Option<u16>,
    /// The fields of its `304` to a revalidation, which update the stored ones.
    pub revalidated: Option<http::HeaderMap>,
    /// What the policy made of its answer.
    pub decision: Option<StoreDecision>,
    /// It failed, and a stale copy stood in: the status the edge reports for it.
    pub failed: Option<u16>,
}

/// The policy's decision on the origin's answer.
#[derive(Debug, Clone, Copy)]
pub(super) enum StoreDecision {
    /// Stored (whether it is kept is known once its body has come whole).
    Store(Fill),
    /// Not stored, and why.
    DontStore(NoStore),
}

/// A fill the policy decided to store. Whether it is kept is known only once its body
/// has come whole: `Cache-Status` says `stored` up front only for an answer framed by a
/// length (one without may still grow past `max_object`), and the access log says it
/// only when the store holds this very fill at the end.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fill {
    /// The `created` of the meta it is stored with, which tells it from an older copy.
    pub created: SystemTime,
    pub length_known: bool,
}

impl OriginRecord {
    /// The fill being stored, if the policy stores the answer.
    pub fn fill(&self) -> Option<Fill> {
        match self.decision {
            Some(StoreDecision::Store(fill)) => Some(fill),
            _ => None,
        }
    }

    /// Why the answer is not stored, if the policy said so.
    fn not_stored(&self) -> Option<Detail> {
        match self.decision {
            Some(StoreDecision::DontStore(reason)) => Some(Detail::NotStored(reason)),
            _ => None,
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the store without asking the origin; `stale` when the copy was stale
    /// and why it could still be served.
    Hit {
        ttl: Option<i64>,
        stale: Option<Stale>,
    },
    /// The origin answered: `fwd` says why it was asked, `fwd_status` is its 304 when it
    /// revalidated a copy, `stored` whether its answer was kept, `detail` why not (or
    /// why a copy was refetched).
    Forwarded {
        fwd: Fwd,
        fwd_status: Option<u16>,
        stored: bool,
        ttl: Option<i64>,
        detail: Option<Detail>,
    },
    /// The origin was asked and failed (`fwd_status`, or no answer at all); a stale copy
    /// was served in its place.
    StaleIfError {
        fwd_status: Option<u16>,
        ttl: Option<i64>,
    },
    /// Passed to the origin around the cache, for `reason`.
    Bypass { fwd: Fwd, reason: Detail },
    /// Answered by the edge itself, the origin never asked: an unknown host, a
    /// misdirected request, a refused method or framing, a PURGE.
    Edge { reason: Detail },
    /// The origin was needed and nothing could be served.
    Failed { fwd: Fwd, failure: Failure },
}

impl Outcome {
    /// The RFC 9211 `Cache-Status` value.
    pub fn cache_status(&self) -> CacheStatus {
        match *self {
            Outcome::Hit { ttl, stale } => CacheStatus {
                hit: true,
                ttl,
                detail: stale.map(|s| Detail::Stale(s).as_str()),
                ..Default::default()
            },
            Outcome::Forwarded {
                fwd,
                fwd_status,
                stored,
                ttl,
                detail,
            } => CacheStatus {
                fwd: Some(fwd.as_str()),
                fwd_status,
                stored,
                ttl,
                detail: detail.map(Detail::as_str),
                ..Default::default()
            },
            Outcome::StaleIfError { fwd_status, ttl } => CacheStatus {
                fwd: Some(Fwd::Stale.as_str()),
                fwd_status,
                ttl,
                detail: Some(Detail::Stale(Stale::IfError).as_str()),
                ..Default::default()
            },
            Outcome::Bypass { fwd, reason } => CacheStatus {
                fwd: Some(fwd.as_str()),
                detail: Some(reason.as_str()),
                ..Default::default()
            },
            Outcome::Edge { reason } => CacheStatus {
                fwd: Some(Fwd::Bypass.as_str()),
                detail: Some(reason.as_str()),
                ..Default::default()
            },
            Outcome::Failed { fwd, failure } => CacheStatus {
                fwd: Some(fwd.as_str()),
                detail: Some(Detail::Failed(failure).as_str()),
                ..Default::default()
            },
        }
    }

    /// How the per-customer metrics count it.
    pub fn served(&self) -> Served {
        match self {
            Outcome::Hit { stale: None, .. } => Served::Hit,
            Outcome::Hit { stale: Some(_), .. } | Outcome::StaleIfError { .. } => Served::Stale,
            Outcome::Bypass { .. }
            | Outcome::Edge { .. }
            | Outcome::Failed {
                fwd: Fwd::Bypass | Fwd::Method,
                ..
            } => Served::Bypass,
            Outcome::Forwarded { .. } | Outcome::Failed { .. } => Served::Miss,
        }
    }

    /// Whether the origin failed this request (beyond an error status it answered with).
    pub fn origin_failed(&self) -> bool {
        matches!(
            self,
            Outcome::StaleIfError { .. }
                | Outcome::Failed {
                    failure: Failure::OriginTimeout | Failure::OriginUnreachable,
                    ..
                }
        )
    }
}

/// What happened to this request, from the cache phase and the facts the phases
/// recorded; used when no phase has decided it already. `now` counts the `ttl`.
pub(super) fn decide(session: &Session, ctx: &Ctx, now: SystemTime) -> Outcome {
    if let Some(outcome) = &ctx.outcome {
        return outcome.clone();
    }
    let ttl = || {
        session
            .cache
            .maybe_cache_meta()
            .map(|m| unix_secs_diff(m.fresh_until(), now))
    };
    if let Some((fwd, reason)) = ctx.bypass {
        return Outcome::Bypass { fwd, reason };
    }
    if ctx.judged == Some(Judgement::StaleShortcut) {
        return Outcome::Hit {
            ttl: ttl(),
            stale: Some(Stale::IfError),
        };
    }
    if ctx.stale == Some(Stale::IfError) {
        return Outcome::StaleIfError {
            fwd_status: ctx.origin.failed,
            ttl: ttl(),
        };
    }
    let fill = ctx.origin.fill();
    let forwarded = |fwd, detail| Outcome::Forwarded {
        fwd,
        fwd_status: None,
        stored: fill.is_some_and(|f| f.length_known),
        ttl: if fill.is_some() { ttl() } else { None },
        detail,
    };
    // Why a stored copy was not used as stored, when the edge's judgement says.
    let expired = match ctx.judged {
        Some(Judgement::ExpiredByRule { .. }) => Some(Detail::ExpiresAt),
        Some(Judgement::ScheduleMoved { .. }) => Some(Detail::Schedule),
        _ => None,
    };
    match session.cache.phase() {
        CachePhase::Hit => Outcome::Hit {
            ttl: ttl(),
            stale: None,
        },
        CachePhase::StaleUpdating | CachePhase::Stale => Outcome::Hit {
            ttl: ttl(),
            stale: ctx.stale,
        },
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Outcome::Forwarded {
            fwd: Fwd::Stale,
            fwd_status: Some(304),
            stored: false,
            ttl: ttl(),
            detail: None,
        },
        CachePhase::Expired => forwarded(Fwd::Stale, expired.or(ctx.origin.not_stored())),
        CachePhase::Miss => forwarded(Fwd::Miss, ctx.origin.not_stored()),
        CachePhase::Disabled(reason) => {
            let by_rule = matches!(ctx.judged, Some(Judgement::ExpiredByRule { .. }));
            Outcome::Forwarded {
                fwd: if by_rule { Fwd::Stale } else { Fwd::Miss },
                fwd_status: None,
                stored: false,
                ttl: None,
                detail: Some(if by_rule {
                    Detail::ExpiresAt
                } else {
                    ctx.origin
                        .not_stored()
                        .unwrap_or_else(|| not_cached(reason))
                }),
            }
        }
        _ => Outcome::Forwarded {
            fwd: Fwd::Miss,
            fwd_status: None,
            stored: false,
            ttl: None,
            detail: ctx.origin.not_stored(),
        },
    }
}

/// Why pingora-cache did not cache, as a [`Detail`].
fn not_cached(reason: NoCacheReason) -> Detail {
    match reason {
        NoCacheReason::ResponseTooLarge | NoCacheReason::PredictedResponseTooLarge => {
            Detail::TooLarge
        }
        NoCacheReason::CacheLockTimeout => Detail::LockTimeout,
        NoCacheReason::UpstreamError => Detail::OriginError,
        NoCacheReason::Custom(reason) => Detail::NotCached(reason),
        _ => Detail::Uncacheable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_outcome() {
        let cases = [
            (
                Outcome::Hit {
                    ttl: Some(42),
                    stale: None,
                },
                "holdfast; hit; ttl=42",
                Served::Hit,
            ),
            (
                Outcome::Hit {
                    ttl: Some(-3),
                    stale: Some(Stale::IfError),
                },
                "holdfast; hit; ttl=-3; detail=stale-if-error",
                Served::Stale,
            ),
            (
                Outcome::Forwarded {
                    fwd: Fwd::Miss,
                    fwd_status: None,
                    stored: true,
                    ttl: Some(60),
                    detail: None,
                },
                "holdfast; fwd=miss; ttl=60; stored",
                Served::Miss,
            ),
            (
                Outcome::Forwarded {
                    fwd: Fwd::Stale,
                    fwd_status: Some(304),
                    stored: false,
                    ttl: Some(60),
                    detail: None,
                },
                "holdfast; fwd=stale; fwd-status=304; ttl=60",
                Served::Miss,
            ),
            (
                Outcome::StaleIfError {
                    fwd_status: Some(503),
                    ttl: Some(-12),
                },
                "holdfast; fwd=stale; fwd-status=503; ttl=-12; detail=stale-if-error",
                Served::Stale,
            ),
            (
                Outcome::Bypass {
                    fwd: Fwd::Method,
                    reason: Detail::Bypass(BypassReason::Method),
                },
                "holdfast; fwd=method; detail=method",
                Served::Bypass,
            ),
            (
                Outcome::Edge {
                    reason: Detail::Misdirected,
                },
                "holdfast; fwd=bypass; detail=misdirected",
                Served::Bypass,
            ),
            (
                Outcome::Failed {
                    fwd: Fwd::Miss,
                    failure: Failure::OriginTimeout,
                },
                "holdfast; fwd=miss; detail=origin-timeout",
                Served::Miss,
            ),
        ];
        for (outcome, text, served) in cases {
            assert_eq!(outcome.cache_status().render(None), text);
            assert_eq!(outcome.served(), served, "{text}");
        }
        assert!(Outcome::StaleIfError {
            fwd_status: None,
            ttl: None
        }
        .origin_failed());
        assert!(!Outcome::Failed {
            fwd: Fwd::Stale,
            failure: Failure::ExpiresAt
        }
        .origin_failed());
    }
}
