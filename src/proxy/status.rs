//! The RFC 9211 `Cache-Status` value Holdfast puts on every response.

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
