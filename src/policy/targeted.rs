//! `CDN-Cache-Control` (RFC 9213): the origin's directions for CDN caches. When a
//! response carries a valid one, this cache follows it in place of `Cache-Control` and
//! `Expires`; the rest of the way (browsers) still follows those.
//!
//! The field is a Structured Field Dictionary (RFC 8941). A field that does not parse
//! as one, or whose freshness directives are not integers, is ignored whole (RFC 9213
//! §2.1), and `Cache-Control` applies as if it were not there. The check is written
//! here: it is a few lines of grammar, and pingora-cache's `Cache-Control` parser, which
//! reads the directives once the field is known to be valid, is lenient by design.

use pingora_cache::cache_control::CacheControl;
use pingora_http::ResponseHeader;

/// The field this cache takes its directions from before `Cache-Control`.
pub const FIELD: &str = "cdn-cache-control";

/// The `CDN-Cache-Control` of `resp`, when it is present and valid.
pub fn cache_control(resp: &ResponseHeader) -> Option<CacheControl> {
    let mut values = resp.headers.get_all(FIELD).iter().peekable();
    values.peek()?;
    let mut joined = String::new();
    for v in values {
        let v = v.to_str().ok()?;
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(v);
    }
    if !valid(&joined) {
        log::debug!("ignoring an invalid CDN-Cache-Control: {joined:?}");
        return None;
    }
    CacheControl::from_resp_headers_named(FIELD, resp)
}

/// Directives whose value must be an integer (seconds).
const SECONDS: [&str; 4] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
];

/// Whether `text` is a Structured Field Dictionary whose freshness directives are
/// integers.
pub fn valid(text: &str) -> bool {
    let mut rest = text.trim_matches(|c| c == ' ' || c == '\t');
    if rest.is_empty() {
        return false;
    }
    loop {
        let Some((name, after)) = key(rest) else {
            return false;
        };
        rest = after;
        if let Some(after) = rest.strip_prefix('=') {
            let Some((kind, after)) = item(after) else {
                return false;
            };
            if SECONDS.contains(&name) && kind != Kind::Integer {
                return false;
            }
            rest = after;
        } else if SECONDS.contains(&name) {
            // A bare key is the boolean true, not a number of seconds.
            return false;
        }
        // Parameters: `;key[=item]`.
        while let Some(after) = rest.strip_prefix(';') {
            let Some((_, after)) = key(after.trim_start_matches(' ')) else {
                return false;
            };
            rest = after;
            if let Some(after) = rest.strip_prefix('=') {
                let Some((_, after)) = item(after) else {
                    return false;
                };
                rest = after;
            }
        }
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            return true;
        }
        let Some(after) = rest.strip_prefix(',') else {
            return false;
        };
        rest = after.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            return false; // a trailing comma
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Integer,
    Other,
}

/// A key: `[a-z*][a-z0-9_\-.*]*`.
fn key(s: &str) -> Option<(&str, &str)> {
    let first = s.bytes().next()?;
    if !(first.is_ascii_lowercase() || first == b'*') {
        return None;
    }
    let end = s
        .bytes()
        .position(|b| {
            !(b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'_' | b'-' | b'.' | b'*'))
        })
        .unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

/// A bare item: integer or decimal, string, token, byte sequence or boolean.
fn item(s: &str) -> Option<(Kind, &str)> {
    let bytes = s.as_bytes();
    match *bytes.first()? {
        b'-' | b'0'..=b'9' => {
            let digits = s[1..]
                .bytes()
                .position(|b| !(b.is_ascii_digit() || b == b'.'))
                .map_or(s.len(), |p| p + 1);
            let number = &s[..digits];
            let unsigned = number.trim_start_matches('-');
            if unsigned.is_empty() || unsigned.starts_with('.') || unsigned.ends_with('.') {
                return None;
            }
            match unsigned.split_once('.') {
                None if unsigned.len() <= 15 => Some((Kind::Integer, &s[digits..])),
                Some((int, frac)) if int.len() <= 12 && frac.len() <= 3 && !frac.contains('.') => {
                    Some((Kind::Other, &s[digits..]))
                }
                _ => None,
            }
        }
        b'"' => {
            let mut escaped = false;
            for (i, b) in s.bytes().enumerate().skip(1) {
                match (escaped, b) {
                    (true, b'"' | b'\\') => escaped = false,
                    (true, _) => return None,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => return Some((Kind::Other, &s[i + 1..])),
                    (false, 0x20..=0x7e) => {}
                    (false, _) => return None,
                }
            }
            None
        }
        b'?' => match bytes.get(1) {
            Some(b'0' | b'1') => Some((Kind::Other, &s[2..])),
            _ => None,
        },
        b':' => {
            let end = s[1..].find(':')? + 1;
            s[1..end]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                .then(|| (Kind::Other, &s[end + 1..]))
        }
        b'*' | b'a'..=b'z' | b'A'..=b'Z' => {
            let end = s
                .bytes()
                .position(|b| !(b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)))
                .unwrap_or(s.len());
            Some((Kind::Other, &s[end..]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_dictionaries_with_integer_freshness() {
        for ok in [
            "max-age=3600",
            "max-age=0",
            "foobar, max-age=3600",
            "max-age=3600, stale-if-error=600",
            "no-store",
            "private, no-cache",
            "max-age=60;a=1;b, x=\"y\\\"z\", t=tok/en, f=1.5, b=?0, s=:aGk=:",
        ] {
            assert!(valid(ok), "{ok}");
        }
        for bad in [
            "",
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age=1.5",
            "max-age",
            "MaX-aGe=3600",
            "max-age=3600,",
            "max-age=3600 no-store",
            "x=\"unterminated",
            "x=?2",
            "max-age=1234567890123456",
        ] {
            assert!(!valid(bad), "{bad}");
        }
    }
}
