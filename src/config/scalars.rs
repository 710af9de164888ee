//! Scalars checked on their own, inside `Deserialize`, so each error carries the
//! scalar's line and column: addresses, host names, customer names, URLs, paths,
//! status codes. Each check returns the normalized value or a message saying how to
//! fix it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::units::Dur;

/// Deserialize a string and check it with `check`, which returns the normalized
/// value or a message saying how to fix it.
struct Checked<F> {
    what: &'static str,
    check: F,
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for Checked<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} (a string)", self.what)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }
}

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(super) struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(Checked {
                    what: $what,
                    check: |s: &str| $check(s).map($name),
                })
            }
        }
    };
}

checked_string!(
    /// A socket address to listen on: `0.0.0.0:8080`, `[::]:8080`.
    ListenAddr,
    "a listen address",
    check_listen
);
checked_string!(
    /// An origin server: `host:port`.
    ServerAddr,
    "an origin server host:port",
    check_server
);
checked_string!(
    /// A lower-cased host name; `*.` allowed as the leading label.
    HostName,
    "a host name",
    check_host
);
checked_string!(
    /// A Host header value: a host name with an optional port.
    HostHeader,
    "a Host header value",
    check_host_header
);
checked_string!(
    /// A request method the edge passes on: `GET`, `PURGE`; never `TRACE` or `CONNECT`.
    MethodName,
    "a request method",
    check_method
);

checked_string!(
    /// `sha256:<64 hex digits>`: the SHA-256 digest of a purge token, lower-cased.
    TokenDigest,
    "a token digest",
    check_token_digest
);

checked_string!(
    /// A header field name, lower-cased: `x-forwarded-host`.
    FieldName,
    "a header field name",
    check_field_name
);

checked_string!(
    /// A customer name: `[a-z0-9_-]+`.
    CustomerName,
    "a customer name",
    check_name
);
checked_string!(
    /// A node name (`node.name`): letters, digits, `.`, `_` and `-`.
    NodeName,
    "a node name",
    check_node_name
);
checked_string!(
    /// An `http://` or `https://` URL.
    UrlText,
    "a URL",
    check_url
);
checked_string!(
    /// A URL path starting with `/`.
    UrlPath,
    "a path",
    check_path
);
checked_string!(
    /// The name of an environment variable.
    EnvName,
    "an environment variable name",
    check_env_name
);

fn check_listen(s: &str) -> Result<String, String> {
    s.parse::<SocketAddr>().map(|_| s.to_string()).map_err(|_| {
        format!(
            "invalid listen address {s:?}; write an IP address and port, \
             e.g. 0.0.0.0:8080, 127.0.0.1:9080 or [::]:8080"
        )
    })
}

fn check_port(s: &str, port: &str) -> Result<(), String> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "invalid port in {s:?}; the port must be a number from 1 to 65535"
        )),
    }
}

fn check_server(s: &str) -> Result<String, String> {
    let fix = "write host:port, e.g. 127.0.0.1:8000, origin.example.com:443 or [::1]:8000";
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("origin server {s:?} has no port; {fix}"));
    };
    check_port(s, port)?;
    if host.starts_with('[') || host.contains(':') {
        return Err(format!("invalid origin server {s:?}; {fix}"));
    }
    check_dns_name(host, false)
        .map(|_| s.to_string())
        .map_err(|why| format!("invalid origin server {s:?} ({why}); {fix}"))
}

fn check_host(s: &str) -> Result<String, String> {
    if let Some((name, port)) = s.rsplit_once(':') {
        if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "host {s:?} has a port; list the name without it ({name:?}): \
                 hosts match whatever port the client used"
            ));
        }
    }
    let lower = s.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower).to_string();
    check_dns_name(&lower, true).map(|_| lower).map_err(|why| {
        format!(
            "invalid host {s:?} ({why}); write a DNS name such as shop.example.com, \
             or *.shop.example.com for all its subdomains"
        )
    })
}

