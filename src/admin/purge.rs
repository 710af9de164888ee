//! `POST /purge`: who may purge what, the request body, and the markers it adds.
//!
//! The operator (`admin.token_env`, or loopback without one) may purge any customer; the
//! holder of one of a customer's `purge_tokens` that customer only. A purge adds
//! "stored before now" markers ([`crate::purge`]) for its URLs, path prefixes, tags or
//! the whole customer, written to disk before they apply, and a hard URL purge also
//! removes the URL's copy from the store at once.

use std::time::SystemTime;

use http::StatusCode;
use pingora_cache::CacheKey;
use serde::Deserialize;
use serde_json::json;

use super::access::{self, TokenHash};
use crate::config::Customers;
use crate::purge::{Entry, MAX_TAG_LEN};

/// Largest request body read.
const MAX_BODY: usize = 1 << 20;

/// The JSON body of `POST /purge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    customer: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    soft: bool,
}

/// A refusal: the status and the message of a JSON `{"error": ...}` answer.
pub struct Refused(pub StatusCode, pub String);

fn refused(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused(status, message.into())
}

/// Who is asking: the operator, or the holder of a bearer token (its digest).
pub enum Caller {
    Operator,
    Token(TokenHash),
}

/// The caller of a `POST /purge`, before its body is read: the operator when
/// [`access::authorize_post`] lets the request through; else whoever holds the bearer
/// token it carries. Without one: 401, or 403 with a hint when no operator token is
/// configured and the peer is not on loopback.
pub fn caller(
    post: access::Post,
    operator: &access::OperatorToken,
    authorization: Option<&[u8]>,
) -> Result<Caller, Refused> {
    if post == access::Post::Allowed {
        return Ok(Caller::Operator);
    }
    match access::bearer(authorization) {
        Some(token) => Ok(Caller::Token(access::hash_token(token))),
        None if post == access::Post::NotLoopback => Err(refused(
            StatusCode::FORBIDDEN,
            format!(
                "{}; or send one of the customer's purge tokens",
                operator.loopback_only()
            ),
        )),
        None => Err(refused(
            StatusCode::UNAUTHORIZED,
            "a purge needs Authorization: Bearer <the operator's token or one of the \
             customer's purge tokens>",
        )),
    }
}

use crate::purge::holds;

/// Parse and check a purge request from `caller` against `customers`: the entry to
/// apply (issued now) and the cache keys of its URLs (to remove at once).
pub fn parse(
    body: &[u8],
    caller: &Caller,
    customers: &Customers,
    now: SystemTime,
) -> Result<(Entry, Vec<CacheKey>), Refused> {
    if body.len() > MAX_BODY {
        return Err(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the purge request is over {MAX_BODY} bytes; send several"),
        ));
    }
    let req: PurgeBody = serde_json::from_slice(body).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            format!(
                "the body is not a purge request ({e}); send JSON like \
                 {{\"customer\": \"shop\", \"urls\": [\"https://shop.example.com/a\"], \"soft\": true}}"
            ),
        )
    })?;
    let Some(customer) = customers.by_name(&req.customer) else {
        return Err(match caller {
            // A token holder learns nothing about customers it may not purge.
            Caller::Token(_) => refused(
                StatusCode::UNAUTHORIZED,
                "the token may not purge that customer",
            ),
            Caller::Operator => refused(
                StatusCode::NOT_FOUND,
                format!("no customer is named {:?} on this node", req.customer),
            ),
        });
    };
    if let Caller::Token(token) = caller {
        if !holds(customer, token) {
            let other = customers.list.iter().any(|c| holds(c, token));
            return Err(if other {
                refused(
                    StatusCode::FORBIDDEN,
                    format!(
                        "this token purges another customer's content, not {:?}'s",
                        customer.name
                    ),
                )
            } else {
                refused(
                    StatusCode::UNAUTHORIZED,
                    "the token may not purge that customer",
                )
            });
        }
    }
    if req.urls.is_empty() && req.prefixes.is_empty() && req.tags.is_empty() && !req.all {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "nothing to purge: give urls, prefixes, tags, or all: true",
        ));
    }
    let mut keys = Vec::new();
    let mut texts = Vec::new();
    for url in &req.urls {
        let url_keys = crate::purge::keys_of_url(customers, customer, url)
            .map_err(|why| refused(StatusCode::BAD_REQUEST, why))?;
        for key in url_keys {
            texts.extend(key.primary_key_str().map(str::to_string));
            keys.push(key);
        }
    }
    for p in &req.prefixes {
        if !p.starts_with('/') {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                format!("prefix {p:?} is not a path; write it from the first /, e.g. /sale/"),
            ));
        }
    }
    for t in &req.tags {
        if !crate::purge::is_valid_tag(t) {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                format!(
                    "tag {t:?} is not one an origin can set: 1 to {MAX_TAG_LEN} bytes, \
                     without spaces or commas"
                ),
            ));
        }
    }
    Ok((
        Entry {
            customer: customer.name.clone(),
            at_unix_ns: crate::purge::unix_ns(now),
            keys: texts,
            prefixes: req.prefixes,
            tags: req.tags,
            all: req.all,
            soft: req.soft,
        },
        keys,
    ))
}

/// One purge in force, for `GET /config`: where it came from and what it names (URLs
/// counted: each is kept as its cache keys).
pub fn describe(entry: &Entry, source: &str) -> serde_json::Value {
    json!({
        "source": source,
        "customer": entry.customer,
        "at": rfc3339(entry.at_unix_ns),
        "soft": entry.soft,
        "urls": entry.keys.len() / 2,
        "prefixes": entry.prefixes,
        "tags": entry.tags,
        "all": entry.all,
    })
}

fn rfc3339(unix_ns: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(unix_ns))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The answer to an applied purge.
pub fn applied(entry: &Entry, urls: usize, persisted: bool) -> serde_json::Value {
    json!({
        "result": "applied",
        "customer": entry.customer,
        "at": rfc3339(entry.at_unix_ns),
        "soft": entry.soft,
        "urls": urls,
        "prefixes": entry.prefixes,
        "tags": entry.tags,
        "all": entry.all,
        "persisted": persisted,
    })
}
