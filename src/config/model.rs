//! The validated runtime model of Holdfast's configuration.
//!
//! Everything here has already been checked: the proxy, the policy and the sync code
//! read these values and never re-validate them. Values are built only by
//! [`super::load_node_file`], [`super::check_node_text`] and [`super::parse_customer_document`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::server::configuration::ServerConf;

/// The node configuration: what one Holdfast process runs with.
#[derive(Debug)]
pub struct NodeConfig {
    /// The file it was read from.
    pub source: PathBuf,
    /// Pingora's own server settings, passed through from `server:`.
    pub server: ServerConf,
    /// Data-plane listeners (`listen:`), e.g. `0.0.0.0:8080` or `{ addr, tls: true }`.
    pub listen: Vec<Listener>,
    /// How this node names itself in `CDN-Loop` (`node:`).
    pub node: NodeIdentity,
    /// `tls.default`: the certificate for SNI no customer claims (without it, such
    /// handshakes fail).
    pub tls_default: Option<super::Certificate>,
    /// The admin listener, if configured.
    pub admin: Option<AdminConfig>,
    /// Store bounds and lock behaviour.
    pub cache: StoreConfig,
    /// The control plane to sync customers from, if any.
    pub control_plane: Option<ControlPlaneConfig>,
    /// Inline customers: the embedded default (may be empty when a control plane is set).
    pub customers: Arc<Customers>,
    /// How long SIGTERM waits for in-flight requests before the process exits.
    pub shutdown_grace: Duration,
    /// How long a client's keep-alive connection may wait idle for its next request
    /// (`idle_timeout`, whole seconds, at least 1); a longer `Keep-Alive: timeout=` from
    /// the client is cut to it.
    pub idle_timeout: Duration,
    /// How long a client may take to send one request's header, from its first byte to
    /// the empty line that ends it (`header_timeout`); HTTP/1 only.
    pub header_timeout: Duration,
    /// A built-in static-file origin, for demos and quick starts.
    pub demo_origin: Option<DemoOriginConfig>,
    /// Warn when a customer config older than this acts on a schedule (see `max_config_age`).
    pub max_config_age: Duration,
}

impl NodeConfig {
    /// The directory relative paths are resolved against: the node file's, also for
    /// the certificate paths of synced documents.
    pub fn base_dir(&self) -> &std::path::Path {
        base_dir_of(&self.source)
    }
}

/// The directory of the file `source` (for the node file: where relative paths
/// resolve); `.` for a bare file name (`-c holdfast.yaml`), never the empty path.
pub fn base_dir_of(source: &std::path::Path) -> &std::path::Path {
    match source.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    }
}

/// `node:`: the node's name and how many Holdfast hops a request may have made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `node.name`, else the host name (else `holdfast`).
    pub name: String,
    /// A request that has passed more Holdfast nodes than this gets 508 (`node.max_hops`).
    pub max_hops: u32,
    /// `node.advertise`: the name also appears in `Cache-Status` (a `node` parameter) and
    /// `Via` (`1.1 <name> (holdfast)`), so that a chain of shields reads by node.
    pub advertise: bool,
}

/// One data-plane listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: String,
    /// TLS (1.2 and 1.3); ALPN offers `h2` and `http/1.1`.
    pub tls: bool,
    /// Plain, and HTTP/2 with prior knowledge is taken too (`h2c: true`).
    pub h2c: bool,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.tls, self.h2c) {
            (true, _) => write!(f, "{} (tls)", self.addr),
            (false, true) => write!(f, "{} (h2c)", self.addr),
            (false, false) => f.write_str(&self.addr),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: String,
    /// Name of the environment variable holding the operator's bearer token for admin
    /// POSTs (`admin.token_env`); without it, POSTs are taken from loopback peers only.
    pub token_env: Option<String>,
    /// Host names (lower case) the admin listener answers to besides IP literals and
    /// `localhost` (`admin.hosts`): anything else is refused, against DNS rebinding.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Upper bound of the in-memory store, in bytes (`cache.memory`).
    pub memory: usize,
    /// Largest object stored, in bytes (`cache.max_object`); larger ones are proxied only.
    pub max_object: usize,
    /// How long a request waits for another request that is filling the same key
    /// (`cache.lock_timeout`) before it goes to the origin itself.
    pub lock_timeout: Duration,
    /// The persistent tier (`cache.disk`), if any.
    pub disk: Option<DiskConfig>,
    /// Answer fresh hits from `request_filter` (`cache.fast_path`, default true); off,
    /// every hit goes through pingora-cache's phases. Both answer alike (the test suite
    /// compares them); the switch is there for diagnosis.
    pub fast_path: bool,
}