fn check_host_header(s: &str) -> Result<String, String> {
    let name = match s.rsplit_once(':') {
        Some((name, port)) => {
            check_port(s, port)?;
            name
        }
        None => s,
    };
    check_dns_name(name, false)
        .map(|_| s.to_string())
        .map_err(|why| format!("invalid host_header {s:?} ({why}); write a host name such as shop.example.com, optionally with :port"))
}

/// DNS-ish: dot-separated labels of `[a-z0-9-]` (any case), 1..=63 bytes, no leading
/// or trailing `-`, 253 bytes at most; `*.` only as the leading label when allowed.
fn check_dns_name(name: &str, wildcard: bool) -> Result<(), String> {
    let rest = match name.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        Some(_) => return Err("a wildcard is not allowed here".into()),
        None => name,
    };
    if rest.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    for label in rest.split('.') {
        if label.is_empty() {
            return Err("it has an empty label".into());
        }
        if label == "*" {
            return Err("`*` is only allowed as the whole first label, as in *.example.com".into());
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(if c.is_ascii() {
                format!("{c:?} is not allowed in a host name")
            } else {
                format!("{c:?} is not ASCII: write the name in its punycode (xn--) form")
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with '-'".into());
        }
    }
    Ok(())
}

fn check_name(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid customer name {s:?}; use lower-case letters, digits, '_' and '-' only"
        ))
    }
}

fn check_node_name(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid node name {s:?}; use up to 64 letters, digits, '.', '_' and '-', e.g. fra1"
        ))
    }
}

fn check_url(s: &str) -> Result<String, String> {
    let fix = "write a full http:// or https:// URL, \
               e.g. https://cp.example.net/pops/fra1/customers.yaml";
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("invalid URL {s:?} ({e}); {fix}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a)) if !a.host().is_empty() => Ok(s.to_string()),
        (Some(other), _) if other != "http" && other != "https" => {
            Err(format!("URL {s:?} uses the scheme {other:?}; {fix}"))
        }
        _ => Err(format!("invalid URL {s:?}; {fix}")),
    }
}

fn check_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "path {s:?} does not start with '/'; write it as the URL path, e.g. /static/"
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "path {s:?} contains whitespace; percent-encode it as it appears in URLs (%20)"
        ));
    }
    Ok(s.to_string())
}

fn check_method(s: &str) -> Result<String, String> {
    match s {
        "TRACE" | "CONNECT" => Err(format!(
            "{s} cannot be allowed: the edge answers it with 405 itself (TRACE would echo \
             the request, cookies included; CONNECT would make the edge a tunnel); remove it"
        )),
        _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') => {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "{s:?} is not a request method; write it in capitals, e.g. GET, POST or PURGE"
        )),
    }
}

fn check_token_digest(s: &str) -> Result<String, String> {
    let hex = s.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        // Never echo the value: it may be the token itself.
        Err(
            "a purge token is given as sha256:<64 hex digits>, the SHA-256 digest of the \
             token, never the token itself (e.g. printf %s \"$TOKEN\" | sha256sum)"
                .to_string(),
        )
    }
}

fn check_field_name(s: &str) -> Result<String, String> {
    match http::HeaderName::from_bytes(s.as_bytes()) {
        Ok(name) => Ok(name.as_str().to_string()),
        Err(_) => Err(format!(
            "{s:?} is not a header field name; write a token such as x-forwarded-host"
        )),
    }
}

fn check_env_name(s: &str) -> Result<String, String> {
    let mut bytes = s.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        // Do not echo the value: it may be the secret itself.
        Err(
            "token_env is not an environment variable name; it must hold the NAME of the \
             variable that contains the token (e.g. HOLDFAST_CP_TOKEN), never the token itself"
                .to_string(),
        )
    }
}

/// A status code in `low..=high`, written as an integer or a string.
fn status_in(v: &str, low: u16, high: u16, what: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(s) if (low..=high).contains(&s) => Ok(s),
        _ => Err(format!(
            "invalid {what} {v:?}; use an HTTP status code from {low} to {high}"
        )),
    }
}

struct StatusVisitor {
    low: u16,
    high: u16,
    what: &'static str,
}

