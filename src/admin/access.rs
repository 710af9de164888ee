//! Who may use the admin listener: which `Host` it answers to, and who may POST.
//!
//! - Every request must name the listener by an IP literal, `localhost` or one of
//!   `admin.hosts`: a page on another site that resolves its own name to this address
//!   (DNS rebinding) gets 403, never the node's state or its reload.
//! - With the operator's token (`admin.token_env`), a POST needs
//!   `Authorization: Bearer <token>`; without one, POSTs are taken from loopback peers
//!   only. Tokens are kept and compared as SHA-256 digests, in constant time, and never
//!   logged.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of a token.
pub type TokenHash = [u8; 32];

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `host` (a Host header value) names this admin listener: an IP literal,
/// `localhost`, or one of `names`, with or without a port.
pub fn host_allowed(host: Option<&str>, names: &[String]) -> bool {
    let Some(host) = host else {
        // HTTP/1.0 without Host: no browser sends that.
        return true;
    };
    let name = crate::config::canonical_host(host);
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok() || name == "localhost" || names.iter().any(|n| *n == name)
}

/// The operator's token for admin POSTs (`admin.token_env`), as the node started with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorToken {
    /// No `admin.token_env`: POSTs are taken from loopback peers only.
    NotConfigured,
    /// `admin.token_env` names this variable, which was not set (or empty) when the node
    /// started: POSTs are taken from loopback peers only, until a restart with it set.
    Unset(String),
    /// The token's digest: every POST needs it (or, for a purge, a customer's token).
    Set(TokenHash),
}

impl OperatorToken {
    /// The token named by `token_env`, read from the environment `var` gives.
    pub fn from_env(token_env: Option<&str>, var: impl Fn(&str) -> Option<String>) -> Self {
        let Some(name) = token_env else {
            return OperatorToken::NotConfigured;
        };
        match var(name) {
            Some(token) if !token.trim().is_empty() => OperatorToken::Set(hash_token(token.trim())),
            _ => OperatorToken::Unset(name.to_string()),
        }
    }

    fn digest(&self) -> Option<&TokenHash> {
        match self {
            OperatorToken::Set(digest) => Some(digest),
            _ => None,
        }
    }

    /// Why a POST from a peer off loopback is refused without a token, and the fix.
    pub fn loopback_only(&self) -> String {
        match self {
            OperatorToken::Unset(var) => format!(
                "admin.token_env names {var}, which was not set when holdfast started, so \
                 POSTs are taken from loopback only; set {var} (docker run -e {var}=<token>) \
                 and restart, then send Authorization: Bearer <token>"
            ),
            _ => "without admin.token_env, POSTs are taken from loopback only; set \
                  admin.token_env and send Authorization: Bearer <token>"
                .to_string(),
        }
    }
}

/// What a POST may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Post {
    Allowed,
    /// 401: a token is required and none, or a wrong one, was given.
    Unauthorized,
    /// 403: no operator token is configured and the peer is not on loopback.
    NotLoopback,
}

/// Decide a POST from `peer` carrying `authorization` (the header's value).
pub fn authorize_post(
    operator: &OperatorToken,
    authorization: Option<&[u8]>,
    peer: Option<IpAddr>,
) -> Post {
    match operator.digest() {
        Some(expected) => match bearer(authorization) {
            Some(token) if bool::from(hash_token(token).ct_eq(expected)) => Post::Allowed,
            _ => Post::Unauthorized,
        },
        // A dual-stack listener (`[::]:9080`) sees IPv4 peers as `::ffff:a.b.c.d`.
        None if peer.is_some_and(|ip| ip.to_canonical().is_loopback()) => Post::Allowed,
        None => Post::NotLoopback,
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(authorization: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(authorization?).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_answers_to_addresses_and_its_names_only() {
        let names = ["admin.fra1.example.net".to_string()];
        for ok in [
            "127.0.0.1:9080",
            "10.1.2.3",
            "[::1]:9080",
            "localhost:9080",
            "LOCALHOST",
            "admin.fra1.example.net:9080",
        ] {
            assert!(host_allowed(Some(ok), &names), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:9080",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!host_allowed(Some(refused), &names), "{refused}");
        }
        assert!(host_allowed(None, &[]));
    }

    #[test]
    fn posts_need_the_token_or_loopback() {
        let token = OperatorToken::Set(hash_token("s3cret"));
        let loopback = Some("127.0.0.1".parse().unwrap());
        let remote = Some("192.0.2.10".parse().unwrap());
        assert_eq!(
            authorize_post(&OperatorToken::NotConfigured, None, loopback),
            Post::Allowed
        );
        assert_eq!(
            authorize_post(
                &OperatorToken::NotConfigured,
                None,
                Some("::1".parse().unwrap())
            ),
            Post::Allowed
        );
        assert_eq!(
            authorize_post(
                &OperatorToken::NotConfigured,
                None,
                Some("::ffff:127.0.0.1".parse().unwrap())
            ),
            Post::Allowed,
            "IPv4 loopback through a dual-stack listener"
        );
        assert_eq!(
            authorize_post(&OperatorToken::NotConfigured, None, remote),
            Post::NotLoopback
        );
        assert_eq!(
            authorize_post(&OperatorToken::NotConfigured, None, None),
            Post::NotLoopback
        );
        // With a token configured, loopback is no longer enough.
        assert_eq!(authorize_post(&token, None, loopback), Post::Unauthorized);
        let good = Some(&b"Bearer s3cret"[..]);
        assert_eq!(authorize_post(&token, good, remote), Post::Allowed);
        assert_eq!(
            authorize_post(&token, Some(b"bearer  s3cret "), remote),
            Post::Allowed
        );
        for bad in [&b"Bearer s3cre"[..], b"Basic s3cret", b"Bearer ", b"s3cret"] {
            assert_eq!(
                authorize_post(&token, Some(bad), loopback),
                Post::Unauthorized,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
