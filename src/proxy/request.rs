//! The request as it arrives, before anything reads it: which host it is for, the
//! one form it is routed, keyed and forwarded in, and what the edge refuses or answers
//! itself (methods, framing), so that no client can make the origin answer, for
//! everyone, something other than what the cache key says.

use http::header;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use super::answer::EdgeAnswer;
use crate::config::Customer;

/// The request's host: the authority of its target (absolute-form, or HTTP/2's
/// `:authority`), which RFC 9112 §3.2.2 says wins over Host, else the Host header.
pub(super) fn request_host(req: &RequestHeader) -> Option<&str> {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// Make the request say what it is routed and keyed by, before anything else reads it:
/// `Host` the canonical host name (no port, no trailing dot, lower case), the target in
/// origin form (`/path?query`), and none of the fields the customer drops
/// (`origin.drop_request_headers`: `X-Forwarded-Host`, `X-Original-URL` and the like).
/// The cache key, `Vary` and the origin then all see the same request.
pub(super) fn normalize_request(
    req: &mut RequestHeader,
    customer: &Customer,
    host: &str,
) -> Result<()> {
    set_unless_so(req, header::HOST, host)?;
    // An absolute-form target (`GET http://shop.example.com/a`): Pingora has checked
    // that its authority is the Host's and exposes its path, but would forward the raw
    // target; send the origin form that the key is made of (RFC 9112 §3.2.1).
    // HTTP/2's `:authority` is dropped from the target the same way: the Host just set
    // is then the one place the host is read from.
    let raw = req.raw_path();
    if (!raw.starts_with(b"/") && raw != b"*") || req.uri.authority().is_some() {
        let target = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let uri = http::Uri::try_from(target).map_err(|e| {
            Error::because(ErrorType::InvalidHTTPHeader, "request target", e).into_down()
        })?;
        req.set_uri(uri);
    }
    // A look at the few fields a request has is cheaper than a removal per name.
    let drop = &customer.origin.drop_request_headers;
    if req.headers.keys().any(|name| drop.contains(name)) {
        for name in drop {
            req.remove_header(name);
        }
    }
    normalize_accept_encoding(req)
}

/// `Accept-Encoding` reduced to the codings an edge cache keeps apart: `br, gzip`,
/// `br`, `gzip`, or none (identity). Browsers send a dozen spellings of the same wish
/// (`gzip, deflate, br, zstd`, `br;q=1.0, gzip;q=0.8, *;q=0.1`), and `Vary:
/// Accept-Encoding` would store one copy per spelling; the origin is sent the reduced
/// value too, so what it answers is right for every client that shares the key.
fn normalize_accept_encoding(req: &mut RequestHeader) -> Result<()> {
    let Some(value) = req.headers.get(header::ACCEPT_ENCODING) else {
        return Ok(());
    };
    let (mut br, mut gzip, mut any) = (false, false, false);
    let (mut no_br, mut no_gzip) = (false, false);
    for item in value.as_bytes().split(|&b| b == b',') {
        let item = std::str::from_utf8(item).unwrap_or("").trim();
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.len() >= 2
                && p[..2].eq_ignore_ascii_case("q=")
                && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
        });
        match (coding.as_str(), refused) {
            ("br", false) => br = true,
            ("br", true) => no_br = true,
            ("gzip" | "x-gzip", false) => gzip = true,
            ("gzip" | "x-gzip", true) => no_gzip = true,
            ("*", false) => any = true,
            _ => {}
        }
    }
    // `*` stands for the codings not named otherwise (RFC 9110 §12.5.3).
    let br = br || (any && !no_br);
    let gzip = gzip || (any && !no_gzip);
    let reduced = match (br, gzip) {
        (true, true) => "br, gzip",
        (true, false) => "br",
        (false, true) => "gzip",
        (false, false) => {
            req.remove_header(&header::ACCEPT_ENCODING);
            return Ok(());
        }
    };
    set_unless_so(req, header::ACCEPT_ENCODING, reduced)
}

/// `name: value` as the request's one field of that name. Most requests already say it
/// so (one canonical `Host`, a reduced `Accept-Encoding`), and an insertion parses the
/// name back from bytes and updates two maps: it is made only when needed.
fn set_unless_so(req: &mut RequestHeader, name: http::HeaderName, value: &str) -> Result<()> {
    let mut values = req.headers.get_all(&name).iter();
    let so = values
        .next()
        .is_some_and(|v| v.as_bytes() == value.as_bytes());
    if !so || values.next().is_some() {
        req.insert_header(name, value)?;
    }
    Ok(())
}

