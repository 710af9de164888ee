//! Validation: file structs → runtime model, with the checks that need more than one
//! value (duplicates, empty lists, limits that contradict each other).
//!
//! Errors point at the offending key or value in the text (found with `locate`); when
//! a value was defaulted, at the nearest enclosing key that is written.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::ConfigError;
use super::file::{
    ActiveFile, CachePolicyFile, ControlPlaneFile, CustomerFile, NodeFile, OriginFile, QueryFile,
    RuleFile,
};
use super::locate::{locate, locate_near, Seg, Target};
use super::model::*;
use super::units::Dur;

use Seg::{Index, Key};

/// Where errors go: the file name shown and the text to locate keys in.
pub(super) struct Ctx<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err(&self, path: &[Seg], target: Target, message: String) -> ConfigError {
        ConfigError::invalid(self.file, locate_near(self.text, path, target), message)
    }

    /// The line of a value, for "already used on line N" messages.
    fn line_of(&self, path: &[Seg]) -> String {
        match locate(self.text, path, Target::Value) {
            Some((line, _)) => format!(" (line {line})"),
            None => String::new(),
        }
    }
}

pub(super) fn node(ctx: &Ctx, source: &Path, f: NodeFile) -> Result<NodeConfig, ConfigError> {
    let base = base_dir_of(source);
    let server = super::server_conf::check(ctx, f.server)?;
    if f.listen.is_empty() {
        return Err(ctx.err(
            &[Key("listen")],
            Target::Key,
            "listen is empty; add at least one address, e.g. listen: [\"0.0.0.0:8080\"]".into(),
        ));
    }
    let mut listeners: Vec<(String, Vec<Seg>)> = f
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (a.addr.0.clone(), vec![Key("listen"), Index(i)]))
        .collect();
    if let Some(a) = &f.admin {
        listeners.push((a.listen.0.clone(), vec![Key("admin"), Key("listen")]));
    }
    if let Some(d) = &f.demo_origin {
        listeners.push((d.listen.0.clone(), vec![Key("demo_origin"), Key("listen")]));
    }
    distinct_listeners(ctx, &listeners)?;

    if f.idle_timeout.0 < std::time::Duration::from_secs(1) {
        return Err(ctx.err(
            &[Key("idle_timeout")],
            Target::Value,
            "idle_timeout is under 1s; client connections are timed in whole seconds, e.g. idle_timeout: 60s"
                .into(),
        ));
    }
    if f.header_timeout.0 < std::time::Duration::from_millis(100) {
        return Err(ctx.err(
            &[Key("header_timeout")],
            Target::Value,
            "header_timeout is under 100ms; a client needs time to send a request's header, \
             e.g. header_timeout: 10s"
                .into(),
        ));
    }
    let cache = store(ctx, base, &f.cache)?;
    let control_plane = match f.control_plane {
        Some(cp) => Some(control_plane(ctx, base, cp)?),
        None => None,
    };
    let demo_origin = match f.demo_origin {
        Some(d) => {
            if d.root.is_empty() {
                return Err(ctx.err(
                    &[Key("demo_origin"), Key("root")],
                    Target::Value,
                    "demo_origin.root is empty; name the directory to serve, e.g. root: demo"
                        .into(),
                ));
            }
            Some(DemoOriginConfig {
                listen: d.listen.0,
                root: base.join(d.root),
            })
        }
        None => None,
    };
    let inline = f.customers.unwrap_or_default();
    if inline.is_empty() && control_plane.is_none() {
        return Err(ctx.err(
            &[Key("customers")],
            Target::Key,
            "nothing to serve: the file has no customers and no control_plane; \
             add customers: or control_plane:"
                .into(),
        ));
    }
    let customers = customers(ctx, base, 0, inline)?;
    let node_id = match f.node {
        Some(n) => {
            if n.max_hops == 0 {
                return Err(ctx.err(
                    &[Key("node"), Key("max_hops")],
                    Target::Value,
                    "node.max_hops is 0; a request must be allowed at least one Holdfast hop, \
                     e.g. max_hops: 4 (an edge and its shields)"
                        .into(),
                ));
            }
            NodeIdentity {
                name: n.name.map(|n| n.0).unwrap_or_else(host_name),
                max_hops: n.max_hops,
                advertise: n.advertise,
            }
        }
        None => NodeIdentity {
            name: host_name(),
            max_hops: super::file::DEFAULT_MAX_HOPS,
            advertise: false,
        },
    };
    let tls_default = match f.tls.and_then(|t| t.default) {
        Some(c) => Some(certificate(ctx, base, &[Key("tls"), Key("default")], c)?),
        None => None,
    };
    Ok(NodeConfig {
        source: source.to_path_buf(),
        server,
        listen: f
            .listen
            .into_iter()
            .map(|a| Listener {
                addr: a.addr.0,
                tls: a.tls,
                h2c: a.h2c,
            })
            .collect(),
        tls_default,
        node: node_id,
        admin: f.admin.map(|a| AdminConfig {
            listen: a.listen.0,
            token_env: a.token_env.map(|t| t.0),
            hosts: a.hosts.into_iter().map(|h| h.0).collect(),
        }),
        cache,
        control_plane,
        customers: Arc::new(customers),
        shutdown_grace: f.shutdown_grace.0,
        idle_timeout: f.idle_timeout.0,
        header_timeout: f.header_timeout.0,
        demo_origin,
        max_config_age: f.max_config_age.0,
    })
}

