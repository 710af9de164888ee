//! The file format: serde structs that mirror the YAML exactly.
//!
//! Every struct denies unknown keys; every default is a named constant. Scalars that
//! can be checked on their own are newtypes (`scalars`, `units`) checked inside
//! `Deserialize`, so their errors carry the scalar's line and column. Checks that need
//! more than one value (duplicates, limits that contradict each other) live in
//! `validate`.

use std::time::Duration;

use serde::Deserialize;

use super::scalars::{
    CustomerName, EnvName, ErrorStatus, FieldName, HostHeader, HostName, ListenAddr, MethodName,
    NodeName, ServerAddr, StatusTtl, TokenDigest, UrlPath, UrlText,
};
use super::units::{Dur, InstantText, Size};

pub(super) const DEFAULT_MEMORY: usize = 256 << 20;
pub(super) const DEFAULT_MAX_OBJECT: usize = 16 << 20;
pub(super) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const DEFAULT_CP_INTERVAL: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_CP_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const DEFAULT_MAX_DOCUMENT: usize = 4 << 20;
pub(super) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// How long a client connection may sit idle between requests.
pub(super) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub(super) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const DEFAULT_MAX_CONFIG_AGE: Duration = Duration::from_secs(86_400);
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub(super) const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);
pub(super) const DEFAULT_TTL: Duration = Duration::ZERO;
pub(super) const DEFAULT_STALE_WHILE_REVALIDATE: Duration = Duration::ZERO;
pub(super) const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(3600);
pub(super) const DEFAULT_STALE_IF_ERROR_STATUSES: [u16; 4] = [500, 502, 503, 504];
/// Methods the edge passes on to a customer's origin unless its `methods` says otherwise.
pub(super) const DEFAULT_METHODS: [&str; 7] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
/// Request fields a client could use to make an origin answer for another host, path or
/// method than the one the cache key says: dropped before the origin sees the request.
pub(super) const DEFAULT_DROP_REQUEST_HEADERS: [&str; 6] = [
    "x-forwarded-host",
    "x-host",
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
];

fn default_memory() -> Size {
    Size(DEFAULT_MEMORY)
}
fn default_max_object() -> Size {
    Size(DEFAULT_MAX_OBJECT)
}
fn default_lock_timeout() -> Dur {
    Dur(DEFAULT_LOCK_TIMEOUT)
}
fn default_cp_interval() -> Dur {
    Dur(DEFAULT_CP_INTERVAL)
}
fn default_cp_timeout() -> Dur {
    Dur(DEFAULT_CP_TIMEOUT)
}
fn default_max_document() -> Size {
    Size(DEFAULT_MAX_DOCUMENT)
}
fn default_idle_timeout() -> Dur {
    Dur(DEFAULT_IDLE_TIMEOUT)
}
fn default_header_timeout() -> Dur {
    Dur(DEFAULT_HEADER_TIMEOUT)
}
fn default_shutdown_grace() -> Dur {
    Dur(DEFAULT_SHUTDOWN_GRACE)
}
fn default_max_config_age() -> Dur {
    Dur(DEFAULT_MAX_CONFIG_AGE)
}
fn default_connect_timeout() -> Dur {
    Dur(DEFAULT_CONNECT_TIMEOUT)
}
fn default_read_timeout() -> Dur {
    Dur(DEFAULT_READ_TIMEOUT)
}
fn default_ttl() -> Dur {
    Dur(DEFAULT_TTL)
}
fn default_stale_while_revalidate() -> Dur {
    Dur(DEFAULT_STALE_WHILE_REVALIDATE)
}
fn default_stale_if_error() -> Dur {
    Dur(DEFAULT_STALE_IF_ERROR)
}
fn default_stale_if_error_statuses() -> Vec<ErrorStatus> {
    DEFAULT_STALE_IF_ERROR_STATUSES
        .iter()
        .map(|&s| ErrorStatus(s))
        .collect()
}
fn default_true() -> bool {
    true
}

