//! The RFC 9211 `Cache-Status` value Holdfast puts on every response, and the
//! [`Signature`] it signs that and `Via` with.

use std::sync::Arc;

use super::outcome::Outcome;

/// What happened to one request, as far as the cache is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheStatus {
    /// Served from the cache without going to the origin.
    pub hit: bool,
    /// Why the request went forward (`bypass`, `method`, `miss`, `stale`, `uri-miss`...).
    pub fwd: Option<&'static str>,
    /// The status the origin answered with, when it answered with an error or a 304.
    pub fwd_status: Option<u16>,
    /// Remaining freshness in seconds (negative: stale by that much).
    pub ttl: Option<i64>,
    /// The response was stored.
    pub stored: bool,
    /// Free-form reason (`stale-if-error`, `stale-while-revalidate`, `rule`, ...).
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// The member for this cache; `node` is this node's name when it says it
    /// (`node.advertise`), as a `node` parameter after RFC 9211's own.
    pub fn render(&self, node: Option<&str>) -> String {
        // Long enough for every parameter at once: one allocation per response.
        let mut s = String::with_capacity(112);
        self.render_into(&mut s, node);
        s
    }

    /// [`CacheStatus::render`] at the end of `s` (a list that already holds the
    /// members of the caches before this one), without a string of its own.
    pub fn render_into(&self, s: &mut String, node: Option<&str>) {
        s.push_str("holdfast");
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(fwd);
        }
        if let Some(code) = self.fwd_status {
            s.push_str("; fwd-status=");
            s.push_str(itoa::Buffer::new().format(code));
        }
        if let Some(ttl) = self.ttl {
            s.push_str("; ttl=");
            s.push_str(itoa::Buffer::new().format(ttl));
        }
        if self.stored {
            s.push_str("; stored");
        }
        if let Some(detail) = self.detail {
            s.push_str("; detail=");
            s.push_str(detail);
        }
        if let Some(node) = node {
            // Node names are letters, digits, `.`, `_` and `-` (config): a valid
            // sf-string as they stand.
            s.push_str("; node=\"");
            s.push_str(node);
            s.push('"');
        }
    }
}

/// How this node signs the fields it adds (`Cache-Status`, `Via`, to clients and to
/// origins): as `holdfast`, or, with `node.advertise`, with its name too, so that a
/// chain of shields reads `holdfast; hit; node="fra1"` and `Via: 1.1 fra1 (holdfast)`.
#[derive(Debug, Clone)]
pub struct Signature {
    /// A ready value: the default is static, an advertised one shared, so that adding
    /// it to a response neither copies nor checks it.
    via: http::HeaderValue,
    node: Option<Arc<str>>,
}

impl Signature {
    pub fn new(node: &crate::config::NodeIdentity) -> Signature {
        if node.advertise {
            let via = format!("1.1 {} (holdfast)", node.name);
            Signature {
                // Node names are letters, digits, '.', '_' and '-' (config): always valid.
                via: http::HeaderValue::from_str(&via)
                    .unwrap_or(http::HeaderValue::from_static("1.1 holdfast")),
                node: Some(node.name.as_str().into()),
            }
        } else {
            Signature {
                via: http::HeaderValue::from_static("1.1 holdfast"),
                node: None,
            }
        }
    }

    /// This node's `Via` member.
    pub fn via(&self) -> http::HeaderValue {
        self.via.clone()
    }

    /// This node's `Cache-Status` member for `outcome`.
    pub fn cache_status(&self, outcome: &Outcome) -> String {
        outcome.cache_status().render(self.node.as_deref())
    }

    /// [`Signature::cache_status`] at the end of the list `chain`.
    pub fn push_cache_status(&self, chain: &mut String, outcome: &Outcome) {
        outcome
            .cache_status()
            .render_into(chain, self.node.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9211_parameters_in_order() {
        let hit = CacheStatus {
            hit: true,
            ttl: Some(42),
            ..Default::default()
        };
        assert_eq!(hit.render(None), "holdfast; hit; ttl=42");
        let stale = CacheStatus {
            fwd: Some("stale"),
            fwd_status: Some(503),
            ttl: Some(-12),
            detail: Some("stale-if-error"),
            ..Default::default()
        };
        assert_eq!(
            stale.render(None),
            "holdfast; fwd=stale; fwd-status=503; ttl=-12; detail=stale-if-error"
        );
        let miss = CacheStatus {
            fwd: Some("miss"),
            stored: true,
            ..Default::default()
        };
        assert_eq!(miss.render(None), "holdfast; fwd=miss; stored");
        assert_eq!(
            miss.render(Some("fra1")),
            "holdfast; fwd=miss; stored; node=\"fra1\""
        );
    }
}