fn distinct_listeners(ctx: &Ctx, listeners: &[(String, Vec<Seg>)]) -> Result<(), ConfigError> {
    let mut seen: HashMap<SocketAddr, &[Seg]> = HashMap::new();
    for (addr, path) in listeners {
        let Ok(sa) = addr.parse::<SocketAddr>() else {
            continue; // already checked when parsed
        };
        if let Some(first) = seen.insert(sa, path) {
            return Err(ctx.err(
                path,
                Target::Value,
                format!(
                    "address {addr} is already used by another listener{}; \
                     give each listener its own address or port",
                    ctx.line_of(first)
                ),
            ));
        }
    }
    Ok(())
}

fn store(ctx: &Ctx, base: &Path, f: &super::file::StoreFile) -> Result<StoreConfig, ConfigError> {
    let at = |key| [Key("cache"), Key(key)];
    if f.memory.0 == 0 {
        return Err(ctx.err(
            &at("memory"),
            Target::Value,
            "cache.memory is 0; give the store some room, e.g. memory: 256MiB".into(),
        ));
    }
    if f.max_object.0 == 0 {
        return Err(ctx.err(
            &at("max_object"),
            Target::Value,
            "cache.max_object is 0; set the largest object to store, e.g. max_object: 16MiB".into(),
        ));
    }
    if f.max_object.0 > f.memory.0 {
        // Point at whichever of the two is written (max_object first).
        let path = if locate(ctx.text, &at("max_object"), Target::Value).is_some() {
            at("max_object")
        } else {
            at("memory")
        };
        return Err(ctx.err(
            &path,
            Target::Value,
            format!(
                "cache.max_object ({} bytes) is larger than cache.memory ({} bytes); \
                 lower max_object or raise memory",
                f.max_object.0, f.memory.0
            ),
        ));
    }
    let disk = match &f.disk {
        Some(d) => Some(disk(ctx, base, d, f.max_object.0)?),
        None => None,
    };
    Ok(StoreConfig {
        fast_path: f.fast_path,
        memory: f.memory.0,
        max_object: f.max_object.0,
        lock_timeout: f.lock_timeout.0,
        disk,
    })
}

/// Smallest `cache.disk.size` accepted: room for a few objects at the least.
const MIN_DISK_SIZE: usize = 1 << 20;