/// The node file (`conf/holdfast.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeFile {
    /// Pingora `ServerConf` keys; checked against `ServerConf` in `validate`.
    #[serde(default)]
    pub server: Option<serde_yaml::Mapping>,
    pub listen: Vec<ListenEntry>,
    #[serde(default)]
    pub tls: Option<NodeTlsFile>,
    #[serde(default)]
    pub node: Option<NodeIdFile>,
    #[serde(default)]
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub cache: StoreFile,
    #[serde(default)]
    pub control_plane: Option<ControlPlaneFile>,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Dur,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    #[serde(default = "default_max_config_age")]
    pub max_config_age: Dur,
    #[serde(default)]
    pub demo_origin: Option<DemoOriginFile>,
    #[serde(default)]
    pub customers: Option<Vec<CustomerFile>>,
}

/// One `listen:` entry: an address (plain HTTP/1.1, as before) or
/// `{ addr, tls: true }`, a TLS listener where ALPN picks HTTP/2 or HTTP/1.1, or
/// `{ addr, h2c: true }`, a plain listener that also takes HTTP/2 with prior knowledge.
#[derive(Debug)]
pub(super) struct ListenEntry {
    pub addr: ListenAddr,
    pub tls: bool,
    pub h2c: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenFile {
    addr: ListenAddr,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    h2c: bool,
}

impl<'de> Deserialize<'de> for ListenEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = ListenEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a listen address (\"0.0.0.0:8080\") or { addr: \"0.0.0.0:8443\", tls: true }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ListenEntry, E> {
                let addr = ListenAddr::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(ListenEntry {
                    addr,
                    tls: false,
                    h2c: false,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ListenEntry, A::Error> {
                let f = ListenFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if f.tls && f.h2c {
                    return Err(serde::de::Error::custom(
                        "a listener is tls: true or h2c: true, not both; a TLS listener offers \
                         HTTP/2 by ALPN already",
                    ));
                }
                Ok(ListenEntry {
                    addr: f.addr,
                    tls: f.tls,
                    h2c: f.h2c,
                })
            }
        }
        d.deserialize_any(Entry)
    }
}

/// `node:`: how this node names itself to other Holdfast nodes (`CDN-Loop`) and, with
/// `advertise`, in `Cache-Status` and `Via`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeIdFile {
    #[serde(default)]
    pub name: Option<NodeName>,
    #[serde(default = "default_max_hops")]
    pub max_hops: u32,
    #[serde(default)]
    pub advertise: bool,
}

pub(super) const DEFAULT_MAX_HOPS: u32 = 4;
fn default_max_hops() -> u32 {
    DEFAULT_MAX_HOPS
}

/// `tls:` of the node: the certificate for SNI that no customer claims.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeTlsFile {
    #[serde(default)]
    pub default: Option<CertFile>,
}

/// A certificate (PEM, the leaf first, a chain allowed) and its private key (PEM).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertFile {
    pub cert: String,
    pub key: String,
}

/// The synced customer document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CustomerDocumentFile {
    pub version: u64,
    pub customers: Vec<CustomerFile>,
    #[serde(default)]
    pub purges: Vec<PurgeFile>,
}

/// One purge in the synced document: what it names, of which customer, stored before when.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PurgeFile {
    pub customer: CustomerName,
    pub at: InstantText,
    #[serde(default)]
    pub urls: Vec<UrlText>,
    #[serde(default)]
    pub prefixes: Vec<UrlPath>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub soft: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    pub listen: ListenAddr,
    #[serde(default)]
    pub token_env: Option<EnvName>,
    #[serde(default)]
    pub hosts: Vec<HostName>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreFile {
    #[serde(default = "default_memory")]
    pub memory: Size,
    #[serde(default = "default_max_object")]
    pub max_object: Size,
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Dur,
    #[serde(default)]
    pub disk: Option<DiskFile>,
    #[serde(default = "default_true")]
    pub fast_path: bool,
}

impl Default for StoreFile {
    fn default() -> Self {
        StoreFile {
            memory: default_memory(),
            max_object: default_max_object(),
            lock_timeout: default_lock_timeout(),
            disk: None,
            fast_path: true,
        }
    }
}

/// `cache.disk`: the persistent tier behind the memory store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiskFile {
    pub path: String,
    pub size: Size,
    /// Default: [`DISK_MAX_OBJECT_SHARE`] of `size`, and never below `cache.max_object`.
    #[serde(default)]
    pub max_object: Option<Size>,
}