/// `X-Forwarded-For` (the client's address appended), `X-Forwarded-Proto` and
/// `Forwarded` (RFC 7239) for the origin, set by the edge.
pub(super) fn set_forwarded(
    upstream: &mut RequestHeader,
    peer: Option<std::net::IpAddr>,
    scheme: &str,
) -> Result<()> {
    let host = upstream
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // Built by hand, the address formatted once for both fields: `format!` and an
    // address's `Display` were most of what setting them cost.
    let ip = peer.map(|ip| (ip.is_ipv6(), ip.to_string()));
    let mut forwarded = String::with_capacity(host.len() + scheme.len() + 64);
    match &ip {
        Some((true, ip)) => forwarded.extend(["for=\"[", ip, "]\";"]),
        Some((false, ip)) => forwarded.extend(["for=", ip, ";"]),
        None => {}
    }
    forwarded.extend(["host=", host, ";proto=", scheme]);
    let xff = ip.map(|(_, ip)| {
        match upstream
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(before) if !before.trim().is_empty() => [before, ", ", &ip].concat(),
            _ => ip,
        }
    });
    if let Some(xff) = xff {
        upstream.insert_header("X-Forwarded-For", xff)?;
    }
    upstream.insert_header("X-Forwarded-Proto", scheme)?;
    upstream.insert_header("Forwarded", forwarded)?;
    Ok(())
}

/// This running node's `CDN-Loop` entry (RFC 8586): `holdfast; node=<name>-<token>`,
/// the token random per process, so that two nodes with one name (on one host, or from
/// one image) are still told apart.
pub(super) fn loop_entry(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("holdfast; node={name}-{:08x}", h.finish() as u32)
}

const CDN_LOOP: http::HeaderName = http::HeaderName::from_static("cdn-loop");

/// Why a request must not go on, if it must not: it carries this node's own `CDN-Loop`
/// entry (it has been here before), or more than `max_hops` Holdfast entries.
pub(super) fn loop_detected(req: &RequestHeader, own: &str, max_hops: u32) -> Option<String> {
    let values = req.headers.get_all(CDN_LOOP);
    // Most requests carry none.
    values.iter().next()?;
    let own_node = own.split_once("node=").map(|(_, n)| n)?;
    let mut hops = 0u32;
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for entry in value.split(',') {
            let mut parts = entry.split(';').map(str::trim);
            if !parts
                .next()
                .is_some_and(|id| id.eq_ignore_ascii_case("holdfast"))
            {
                continue;
            }
            hops += 1;
            if parts.any(|p| {
                p.strip_prefix("node=")
                    .is_some_and(|n| n.trim_matches('"') == own_node)
            }) {
                return Some("it has passed this node before".into());
            }
        }
    }
    (hops > max_hops)
        .then(|| format!("it has passed {hops} Holdfast nodes (node.max_hops is {max_hops})"))
}

/// Methods HTTP defines (RFC 9110 §9): one of these that a customer does not allow is
/// refused with 405; any other with 501.
const KNOWN_METHODS: [http::Method; 9] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::CONNECT,
    http::Method::OPTIONS,
    http::Method::TRACE,
    http::Method::PATCH,
];

