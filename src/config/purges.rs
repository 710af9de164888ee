//! Purges as a synced document lists them (`purges:`), kept as plain data with the
//! customer they name: which URLs, prefixes and tags, when, hard or soft. The markers
//! that hits ask are made from these by `crate::purge`, which computes their cache keys.

use super::{canonical_host, Customer, Customers};

/// The longest tag an origin may set that purges look at.
pub const MAX_TAG_LEN: usize = 128;

/// One purge of a synced document: every copy of the customer's that it names and that
/// was stored before `at_unix_ns` is purged (or, `soft`, made stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentPurge {
    /// When it was issued, in nanoseconds since the Unix epoch.
    pub at_unix_ns: u64,
    pub urls: Vec<PurgeUrl>,
    pub prefixes: Vec<String>,
    pub tags: Vec<String>,
    pub all: bool,
    pub soft: bool,
}

/// A URL a purge names, as the customer's requests for it are keyed: its host (one of the
/// customer's, canonical), path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeUrl {
    pub host: String,
    pub path: String,
    pub query: Option<String>,
}

/// `url`, a whole http(s) URL of one of `customer`'s hosts (as `customers` routes them);
/// otherwise why not, in words for the one who wrote it.
pub fn purge_url(
    customers: &Customers,
    customer: &Customer,
    url: &str,
) -> Result<PurgeUrl, String> {
    let whole = "write it whole, e.g. https://shop.example.com/a";
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e}); {whole}"))?;
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(format!("{url:?} has no scheme or host; {whole}"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?} is not an http or https URL"));
    }
    let host = canonical_host(host);
    match customers.route(&host) {
        Some(owner) if owner.name == customer.name => Ok(PurgeUrl {
            host: host.into_owned(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
        }),
        owner => Err(format!(
            "{url:?} is not a URL of customer {:?}: its host is not one of customer {:?}'s \
             hosts{}; purge it under the customer that serves it",
            customer.name,
            customer.name,
            owner.map_or(String::new(), |o| format!(
                " (it is customer {:?}'s)",
                o.name
            )),
        )),
    }
}

/// Whether an origin could have tagged an object `tag`: 1 to [`MAX_TAG_LEN`] bytes,
/// without the separators of `Surrogate-Key` (space) and `Cache-Tag` (comma).
pub fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= MAX_TAG_LEN && !tag.contains([' ', ','])
}
