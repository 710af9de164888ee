//! Origin servers: which one a request goes to, and which failed a moment ago.
//!
//! Each customer has a pool of its `origin.servers`, with its own round-robin counter
//! and, per server, when it last failed. A request picks the next server that is up
//! and that it has not tried yet; when every server is down it still tries them (one of
//! them may be back, and the proxy's stale-if-error shortcut already answers from the
//! store meanwhile). A server that refuses a connection, times out connecting, or
//! cannot be resolved is down for [`DOWN_FOR`]; after that the next request probes it.
//!
//! With `origin.health_check`, [`checks`] asks each server on its own, and a server that
//! fails its check gets no requests until it passes (the same fallback applies when
//! every server fails).
//!
//! Pools are rebuilt when a customer's server list changes (a config swap); servers that
//! stay keep what is known of them. Nothing here blocks: a pick is a few atomics under
//! a read lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use pingora_error::{Error, ErrorType, Result};

use crate::config::Customer;

pub mod checks;

/// How long a server that failed to connect gets no requests (unless all are down).
pub const DOWN_FOR: Duration = Duration::from_secs(5);

/// The bit of server `i` in a request's `tried` mask. A pool of more than 64 servers
/// shares bits (server 64 is server 0's), so a request may skip a server it has not
/// tried; every server still gets its turn in the rotation.
pub fn tried_bit(i: usize) -> u64 {
    1u64 << (i % 64)
}

/// How often the addresses of a server named by a host name are looked up again, in
/// the background ([`checks`]); a failed lookup keeps the last good addresses.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);

/// Every customer's pool, by customer name, and the addresses of servers named by a
/// host name.
#[derive(Debug)]
pub struct Origins {
    pools: RwLock<HashMap<String, Arc<Pool>>>,
    dns: RwLock<HashMap<String, Resolved>>,
    epoch: Instant,
}

/// The last good addresses of one `host:port`.
#[derive(Debug)]
struct Resolved {
    addrs: Vec<std::net::SocketAddr>,
    at: Instant,
    next: AtomicUsize,
}