fn disk(
    ctx: &Ctx,
    base: &Path,
    d: &super::file::DiskFile,
    max_object: usize,
) -> Result<DiskConfig, ConfigError> {
    let at = |key| [Key("cache"), Key("disk"), Key(key)];
    if d.path.trim().is_empty() {
        return Err(ctx.err(
            &at("path"),
            Target::Value,
            "cache.disk.path is empty; name the cache directory, e.g. path: /var/lib/holdfast/cache"
                .into(),
        ));
    }
    if d.size.0 < MIN_DISK_SIZE {
        return Err(ctx.err(
            &at("size"),
            Target::Value,
            format!(
                "cache.disk.size ({} bytes) is below the 1MiB minimum; give the disk tier room, e.g. size: 10GiB",
                d.size.0
            ),
        ));
    }
    if d.size.0 < max_object {
        return Err(ctx.err(
            &at("size"),
            Target::Value,
            format!(
                "cache.disk.size ({} bytes) is smaller than cache.max_object ({max_object} bytes); \
                 raise size or lower max_object",
                d.size.0
            ),
        ));
    }
    let size = d.size.0 as u64;
    let streamed_max = match d.max_object {
        None => (size / super::file::DISK_MAX_OBJECT_SHARE).max(max_object as u64),
        Some(m) if m.0 as u64 > size => {
            return Err(ctx.err(
                &at("max_object"),
                Target::Value,
                format!(
                    "cache.disk.max_object ({} bytes) is larger than cache.disk.size ({size} bytes); \
                     lower max_object (the default is size/{}) or raise size",
                    m.0,
                    super::file::DISK_MAX_OBJECT_SHARE
                ),
            ))
        }
        Some(m) if m.0 < max_object => {
            return Err(ctx.err(
                &at("max_object"),
                Target::Value,
                format!(
                    "cache.disk.max_object ({} bytes) is smaller than cache.max_object ({max_object} bytes), \
                     the largest object memory keeps; raise it (or leave it out: size/{})",
                    m.0,
                    super::file::DISK_MAX_OBJECT_SHARE
                ),
            ))
        }
        Some(m) => m.0 as u64,
    };
    Ok(DiskConfig {
        path: resolve(base, &d.path),
        size,
        max_object: streamed_max,
    })
}

fn control_plane(
    ctx: &Ctx,
    base: &Path,
    f: ControlPlaneFile,
) -> Result<ControlPlaneConfig, ConfigError> {
    let at = |key| [Key("control_plane"), Key(key)];
    if f.urls.is_empty() {
        return Err(ctx.err(
            &at("urls"),
            Target::Key,
            "control_plane.urls is empty; list at least one URL serving the customer document"
                .into(),
        ));
    }
    positive(
        ctx,
        &at("interval"),
        f.interval,
        "control_plane.interval",
        "30s",
    )?;
    positive(
        ctx,
        &at("timeout"),
        f.timeout,
        "control_plane.timeout",
        "5s",
    )?;
    if f.cache_file.is_empty() {
        return Err(ctx.err(
            &at("cache_file"),
            Target::Value,
            "control_plane.cache_file is empty; name the file that keeps the last good \
             document, e.g. /var/lib/holdfast/customers.yaml"
                .into(),
        ));
    }
    if f.max_document.0 == 0 {
        return Err(ctx.err(
            &at("max_document"),
            Target::Value,
            "control_plane.max_document is 0; set the largest document accepted, e.g. 4MiB".into(),
        ));
    }
    Ok(ControlPlaneConfig {
        urls: f.urls.into_iter().map(|u| u.0).collect(),
        interval: f.interval.0,
        timeout: f.timeout.0,
        cache_file: resolve(base, &f.cache_file),
        token_env: f.token_env.map(|t| t.0),
        max_document: f.max_document.0,
    })
}

/// This machine's host name, as a node name (`holdfast` when there is none to read).
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if name.is_empty() {
        "holdfast".to_string()
    } else {
        name
    }
}