/// The default `cache.disk.max_object` is this fraction of `cache.disk.size`: one object
/// may take an eighth of the tier, so that one download cannot evict the whole cache.
pub(super) const DISK_MAX_OBJECT_SHARE: u64 = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlPlaneFile {
    pub urls: Vec<UrlText>,
    #[serde(default = "default_cp_interval")]
    pub interval: Dur,
    #[serde(default = "default_cp_timeout")]
    pub timeout: Dur,
    pub cache_file: String,
    #[serde(default)]
    pub token_env: Option<EnvName>,
    #[serde(default = "default_max_document")]
    pub max_document: Size,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DemoOriginFile {
    pub listen: ListenAddr,
    pub root: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CustomerFile {
    pub name: CustomerName,
    pub hosts: Vec<HostName>,
    pub origin: OriginFile,
    #[serde(default)]
    pub cache: CachePolicyFile,
    #[serde(default)]
    pub rules: Option<Vec<RuleFile>>,
    #[serde(default)]
    pub methods: Option<Vec<MethodName>>,
    #[serde(default)]
    pub purge_tokens: Vec<TokenDigest>,
    #[serde(default)]
    pub tls: Option<CertFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OriginFile {
    pub servers: Vec<ServerAddr>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub sni: Option<HostName>,
    #[serde(default)]
    pub host_header: Option<HostHeader>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Dur,
    #[serde(default = "default_true")]
    pub forwarded: bool,
    #[serde(default)]
    pub drop_request_headers: Option<Vec<FieldName>>,
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
}

/// `origin.health_check`: a request each server must answer to get traffic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheckFile {
    pub path: UrlPath,
    #[serde(default = "default_check_interval")]
    pub interval: Dur,
    /// Default: 2 s, or the interval when that is shorter.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// The status a healthy server answers with; any 2xx when not given.
    #[serde(default)]
    pub expect: Option<u16>,
}
fn default_check_interval() -> Dur {
    Dur(Duration::from_secs(5))
}
pub(super) const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CachePolicyFile {
    #[serde(default = "default_ttl")]
    pub default_ttl: Dur,
    #[serde(default)]
    pub override_origin: bool,
    #[serde(default = "default_stale_while_revalidate")]
    pub stale_while_revalidate: Dur,
    #[serde(default = "default_stale_if_error")]
    pub stale_if_error: Dur,
    #[serde(default = "default_stale_if_error_statuses")]
    pub stale_if_error_statuses: Vec<ErrorStatus>,
    #[serde(default)]
    pub status_ttl: StatusTtl,
    #[serde(default)]
    pub cache_set_cookie: bool,
    #[serde(default)]
    pub query: QueryFile,
    #[serde(default)]
    pub slice: Option<Size>,
}

impl Default for CachePolicyFile {
    fn default() -> Self {
        CachePolicyFile {
            default_ttl: default_ttl(),
            override_origin: false,
            stale_while_revalidate: default_stale_while_revalidate(),
            stale_if_error: default_stale_if_error(),
            stale_if_error_statuses: default_stale_if_error_statuses(),
            status_ttl: StatusTtl::default(),
            cache_set_cookie: false,
            query: QueryFile::default(),
            slice: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum QueryFile {
    #[default]
    Keep,
    Sort,
    Drop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFile {
    #[serde(rename = "match")]
    pub matcher: MatchFile,
    #[serde(default = "default_true")]
    pub cache: bool,
    #[serde(default)]
    pub ttl: Option<Dur>,
    #[serde(default)]
    pub stale_while_revalidate: Option<Dur>,
    #[serde(default)]
    pub stale_if_error: Option<Dur>,
    #[serde(default)]
    pub expires_at: Option<InstantText>,
    #[serde(default)]
    pub stale_after_expiry: Option<bool>,
    #[serde(default)]
    pub active: Option<ActiveFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MatchFile {
    #[serde(default)]
    pub path: Option<UrlPath>,
    #[serde(default)]
    pub path_prefix: Option<UrlPath>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActiveFile {
    #[serde(default)]
    pub from: Option<InstantText>,
    #[serde(default)]
    pub until: Option<InstantText>,
}