/// `cache.disk`: where the persistent tier keeps its files and how much it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The directory (relative paths are relative to the node file).
    pub path: PathBuf,
    /// Bound of the bytes its objects take on disk.
    pub size: u64,
    /// Largest body the tier takes (`cache.disk.max_object`): bodies above
    /// `cache.max_object` and up to this are streamed to disk as they arrive.
    pub max_object: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneConfig {
    /// Replica URLs serving the customer document (`http://` or `https://`).
    pub urls: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Where the last applied document is kept (last known good).
    pub cache_file: PathBuf,
    /// Name of the environment variable that holds a bearer token, if any.
    pub token_env: Option<String>,
    /// Largest document accepted, in bytes.
    pub max_document: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOriginConfig {
    pub listen: String,
    pub root: PathBuf,
}

/// Where a set of customers came from; shown by the admin `/config` endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Inline,
    CacheFile,
    ControlPlane,
}

impl ConfigSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigSource::Inline => "inline",
            ConfigSource::CacheFile => "cache-file",
            ConfigSource::ControlPlane => "control-plane",
        }
    }
}

/// A validated set of customers with its host routing table.
#[derive(Debug)]
pub struct Customers {
    /// Document version (0 for inline customers).
    pub version: u64,
    pub list: Vec<Arc<Customer>>,
    /// Lower-cased exact host → index into `list`.
    pub(crate) exact: HashMap<String, usize>,
    /// Lower-cased suffix including the leading dot (`.shop.example.com`) → index.
    pub(crate) wildcard: HashMap<String, usize>,
    /// Some customer has `cache.slice`: requests may need subrequests.
    pub sliced: bool,
}

impl Customers {
    /// Build the routing table. Hosts must already be lower-cased and unique
    /// (validation guarantees both).
    pub fn new(version: u64, list: Vec<Customer>) -> Customers {
        let list: Vec<Arc<Customer>> = list.into_iter().map(Arc::new).collect();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in list.iter().enumerate() {
            for h in &c.hosts {
                match h.strip_prefix('*') {
                    Some(suffix) => {
                        wildcard.insert(suffix.to_string(), i);
                    }
                    None => {
                        exact.insert(h.clone(), i);
                    }
                }
            }
        }
        let sliced = list.iter().any(|c| c.cache.slice.is_some());
        Customers {
            version,
            list,
            exact,
            wildcard,
            sliced,
        }
    }

    pub fn empty() -> Customers {
        Customers::new(0, Vec::new())
    }