impl Default for Origins {
    fn default() -> Self {
        Origins {
            pools: RwLock::new(HashMap::new()),
            dns: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }
}

/// One customer's servers.
#[derive(Debug)]
pub struct Pool {
    servers: Vec<Arc<Server>>,
    next: AtomicUsize,
}

/// One origin server and what is known of it.
#[derive(Debug)]
pub struct Server {
    pub addr: String,
    /// Milliseconds since the `Origins` epoch until which it is down (0: up).
    down_until_ms: AtomicU64,
    failures: AtomicU64,
    /// It failed its last active check (`origin.health_check`).
    check_failed: std::sync::atomic::AtomicBool,
}

impl Server {
    fn new(addr: &str) -> Server {
        Server {
            addr: addr.to_string(),
            down_until_ms: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            check_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn up_at(&self, now_ms: u64) -> bool {
        !self.check_failed.load(Ordering::Relaxed)
            && self.down_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Connection failures since the node started (or since it was added).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Origins {
    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The pool of `customer`, built (or rebuilt, keeping the servers that stay) when its
    /// server list is not the pool's.
    pub fn pool(&self, customer: &Customer) -> Arc<Pool> {
        let same = |pool: &Pool| {
            pool.servers.len() == customer.origin.servers.len()
                && pool
                    .servers
                    .iter()
                    .zip(&customer.origin.servers)
                    .all(|(s, addr)| s.addr == *addr)
        };
        if let Some(pool) = self.pools.read().get(&customer.name) {
            if same(pool) {
                return pool.clone();
            }
        }
        let mut pools = self.pools.write();
        if let Some(pool) = pools.get(&customer.name) {
            if same(pool) {
                return pool.clone();
            }
        }
        let old: HashMap<&str, &Arc<Server>> = pools
            .get(&customer.name)
            .map(|p| p.servers.iter().map(|s| (s.addr.as_str(), s)).collect())
            .unwrap_or_default();
        let servers = customer
            .origin
            .servers
            .iter()
            .map(|addr| match old.get(addr.as_str()) {
                Some(kept) => Arc::clone(kept),
                None => Arc::new(Server::new(addr)),
            })
            .collect();
        let pool = Arc::new(Pool {
            servers,
            next: AtomicUsize::new(0),
        });
        pools.insert(customer.name.clone(), pool.clone());
        pool
    }

    /// The next server of `pool` for a request that has tried the servers in `tried`
    /// (a bit per index): the next one up in round-robin order, else the next one not
    /// tried; `None` when every server has been tried.
    pub fn pick(&self, pool: &Pool, tried: u64, now: Instant) -> Option<usize> {
        let n = pool.servers.len();
        if n == 0 {
            return None;
        }
        let now = self.now_ms(now);
        let start = pool.next.fetch_add(1, Ordering::Relaxed);
        let untried = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| tried & tried_bit(i) == 0);
        let mut fallback = None;
        for i in untried {
            if pool.servers[i].up_at(now) {
                return Some(i);
            }
            fallback.get_or_insert(i);
        }
        fallback
    }

    /// Server `i` of `pool` could not be connected to (or resolved).
    pub fn failed(&self, pool: &Pool, i: usize, now: Instant) {
        if let Some(server) = pool.servers.get(i) {
            let until = self.now_ms(now + DOWN_FOR);
            server.down_until_ms.store(until, Ordering::Relaxed);
            server.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Server `i` of `pool` answered: it is up.
    pub fn answered(&self, pool: &Pool, i: usize) {
        if let Some(server) = pool.servers.get(i) {
            if server.down_until_ms.load(Ordering::Relaxed) != 0 {
                server.down_until_ms.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Whether server `i` is up now.
    pub fn is_up(&self, pool: &Pool, i: usize, now: Instant) -> bool {
        pool.servers
            .get(i)
            .is_some_and(|s| s.up_at(self.now_ms(now)))
    }

    /// Server `i` of `pool` passed (`true`) or failed its active check.
    pub fn checked(&self, pool: &Pool, i: usize, passed: bool) {
        if let Some(server) = pool.servers.get(i) {
            let was_failing = server.check_failed.swap(!passed, Ordering::Relaxed);
            if was_failing == passed {
                log::warn!(
                    "origin {}: health check {}",
                    server.addr,
                    if passed {
                        "passes again; it gets requests"
                    } else {
                        "failed; it gets no requests until it passes"
                    }
                );
            }
        }
    }

    /// The address to connect to for `server` (`ip:port`, or `host:port` looked up in
    /// the background): never a lookup on the request path but for a name's first use.
    /// Several addresses are taken in turn.
    pub async fn address(&self, server: &str) -> Result<std::net::SocketAddr> {
        if let Ok(addr) = server.parse() {
            return Ok(addr);
        }
        if let Some(r) = self.dns.read().get(server) {
            if !r.addrs.is_empty() {
                let i = r.next.fetch_add(1, Ordering::Relaxed) % r.addrs.len();
                return Ok(r.addrs[i]);
            }
        }
        let looked_up = lookup(server).await;
        let kept = looked_up.as_ref().cloned().map_err(|e| e.to_string());
        self.store_lookup(server, kept, Instant::now());
        let addrs = looked_up?;
        addrs.first().copied().ok_or_else(|| no_address(server))
    }

    /// Keep the result of looking `server` up: new addresses replace the old, a failure
    /// (or no address) keeps the last good ones. Returns whether it kept old ones.
    pub fn store_lookup(
        &self,
        server: &str,
        result: std::result::Result<Vec<std::net::SocketAddr>, String>,
        now: Instant,
    ) -> bool {
        let mut dns = self.dns.write();
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                dns.insert(
                    server.to_string(),
                    Resolved {
                        addrs,
                        at: now,
                        next: AtomicUsize::new(0),
                    },
                );
                false
            }
            failed => {
                let Some(kept) = dns.get_mut(server) else {
                    return false;
                };
                let reason = failed.err().unwrap_or_else(|| "no address".into());
                log::warn!(
                    "origin {server}: lookup failed ({reason}); keeping its last addresses {:?}",
                    kept.addrs
                );
                // Try again at the next refresh, not at once.
                kept.at = now;
                true
            }
        }
    }

    /// The servers named by a host name whose addresses are older than [`DNS_REFRESH`],
    /// each stamped as being refreshed now (so that one slow lookup is not started twice).
    pub fn names_to_refresh(&self, now: Instant) -> Vec<String> {
        let due = |r: &Resolved| now.saturating_duration_since(r.at) >= DNS_REFRESH;
        if !self.dns.read().values().any(due) {
            return Vec::new();
        }
        let mut dns = self.dns.write();
        dns.iter_mut()
            .filter(|(_, r)| due(r))
            .map(|(name, r)| {
                r.at = now;
                name.clone()
            })
            .collect()
    }

    /// Per server of `customer` (by name): its address, whether it is up, its failures.
    pub fn servers_of(&self, customer: &str) -> Vec<(String, bool, u64)> {
        let now = Instant::now();
        let pools = self.pools.read();
        let Some(pool) = pools.get(customer) else {
            return Vec::new();
        };
        pool.servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.addr.clone(), self.is_up(pool, i, now), s.failures()))
            .collect()
    }
}

/// Look `host:port` up without blocking the runtime; an unresolvable origin is an
/// upstream error (so stale-if-error applies), never a panic.
pub async fn lookup(server: &str) -> Result<Vec<std::net::SocketAddr>> {
    let addrs = tokio::net::lookup_host(server).await.map_err(|e| {
        Error::because(
            ErrorType::ConnectNoRoute,
            format!("cannot resolve origin {server}"),
            e,
        )
        .into_up()
    })?;
    let addrs: Vec<_> = addrs.collect();
    if addrs.is_empty() {
        return Err(no_address(server));
    }
    Ok(addrs)
}

fn no_address(server: &str) -> Box<Error> {
    Error::explain(
        ErrorType::ConnectNoRoute,
        format!("origin {server} resolves to no address"),
    )
    .into_up()
}

impl Pool {
    pub fn server(&self, i: usize) -> Option<&Server> {
        self.servers.get(i).map(|s| s.as_ref())
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Whether a request that tried `tried` has a server left to try.
    pub fn untried(&self, tried: u64) -> bool {
        (0..self.servers.len()).any(|i| tried & tried_bit(i) == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(servers: &[&str]) -> Customer {
        let text = format!(
            "listen: [\"127.0.0.1:8080\"]\ncustomers:\n  - name: shop\n    hosts: [shop.test]\n    origin: {{ servers: [{}] }}\n",
            servers
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let node = crate::config::check_node_text(std::path::Path::new("/n.yaml"), &text).unwrap();
        (*node.customers.list[0]).clone()
    }

    #[test]
    fn round_robin_skips_servers_that_are_down_and_tried() {
        let origins = Origins::default();
        let c = customer(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        let pool = origins.pool(&c);
        let t0 = Instant::now();
        let picks: Vec<usize> = (0..6).filter_map(|_| origins.pick(&pool, 0, t0)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        origins.failed(&pool, 1, t0);
        let picks: Vec<usize> = (0..4).filter_map(|_| origins.pick(&pool, 0, t0)).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        // Tried ones are never picked again by the same request.
        assert_eq!(
            origins.pick(&pool, 0b101, t0),
            Some(1),
            "down, but the last left"
        );
        assert_eq!(origins.pick(&pool, 0b111, t0), None);
        // After DOWN_FOR it is probed again; an answer brings it back at once.
        let later = t0 + DOWN_FOR;
        assert!(origins.is_up(&pool, 1, later));
        origins.failed(&pool, 1, t0);
        origins.answered(&pool, 1);
        assert!(origins.is_up(&pool, 1, t0));
    }

    #[test]
    fn a_failed_lookup_keeps_the_last_good_addresses() {
        let origins = Origins::default();
        let t0 = Instant::now();
        let a: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: std::net::SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert!(!origins.store_lookup("origin.test:80", Err("down".into()), t0));
        assert!(!origins.store_lookup("origin.test:80", Ok(vec![a, b]), t0));
        assert!(origins.names_to_refresh(t0).is_empty());
        assert_eq!(
            origins.names_to_refresh(t0 + DNS_REFRESH),
            vec!["origin.test:80"]
        );
        assert!(
            origins.names_to_refresh(t0 + DNS_REFRESH).is_empty(),
            "not twice"
        );
        // The resolver fails, or answers nothing: the old addresses stay, taken in turn.
        assert!(origins.store_lookup("origin.test:80", Err("SERVFAIL".into()), t0 + DNS_REFRESH));
        assert!(origins.store_lookup("origin.test:80", Ok(vec![]), t0 + DNS_REFRESH));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got: Vec<_> = (0..4)
            .map(|_| rt.block_on(origins.address("origin.test:80")).unwrap())
            .collect();
        assert_eq!(got, vec![a, b, a, b]);
        // New addresses replace them.
        origins.store_lookup("origin.test:80", Ok(vec![b]), t0);
        assert_eq!(rt.block_on(origins.address("origin.test:80")).unwrap(), b);
    }

    #[test]
    fn a_new_server_list_keeps_what_is_known_of_servers_that_stay() {
        let origins = Origins::default();
        let t0 = Instant::now();
        let pool = origins.pool(&customer(&["10.0.0.1:80", "10.0.0.2:80"]));
        origins.failed(&pool, 1, t0);
        assert!(Arc::ptr_eq(
            &pool,
            &origins.pool(&customer(&["10.0.0.1:80", "10.0.0.2:80"]))
        ));
        let swapped = origins.pool(&customer(&["10.0.0.2:80", "10.0.0.9:80"]));
        assert_eq!(swapped.server(0).unwrap().addr, "10.0.0.2:80");
        assert!(!origins.is_up(&swapped, 0, t0), "still down after the swap");
        assert_eq!(swapped.server(0).unwrap().failures(), 1);
        assert!(origins.is_up(&swapped, 1, t0));
    }
}

#[cfg(test)]
mod many {
    use super::*;

    #[test]
    fn pools_of_more_than_64_servers_rotate_through_all() {
        let servers: Vec<String> = (0..70)
            .map(|i| format!("\"10.0.{}.{}:80\"", i / 256, i % 256))
            .collect();
        let text = format!(
            "listen: [\"127.0.0.1:8080\"]\ncustomers:\n  - name: shop\n    hosts: [shop.test]\n    origin: {{ servers: [{}] }}\n",
            servers.join(", ")
        );
        let node = crate::config::check_node_text(std::path::Path::new("/n.yaml"), &text).unwrap();
        let origins = Origins::default();
        let pool = origins.pool(&node.customers.list[0]);
        let t0 = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..70 {
            seen.insert(origins.pick(&pool, 0, t0).unwrap());
        }
        assert_eq!(seen.len(), 70);
    }
}

/// `holdfast_origin_server_up` and `holdfast_origin_server_failures_total`, per customer
/// and server, on `/metrics`.
impl crate::metrics::Collector for Origins {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::metrics::{family, Kind};
        let now = Instant::now();
        let pools = self.pools.read();
        let mut names: Vec<&String> = pools.keys().collect();
        names.sort();
        let servers = || {
            names.iter().flat_map(|name| {
                let pool = &pools[*name];
                pool.servers
                    .iter()
                    .enumerate()
                    .map(move |(i, s)| (name.as_str(), pool, i, s))
            })
        };
        family(
            &mut enc,
            "holdfast_origin_server_up",
            "Whether an origin server takes requests (1) or failed to connect a moment ago (0).",
            Kind::Gauge,
            servers().map(|(name, pool, i, s)| {
                (
                    [("customer", name), ("server", s.addr.as_str())],
                    u64::from(self.is_up(pool, i, now)),
                )
            }),
        )?;
        family(
            &mut enc,
            "holdfast_origin_server_failures_total",
            "Connections to an origin server that failed.",
            Kind::Counter,
            servers().map(|(name, _, _, s)| {
                (
                    [("customer", name), ("server", s.addr.as_str())],
                    s.failures(),
                )
            }),
        )
    }
}
