//! What happened to one request, as one value.
//!
//! Each phase records the facts it learns in the request's context; the outcome is
//! decided from them once (when the answer's header is made, or by the edge when it
//! answers itself), kept in the context, and everything that reports on the request is
//! a `match` on it: the `Cache-Status` field ([`Outcome::cache_status`]), the access log,
//! and the per-customer metrics ([`Outcome::served`], [`Outcome::origin_failed`]).
//! The `&'static str` reasons are RFC 9211 `detail` tokens, only ever printed.

use std::time::SystemTime;

use pingora_cache::{CachePhase, NoCacheReason};
use pingora_proxy::Session;

use super::status::CacheStatus;
use super::{unix_secs_diff, Ctx};
use crate::metrics::Served;

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

impl Stale {
    fn as_str(self) -> &'static str {
        match self {
            Stale::IfError => "stale-if-error",
            Stale::WhileRevalidate => "stale-while-revalidate",
        }
    }
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

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::OriginTimeout => "origin-timeout",
            Failure::OriginUnreachable => "origin-unreachable",
            Failure::ExpiresAt => "expires-at",
            Failure::Edge => "edge-error",
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
        detail: Option<&'static str>,
    },
    /// The origin was asked and failed (`fwd_status`, or no answer at all); a stale copy
    /// was served in its place.
    StaleIfError {
        fwd_status: Option<u16>,
        ttl: Option<i64>,
    },
    /// Passed to the origin around the cache, for `reason`.
    Bypass { fwd: Fwd, reason: &'static str },
    /// Answered by the edge itself, the origin never asked: an unknown host, a
    /// misdirected request, a refused method or framing, a PURGE.
    Edge { reason: &'static str },
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
                detail: stale.map(Stale::as_str),
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
                detail,
                ..Default::default()
            },
            Outcome::StaleIfError { fwd_status, ttl } => CacheStatus {
                fwd: Some(Fwd::Stale.as_str()),
                fwd_status,
                ttl,
                detail: Some(Stale::IfError.as_str()),
                ..Default::default()
            },
            Outcome::Bypass { fwd, reason } => CacheStatus {
                fwd: Some(fwd.as_str()),
                detail: Some(reason),
                ..Default::default()
            },
            Outcome::Edge { reason } => CacheStatus {
                fwd: Some(Fwd::Bypass.as_str()),
                detail: Some(reason),
                ..Default::default()
            },
            Outcome::Failed { fwd, failure } => CacheStatus {
                fwd: Some(fwd.as_str()),
                detail: Some(failure.as_str()),
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
/// recorded; used when no phase has decided it already (see [`outcome`]).
pub(super) fn decide(session: &Session, ctx: &Ctx) -> Outcome {
    if let Some(outcome) = &ctx.outcome {
        return outcome.clone();
    }
    let now = SystemTime::now();
    let ttl = || {
        session
            .cache
            .maybe_cache_meta()
            .map(|m| unix_secs_diff(m.fresh_until(), now))
    };
    if let Some((fwd, reason)) = ctx.bypass {
        return Outcome::Bypass { fwd, reason };
    }
    if ctx.stale_shortcut {
        return Outcome::Hit {
            ttl: ttl(),
            stale: Some(Stale::IfError),
        };
    }
    if ctx.stale == Some(Stale::IfError) {
        return Outcome::StaleIfError {
            fwd_status: ctx.stale_fwd_status,
            ttl: ttl(),
        };
    }
    let forwarded = |fwd, detail| Outcome::Forwarded {
        fwd,
        fwd_status: None,
        stored: ctx.fill.is_some_and(|f| f.length_known),
        ttl: if ctx.fill.is_some() { ttl() } else { None },
        detail,
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
        CachePhase::Expired => forwarded(
            Fwd::Stale,
            if ctx.expired_by_rule {
                Some("expires-at")
            } else if ctx.schedule_moved {
                Some("schedule")
            } else {
                ctx.no_store
            },
        ),
        CachePhase::Miss => forwarded(Fwd::Miss, ctx.no_store),
        CachePhase::Disabled(reason) => Outcome::Forwarded {
            fwd: if ctx.expired_by_rule {
                Fwd::Stale
            } else {
                Fwd::Miss
            },
            fwd_status: None,
            stored: false,
            ttl: None,
            detail: Some(no_store_detail(ctx, reason)),
        },
        _ => Outcome::Forwarded {
            fwd: Fwd::Miss,
            fwd_status: None,
            stored: false,
            ttl: None,
            detail: ctx.no_store,
        },
    }
}

fn no_store_detail(ctx: &Ctx, reason: NoCacheReason) -> &'static str {
    if ctx.expired_by_rule {
        return "expires-at";
    }
    if let Some(r) = ctx.no_store {
        return r;
    }
    match reason {
        NoCacheReason::ResponseTooLarge | NoCacheReason::PredictedResponseTooLarge => "too-large",
        NoCacheReason::CacheLockTimeout => "lock-timeout",
        NoCacheReason::UpstreamError => "origin-error",
        NoCacheReason::Custom(s) => s,
        _ => "uncacheable",
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
                    reason: "method",
                },
                "holdfast; fwd=method; detail=method",
                Served::Bypass,
            ),
            (
                Outcome::Edge {
                    reason: "misdirected",
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