    /// The customer serving `host` (a Host header value: port stripped here, case-folded).
    /// Exact names win over wildcards; `*.example.com` matches `a.example.com` and
    /// `a.b.example.com`, not `example.com`; the longest wildcard wins. One hash lookup
    /// per label, however many customers there are: `a.b.shop.example.com` tries the
    /// exact name, then `*.b.shop.example.com`, `*.shop.example.com`, and so on.
    pub fn route(&self, host: &str) -> Option<&Arc<Customer>> {
        let host = canonical_host(host);
        let host = host.as_ref();
        if let Some(&i) = self.exact.get(host) {
            return Some(&self.list[i]);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        host.match_indices('.')
            .filter(|&(at, _)| at > 0)
            .find_map(|(at, _)| self.wildcard.get(&host[at..]))
            .map(|&i| &self.list[i])
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Customer>> {
        self.list.iter().find(|c| c.name == name)
    }
}

/// The host name a request is routed, keyed and forwarded by: its Host (or authority)
/// without the port, without a trailing dot, lower-cased. Every place that looks at the
/// host uses this one form, so what is cached is what the origin was asked for.
pub fn canonical_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// A Host header value without its `:port`. An IPv6 literal keeps its brackets
/// (`[::1]:8080` → `[::1]`); a bare IPv6 address is left whole.
pub fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// One customer: its hosts, origin and cache policy.
#[derive(Debug, Clone)]
pub struct Customer {
    pub name: String,
    /// Lower-cased host names; a leading `*.` marks a wildcard.
    pub hosts: Vec<String>,
    pub origin: Origin,
    pub cache: CachePolicy,
    /// Ordered rules: the first whose match (and active window) applies wins.
    pub rules: Vec<Rule>,
    /// Request methods passed on to the origin (`methods`); others are answered by the
    /// edge (405, or 501 for a method it does not know). Never TRACE or CONNECT.
    pub methods: Vec<http::Method>,
    /// SHA-256 digests of the tokens that may purge this customer's content
    /// (`purge_tokens`).
    pub purge_tokens: Vec<[u8; 32]>,
    /// The purges the synced document lists for this customer (`purges:`), in force
    /// with the document that carries them.
    pub purges: Arc<[super::DocumentPurge]>,
    /// The certificate served by SNI for this customer's hosts (`tls:`).
    pub tls: Option<super::Certificate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `host:port` of each origin server; requests are balanced round-robin.
    pub servers: Vec<String>,
    pub tls: bool,
    /// SNI and certificate name for TLS origins; defaults to the request host.
    pub sni: Option<String>,
    /// Host header sent to the origin; defaults to the request's Host.
    pub host_header: Option<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// The edge sets `X-Forwarded-For` (appending the client's address),
    /// `X-Forwarded-Proto` and `Forwarded` (RFC 7239) on requests to the origin.
    pub forwarded: bool,
    /// Lower-cased request fields removed before anything else sees the request (the
    /// cache key, `Vary`, the origin): `origin.drop_request_headers`.
    pub drop_request_headers: Vec<http::HeaderName>,
    /// Active checks of each server (`origin.health_check`).
    pub health_check: Option<HealthCheck>,
}

/// `origin.health_check`: every `interval`, each server is asked `GET path`; one that does
/// not answer `expect` (any 2xx when `None`) within `timeout` gets no traffic until it
/// does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub expect: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    /// Freshness when the origin gives none; zero means such responses are not stored.
    pub default_ttl: Duration,
    /// When true, the policy TTL wins over origin Cache-Control/Expires.
    pub override_origin: bool,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// Origin statuses that count as errors for stale-if-error (default 500, 502, 503, 504).
    pub stale_if_error_statuses: Vec<u16>,
    /// Per-status TTLs (negative caching), e.g. 404 → 30s. Statuses listed here are cacheable.
    pub status_ttl: BTreeMap<u16, Duration>,
    /// Store responses carrying Set-Cookie (default false).
    pub cache_set_cookie: bool,
    /// What the cache key does with the query string.
    pub query: QueryKey,
    /// `cache.slice`: fetch and store GET answers in pieces of this many bytes, each
    /// asked of the origin with `Range` (see `proxy::slice`).
    pub slice: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryKey {
    /// The query string is part of the key as sent.
    #[default]
    Keep,
    /// Parameters are sorted so `?a=1&b=2` and `?b=2&a=1` share an entry.
    Sort,
    /// The query string is ignored by the cache key (still sent to the origin).
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// An absolute instant, kept with the zone the customer wrote it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant {
    /// As written in the config.
    pub text: String,
    /// The instant in the customer's zone (a fixed offset when no IANA zone was named).
    pub zoned: jiff::ZonedDateTime,
}

impl Instant {
    pub fn timestamp(&self) -> jiff::Timestamp {
        self.zoned.timestamp()
    }
}

/// `active: { from, until }`: the rule applies only when `from <= now < until`.
/// Either side may be open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveWindow {
    pub from: Option<Instant>,
    pub until: Option<Instant>,
}

impl ActiveWindow {
    pub fn contains(&self, now: jiff::Timestamp) -> bool {
        self.from.as_ref().is_none_or(|f| f.timestamp() <= now)
            && self.until.as_ref().is_none_or(|u| now < u.timestamp())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Position in the customer's `rules` list, for logs and `explain`.
    pub index: usize,
    pub matcher: PathMatch,
    /// `cache: false` bypasses the cache for matching requests.
    pub cache: bool,
    /// TTL that applies to matching responses (wins over origin headers when
    /// `override_origin`, or when the origin gives no freshness).
    pub ttl: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    pub expires_at: Option<Instant>,
    /// Serve stale copies past `expires_at` (default false: an ended sale must not show).
    pub stale_after_expiry: bool,
    pub active: Option<ActiveWindow>,
}

impl Rule {
    pub fn applies(&self, path: &str, now: jiff::Timestamp) -> bool {
        self.matcher.matches(path) && self.active.as_ref().is_none_or(|w| w.contains(now))
    }
}