/// Load and check a `{ cert, key }` pair found at `at` (paths relative to `base`).
fn certificate(
    ctx: &Ctx,
    base: &Path,
    at: &[Seg],
    f: super::file::CertFile,
) -> Result<super::Certificate, ConfigError> {
    for (key, value) in [("cert", &f.cert), ("key", &f.key)] {
        if value.is_empty() {
            let mut p = at.to_vec();
            p.push(Key(key));
            return Err(ctx.err(
                &p,
                Target::Value,
                format!("tls {key} is empty; name a PEM file, e.g. {key}: tls/shop.{key}"),
            ));
        }
    }
    let (cert, key) = (resolve(base, &f.cert), resolve(base, &f.key));
    super::certificate::load(&cert, &key).map_err(|message| {
        let mut p = at.to_vec();
        p.push(Key("cert"));
        ctx.err(&p, Target::Value, message)
    })
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn positive(ctx: &Ctx, path: &[Seg], d: Dur, name: &str, example: &str) -> Result<(), ConfigError> {
    if d.0.is_zero() {
        Err(ctx.err(
            path,
            Target::Value,
            format!("{name} must be greater than 0; e.g. {example}"),
        ))
    } else {
        Ok(())
    }
}

/// Validate a customers list found under the top-level `customers:` key.
pub(super) fn customers(
    ctx: &Ctx,
    base: &Path,
    version: u64,
    list: Vec<CustomerFile>,
) -> Result<Customers, ConfigError> {
    // host → (customer index, host index); name → customer index
    let mut hosts: HashMap<String, (usize, usize)> = HashMap::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.into_iter().enumerate() {
        let at = |rest: &[Seg<'static>]| {
            let mut p = vec![Key("customers"), Index(i)];
            p.extend_from_slice(rest);
            p
        };
        let name = c.name.0;
        if let Some(&first) = names.get(&name) {
            return Err(ctx.err(
                &at(&[Key("name")]),
                Target::Value,
                format!(
                    "customer name {name:?} is already used{}; give each customer a unique name",
                    ctx.line_of(&[Key("customers"), Index(first), Key("name")])
                ),
            ));
        }
        names.insert(name.clone(), i);
        if c.hosts.is_empty() {
            return Err(ctx.err(
                &at(&[Key("hosts")]),
                Target::Key,
                format!(
                    "customer {name:?} has no hosts; list the names it serves, \
                     e.g. hosts: [\"shop.example.com\"]"
                ),
            ));
        }
        for (j, h) in c.hosts.iter().enumerate() {
            if let Some(&(fc, fh)) = hosts.get(&h.0) {
                let first_line =
                    ctx.line_of(&[Key("customers"), Index(fc), Key("hosts"), Index(fh)]);
                let message = if fc == i {
                    format!(
                        "host {:?} is listed twice for customer {name:?}{first_line}; \
                         remove one (host names are case-insensitive)",
                        h.0
                    )
                } else {
                    format!(
                        "host {:?} is already served by customer {:?}{first_line}; \
                         each host may belong to one customer only",
                        h.0,
                        out_name(&out, fc)
                    )
                };
                return Err(ctx.err(&at(&[Key("hosts"), Index(j)]), Target::Value, message));
            }
            hosts.insert(h.0.clone(), (i, j));
        }
        let origin = origin(ctx, &at(&[Key("origin")]), &name, c.origin)?;
        let cache = cache_policy(ctx, &at(&[Key("cache"), Key("slice")]), &name, c.cache)?;
        let rules = rules(ctx, &at(&[Key("rules")]), c.rules.unwrap_or_default())?;
        let methods = match c.methods {
            Some(m) => m.into_iter().map(|m| m.0).collect::<Vec<_>>(),
            None => super::file::DEFAULT_METHODS
                .iter()
                .map(|m| m.to_string())
                .collect(),
        }
        .into_iter()
        .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
        .collect();
        let purge_tokens = c
            .purge_tokens
            .iter()
            .filter_map(|t| {
                let mut digest = [0u8; 32];
                for (i, byte) in digest.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(t.0.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some(digest)
            })
            .collect();
        let tls = match c.tls {
            Some(f) => {
                let cert = certificate(ctx, base, &at(&[Key("tls")]), f)?;
                if let Some(host) = c.hosts.iter().find(|h| !super::covers(&cert, &h.0)) {
                    return Err(ctx.err(
                        &at(&[Key("tls"), Key("cert")]),
                        Target::Value,
                        format!(
                            "the certificate {} of customer {name:?} does not cover its host \
                             {:?}; give a certificate whose names include every host \
                             (a wildcard host needs a wildcard certificate)",
                            cert.cert_path.display(),
                            host.0
                        ),
                    ));
                }
                Some(cert)
            }
            None => None,
        };
        out.push(Customer {
            tls,
            name,
            hosts: c.hosts.into_iter().map(|h| h.0).collect(),
            origin,
            cache,
            rules,
            methods,
            purge_tokens,
            purges: Arc::from([]),
        });
    }
    Ok(Customers::new(version, out))
}

/// Validate the synced document's `purges:` and give each customer its own.
pub(super) fn purges(
    ctx: &Ctx,
    customers: &mut Customers,
    list: Vec<super::file::PurgeFile>,
) -> Result<(), ConfigError> {
    let mut per_customer: HashMap<String, Vec<super::DocumentPurge>> = HashMap::new();
    for (i, p) in list.into_iter().enumerate() {
        let at = |rest: &[Seg<'static>]| {
            let mut path = vec![Key("purges"), Index(i)];
            path.extend_from_slice(rest);
            path
        };
        let name = p.customer.0;
        let Some(customer) = customers.by_name(&name).cloned() else {
            return Err(ctx.err(
                &at(&[Key("customer")]),
                Target::Value,
                format!("purge for customer {name:?}, which the document does not list; name one of its customers"),
            ));
        };
        if p.urls.is_empty() && p.prefixes.is_empty() && p.tags.is_empty() && !p.all {
            return Err(ctx.err(
                &at(&[]),
                Target::Key,
                "this purge names nothing; give urls, prefixes, tags, or all: true".into(),
            ));
        }
        let mut urls = Vec::new();
        for (j, url) in p.urls.iter().enumerate() {
            urls.push(
                super::purge_url(customers, &customer, &url.0)
                    .map_err(|why| ctx.err(&at(&[Key("urls"), Index(j)]), Target::Value, why))?,
            );
        }
        for (j, t) in p.tags.iter().enumerate() {
            if !super::is_valid_tag(t) {
                return Err(ctx.err(
                    &at(&[Key("tags"), Index(j)]),
                    Target::Value,
                    format!(
                        "tag {t:?} is not one an origin can set; write 1 to {} bytes without spaces or commas",
                        super::MAX_TAG_LEN
                    ),
                ));
            }
        }
        let at_unix_ns = u64::try_from(p.at.0.timestamp().as_nanosecond()).unwrap_or(0);
        per_customer
            .entry(name.clone())
            .or_default()
            .push(super::DocumentPurge {
                at_unix_ns,
                urls,
                prefixes: p.prefixes.into_iter().map(|u| u.0).collect(),
                tags: p.tags,
                all: p.all,
                soft: p.soft,
            });
    }
    for c in customers.list.iter_mut() {
        if let Some(entries) = per_customer.get(&c.name) {
            Arc::make_mut(c).purges = Arc::from(entries.as_slice());
        }
    }
    Ok(())
}

fn out_name(out: &[Customer], i: usize) -> &str {
    out.get(i).map(|c| c.name.as_str()).unwrap_or("?")
}

fn child<'a>(base: &[Seg<'a>], key: &'a str) -> Vec<Seg<'a>> {
    let mut p = base.to_vec();
    p.push(Key(key));
    p
}

fn origin(ctx: &Ctx, at: &[Seg], customer: &str, f: OriginFile) -> Result<Origin, ConfigError> {
    if f.servers.is_empty() {
        return Err(ctx.err(
            &child(at, "servers"),
            Target::Key,
            format!(
                "customer {customer:?} has no origin servers; list at least one host:port, \
                 e.g. servers: [\"127.0.0.1:8000\"]"
            ),
        ));
    }
    positive(
        ctx,
        &child(at, "connect_timeout"),
        f.connect_timeout,
        "origin.connect_timeout",
        "2s",
    )?;
    positive(
        ctx,
        &child(at, "read_timeout"),
        f.read_timeout,
        "origin.read_timeout",
        "15s",
    )?;
    if f.sni.is_some() && !f.tls {
        return Err(ctx.err(
            &child(at, "sni"),
            Target::Key,
            format!(
                "customer {customer:?} sets origin.sni but not tls: true; \
                 add tls: true or remove sni"
            ),
        ));
    }
    let drop_request_headers = match f.drop_request_headers {
        Some(names) => names.into_iter().map(|n| n.0).collect(),
        None => super::file::DEFAULT_DROP_REQUEST_HEADERS
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
    }
    .into_iter()
    .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
    .collect();
    let health_check = match f.health_check {
        Some(h) => {
            let at = child(at, "health_check");
            positive(
                ctx,
                &child(&at, "interval"),
                h.interval,
                "origin.health_check.interval",
                "5s",
            )?;
            // Default: 2 s, or the interval when that is shorter.
            let timeout = h
                .timeout
                .unwrap_or(Dur(super::file::DEFAULT_CHECK_TIMEOUT.min(h.interval.0)));
            positive(
                ctx,
                &child(&at, "timeout"),
                timeout,
                "origin.health_check.timeout",
                "2s",
            )?;
            if timeout.0 > h.interval.0 {
                return Err(ctx.err(
                    &child(&at, "timeout"),
                    Target::Value,
                    format!(
                        "origin.health_check.timeout ({:?}) is longer than its interval ({:?}); \
                         a check must end before the next one starts, e.g. interval: 5s, timeout: 2s",
                        timeout.0, h.interval.0
                    ),
                ));
            }
            if let Some(code) = h.expect {
                if !(100..=599).contains(&code) {
                    return Err(ctx.err(
                        &child(&at, "expect"),
                        Target::Value,
                        format!("origin.health_check.expect {code} is not an HTTP status; give one from 100 to 599, e.g. expect: 200"),
                    ));
                }
            }
            Some(HealthCheck {
                path: h.path.0,
                interval: h.interval.0,
                timeout: timeout.0,
                expect: h.expect,
            })
        }
        None => None,
    };
    Ok(Origin {
        health_check,
        forwarded: f.forwarded,
        drop_request_headers,
        servers: f.servers.into_iter().map(|s| s.0).collect(),
        tls: f.tls,
        sni: f.sni.map(|s| s.0),
        host_header: f.host_header.map(|h| h.0),
        connect_timeout: f.connect_timeout.0,
        read_timeout: f.read_timeout.0,
    })
}

/// Smallest `cache.slice`: below it the requests per object cost more than they save.
const MIN_SLICE: usize = 64 * 1024;

fn cache_policy(
    ctx: &Ctx,
    slice_at: &[Seg],
    customer: &str,
    f: CachePolicyFile,
) -> Result<CachePolicy, ConfigError> {
    if let Some(slice) = f.slice {
        if slice.0 < MIN_SLICE {
            return Err(ctx.err(
                slice_at,
                Target::Value,
                format!(
                    "customer {customer:?}: cache.slice ({} bytes) is below the 64KiB minimum; \
                     use a few MiB, e.g. slice: 8MiB (or leave it out to fetch objects whole)",
                    slice.0
                ),
            ));
        }
    }
    Ok(CachePolicy {
        default_ttl: f.default_ttl.0,
        override_origin: f.override_origin,
        stale_while_revalidate: f.stale_while_revalidate.0,
        stale_if_error: f.stale_if_error.0,
        stale_if_error_statuses: f.stale_if_error_statuses.into_iter().map(|s| s.0).collect(),
        status_ttl: f.status_ttl.0,
        cache_set_cookie: f.cache_set_cookie,
        query: match f.query {
            QueryFile::Keep => QueryKey::Keep,
            QueryFile::Sort => QueryKey::Sort,
            QueryFile::Drop => QueryKey::Drop,
        },
        slice: f.slice.map(|s| s.0 as u64),
    })
}

fn rules(ctx: &Ctx, at: &[Seg], list: Vec<RuleFile>) -> Result<Vec<Rule>, ConfigError> {
    list.into_iter()
        .enumerate()
        .map(|(index, r)| {
            let mut here = at.to_vec();
            here.push(Index(index));
            rule(ctx, &here, index, r)
        })
        .collect()
}

fn rule(ctx: &Ctx, at: &[Seg], index: usize, r: RuleFile) -> Result<Rule, ConfigError> {
    let matcher = match (r.matcher.path, r.matcher.path_prefix) {
        (Some(p), None) => PathMatch::Exact(p.0),
        (None, Some(p)) => PathMatch::Prefix(p.0),
        (Some(_), Some(_)) => {
            return Err(ctx.err(
                &child(at, "match"),
                Target::Key,
                "a rule matches on path or on path_prefix, not both; keep one".into(),
            ))
        }
        (None, None) => {
            return Err(ctx.err(
                &child(at, "match"),
                Target::Key,
                "a rule's match is empty; add path: /exact or path_prefix: /dir/".into(),
            ))
        }
    };
    if !r.cache {
        let set = [
            ("ttl", r.ttl.is_some()),
            ("expires_at", r.expires_at.is_some()),
            ("stale_while_revalidate", r.stale_while_revalidate.is_some()),
            ("stale_if_error", r.stale_if_error.is_some()),
            ("stale_after_expiry", r.stale_after_expiry.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, is_set)| *is_set) {
            return Err(ctx.err(
                &child(at, key),
                Target::Key,
                format!("{key} has no effect with cache: false; remove one of the two"),
            ));
        }
    }
    if r.stale_after_expiry.is_some() && r.expires_at.is_none() {
        return Err(ctx.err(
            &child(at, "stale_after_expiry"),
            Target::Key,
            "stale_after_expiry has no effect without expires_at; add expires_at or remove it"
                .into(),
        ));
    }
    let active = match r.active {
        Some(a) => Some(active(ctx, &child(at, "active"), a)?),
        None => None,
    };
    Ok(Rule {
        index,
        matcher,
        cache: r.cache,
        ttl: r.ttl.map(|d| d.0),
        stale_while_revalidate: r.stale_while_revalidate.map(|d| d.0),
        stale_if_error: r.stale_if_error.map(|d| d.0),
        expires_at: r.expires_at.map(|i| i.0),
        stale_after_expiry: r.stale_after_expiry.unwrap_or(false),
        active,
    })
}

fn active(ctx: &Ctx, at: &[Seg], a: ActiveFile) -> Result<ActiveWindow, ConfigError> {
    let from = a.from.map(|i| i.0);
    let until = a.until.map(|i| i.0);
    match (&from, &until) {
        (None, None) => {
            return Err(ctx.err(
                at,
                Target::Key,
                "active is empty; give it from:, until: or both".into(),
            ))
        }
        (Some(f), Some(u)) if f.timestamp() >= u.timestamp() => {
            return Err(ctx.err(
                &child(at, "until"),
                Target::Value,
                format!(
                    "active.until ({}) is not after active.from ({}); \
                     the window must end after it starts",
                    u.text, f.text
                ),
            ))
        }
        _ => {}
    }
    Ok(ActiveWindow { from, until })
}