impl<'de> Visitor<'de> for StatusVisitor {
    type Value = u16;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an HTTP status code from {} to {}", self.low, self.high)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u16, E> {
        status_in(v, self.low, self.high, self.what).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
        self.visit_str(&v.to_string())
    }
}

/// A status in `stale_if_error_statuses` (500..=599).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ErrorStatus(pub u16);

impl<'de> Deserialize<'de> for ErrorStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StatusVisitor {
            low: 500,
            high: 599,
            what: "stale_if_error status",
        })
        .map(ErrorStatus)
    }
}

/// `status_ttl: { "404": 30s }`; keys 200..=599, each at most once.
#[derive(Debug, Default)]
pub(super) struct StatusTtl(pub BTreeMap<u16, Duration>);

impl<'de> Deserialize<'de> for StatusTtl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = StatusTtl;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from status code to duration, e.g. { \"404\": 30s }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StatusTtl, A::Error> {
                let mut seen = HashSet::new();
                let mut out = BTreeMap::new();
                while let Some(status) = map.next_key_seed(StatusKey { seen: &mut seen })? {
                    let Dur(ttl) = map.next_value()?;
                    out.insert(status, ttl);
                }
                Ok(StatusTtl(out))
            }
        }
        d.deserialize_map(MapVisitor)
    }
}

/// A `status_ttl` key; raises the error at the key itself when it repeats.
struct StatusKey<'a> {
    seen: &'a mut HashSet<u16>,
}

impl<'de> DeserializeSeed<'de> for StatusKey<'_> {
    type Value = u16;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u16, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StatusKey<'_> {
    type Value = u16;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an HTTP status code from 200 to 599")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u16, E> {
        let status = status_in(v, 200, 599, "status_ttl status").map_err(E::custom)?;
        if self.seen.insert(status) {
            Ok(status)
        } else {
            Err(E::custom(format!(
                "status {status} appears twice in status_ttl; keep one entry"
            )))
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            check_host("Shop.Example.COM."),
            Ok("shop.example.com".into())
        );
        assert_eq!(
            check_host("*.shop.example.com"),
            Ok("*.shop.example.com".into())
        );
        assert!(check_host("shop.example.com:8080")
            .unwrap_err()
            .contains("port"));
        assert!(check_host("a.*.example.com").is_err());
        assert!(check_host("*").is_err());
        assert!(check_host("").is_err());
        assert!(check_host("shop..example.com").is_err());
        assert!(check_host("-shop.example.com").is_err());
        assert!(check_host("sh op.example.com").is_err());
        assert!(check_host("bücher.example")
            .unwrap_err()
            .contains("punycode"));
    }

    #[test]
    fn servers_and_listen() {
        assert!(check_server("127.0.0.1:8000").is_ok());
        assert!(check_server("[::1]:8000").is_ok());
        assert!(check_server("origin.example.com:443").is_ok());
        assert!(check_server("origin.example.com")
            .unwrap_err()
            .contains("no port"));
        assert!(check_server("origin.example.com:0").is_err());
        assert!(check_server("origin.example.com:99999").is_err());
        assert!(check_server("::1:80").is_err());
        assert!(check_listen("0.0.0.0:8080").is_ok());
        assert!(check_listen("[::]:8080").is_ok());
        assert!(check_listen("localhost:8080").is_err());
        assert!(check_listen("8080").is_err());
    }

    #[test]
    fn urls_names_paths() {
        assert!(check_url("https://cp.example.net/x.yaml").is_ok());
        assert!(check_url("http://10.0.0.1:8080/x").is_ok());
        assert!(check_url("ftp://cp.example.net/x")
            .unwrap_err()
            .contains("\"ftp\""));
        assert!(check_url("cp.example.net/x").is_err());
        assert!(check_name("shop_2-eu").is_ok());
        assert!(check_name("Shop").is_err());
        assert!(check_path("/static/").is_ok());
        assert!(check_path("static/").is_err());
        assert!(check_env_name("HOLDFAST_CP_TOKEN").is_ok());
        let e = check_env_name("eyJhbGciOi.xyz").unwrap_err();
        assert!(e.contains("NAME") && !e.contains("eyJ"), "{e}");
    }
}