/// Answer at the edge what must not reach the origin, and make the framing of what may
/// unambiguous:
/// - `TRACE` and `CONNECT`: 405 (TRACE would reflect the request, cookies included);
///   a method not in the customer's `methods`: 405, or 501 for one HTTP does not define;
/// - `OPTIONS` with `Max-Forwards: 0`: answered here (RFC 9110 §7.6.2), with `Allow`;
/// - `Content-Length` given as a list or repeated: one value when they agree
///   (RFC 9110 §8.6), 400 when they do not; beside `Transfer-Encoding` it is dropped,
///   as RFC 9112 §6.3 has a proxy do, so the origin cannot frame the body otherwise.
pub(super) fn screen(req: &mut RequestHeader, customer: &Customer) -> Option<EdgeAnswer> {
    let allow = || {
        customer
            .methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let method = req.method.clone();
    if method == http::Method::TRACE
        || method == http::Method::CONNECT
        || !customer.methods.contains(&method)
    {
        let known = KNOWN_METHODS.contains(&method);
        return Some(EdgeAnswer::Method {
            allow: known.then(allow),
            method,
        });
    }
    if method == http::Method::OPTIONS
        && req
            .headers
            .get(header::MAX_FORWARDS)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"0")
    {
        return Some(EdgeAnswer::MaxForwards { allow: allow() });
    }
    let lengths: Vec<&[u8]> = req
        .headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    if lengths.is_empty() {
        return None;
    }
    let first = lengths[0];
    let valid = !first.is_empty() && first.iter().all(u8::is_ascii_digit);
    if !valid || lengths.iter().any(|l| *l != first) {
        return Some(EdgeAnswer::BadFraming);
    }
    if req.headers.contains_key(header::TRANSFER_ENCODING) {
        req.remove_header(&header::CONTENT_LENGTH);
    } else if lengths.len() > 1 {
        let one = String::from_utf8_lossy(first).into_owned();
        if req.insert_header(header::CONTENT_LENGTH, one).is_err() {
            req.remove_header(&header::CONTENT_LENGTH);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_this_node_again_or_too_many_hops() {
        let own = loop_entry("fra1");
        assert!(own.starts_with("holdfast; node=fra1-"), "{own}");
        assert_ne!(own, loop_entry("fra1"), "two processes are told apart");
        let with = |values: &[&str]| {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            for v in values {
                req.append_header("CDN-Loop", *v).unwrap();
            }
            loop_detected(&req, &own, 4)
        };
        assert_eq!(with(&[]), None);
        assert_eq!(with(&["holdfast; node=ams1-00000001", "other-cdn"]), None);
        assert!(with(&[&format!("foo, {own}")]).is_some());
        let four = "holdfast; node=a-1, holdfast; node=b-2, holdfast; node=c-3, holdfast; node=d-4";
        assert_eq!(with(&[four]), None);
        assert!(with(&[four, "HOLDFAST; node=e-5"])
            .unwrap()
            .contains("5 Holdfast nodes"));
    }

    fn normalized(value: &str) -> Option<String> {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(header::ACCEPT_ENCODING, value).unwrap();
        normalize_accept_encoding(&mut req).unwrap();
        req.headers
            .get(header::ACCEPT_ENCODING)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn forwarding_fields_name_the_client_once_each() {
        let forwarded = |peer: &str, before: Option<&str>| {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header("Host", "shop.test").unwrap();
            if let Some(before) = before {
                req.insert_header("X-Forwarded-For", before).unwrap();
            }
            set_forwarded(&mut req, Some(peer.parse().unwrap()), "https").unwrap();
            let get = |n: &str| req.headers.get(n).unwrap().to_str().unwrap().to_string();
            (
                get("x-forwarded-for"),
                get("forwarded"),
                get("x-forwarded-proto"),
            )
        };
        assert_eq!(
            forwarded("192.0.2.1", None),
            (
                "192.0.2.1".to_string(),
                "for=192.0.2.1;host=shop.test;proto=https".to_string(),
                "https".to_string()
            )
        );
        assert_eq!(
            forwarded("2001:db8::1", Some("203.0.113.7")),
            (
                "203.0.113.7, 2001:db8::1".to_string(),
                "for=\"[2001:db8::1]\";host=shop.test;proto=https".to_string(),
                "https".to_string()
            )
        );
    }

    #[test]
    fn a_field_is_set_to_one_value_unless_it_says_only_that() {
        let set = |values: &[&str]| {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            for v in values {
                req.append_header("host", *v).unwrap();
            }
            set_unless_so(&mut req, header::HOST, "shop.example.com").unwrap();
            let got: Vec<_> = req.headers.get_all(header::HOST).iter().cloned().collect();
            got
        };
        let one = vec![http::HeaderValue::from_static("shop.example.com")];
        assert_eq!(set(&[]), one);
        assert_eq!(set(&["shop.example.com"]), one);
        assert_eq!(set(&["Shop.Example.com:8080"]), one);
        assert_eq!(set(&["shop.example.com", "other.example"]), one);
        assert_eq!(set(&["shop.example.com", "shop.example.com"]), one);
    }

    #[test]
    fn accept_encoding_collapses_to_four_values() {
        assert_eq!(
            normalized("gzip, deflate, br, zstd").as_deref(),
            Some("br, gzip")
        );
        assert_eq!(
            normalized("br;q=1.0, gzip;q=0.8, *;q=0.1").as_deref(),
            Some("br, gzip")
        );
        assert_eq!(normalized("gzip, deflate").as_deref(), Some("gzip"));
        assert_eq!(normalized("GZIP").as_deref(), Some("gzip"));
        assert_eq!(normalized("x-gzip").as_deref(), Some("gzip"));
        assert_eq!(normalized("br").as_deref(), Some("br"));
        assert_eq!(normalized("gzip;q=0, br").as_deref(), Some("br"));
        assert_eq!(normalized("*").as_deref(), Some("br, gzip"));
        assert_eq!(normalized("br;q=0, *").as_deref(), Some("gzip"));
        assert_eq!(normalized("identity"), None);
        assert_eq!(normalized("deflate, zstd"), None);
        assert_eq!(normalized(""), None);
        assert_eq!(normalized("gzip;q=0.000").as_deref(), None);
    }
}
