//! Purge markers: "every object of this customer that matches, stored (or last
//! revalidated) before T, is purged", checked at hit time.
//!
//! A purge never scans the store. It adds a marker per URL, path prefix, tag or customer
//! ("all"), and every hit asks [`Purges::check`] whether a marker newer than its copy
//! matches it: a hard marker makes the copy a miss (the proxy then removes it), a soft one
//! makes it stale at once (revalidated before any other use, still good for
//! stale-if-error). So a purge costs the same whatever the store holds, reaches both tiers
//! and every `Vary` variant alike, and applies to copies read back from disk after a
//! restart (the markers are kept in the disk tier's directory, see [`Purges::open`]).
//!
//! Costs at hit time, per customer that has markers: a URL marker is one hash lookup of
//! the cache key's text; prefix markers one lookup per distinct prefix length; tag
//! markers one lookup per tag of the copy (at most [`MAX_TAGS`]). A customer without
//! markers costs one hash lookup.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Tags of one object that purges look at: the first 64 of `Surrogate-Key` and
/// `Cache-Tag` together; later ones are ignored (a tag purge does not reach an object
/// through them).
pub const MAX_TAGS: usize = 64;
pub use crate::config::{is_valid_tag, MAX_TAG_LEN};

/// The header fields tags come from; never sent to clients.
pub const TAG_FIELDS: [&str; 2] = ["surrogate-key", "cache-tag"];

/// One marker: objects stored before `at` are purged (`soft`: made stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub at: SystemTime,
    pub soft: bool,
}

/// What a marker does to a copy at hit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No marker applies: the copy is as stored.
    Keep,
    /// A hard purge applies: the copy must not be used; remove it.
    Gone,
    /// A soft purge applies: the copy is stale since `at`.
    Stale { at: SystemTime },
}

/// One purge, as asked (admin `POST /purge`) and as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub customer: String,
    /// When it was issued, in nanoseconds since the Unix epoch.
    pub at_unix_ns: u64,
    /// Cache key texts (both schemes of each URL).
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub soft: bool,
}

impl Entry {
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.at_unix_ns)
    }
}

/// Marker tables are looked up on every hit: hashed with quick_cache's fast hasher
/// (the store's), not SipHash.
type Table = HashMap<String, Marker, quick_cache::DefaultHashBuilder>;

/// The markers of one customer.
#[derive(Debug, Default, Clone)]
struct CustomerMarkers {
    all: Option<Marker>,
    keys: Table,
    prefixes: Table,
    /// The distinct lengths of `prefixes`, so a path is looked up once per length.
    prefix_lengths: BTreeSet<usize>,
    tags: Table,
}

/// Keep the stronger of two markers for the same target: the later one; at the same
/// instant, hard over soft.
fn merge(slot: &mut Option<Marker>, new: Marker) {
    *slot = Some(match *slot {
        Some(old) if old.at > new.at || (old.at == new.at && !old.soft) => old,
        _ => new,
    });
}

fn merge_into(map: &mut Table, key: &str, new: Marker) {
    let mut slot = map.get(key).copied();
    merge(&mut slot, new);
    if let Some(m) = slot {
        map.insert(key.to_string(), m);
    }
}

impl CustomerMarkers {
    fn add(&mut self, e: &Entry) {
        let m = Marker {
            at: e.at(),
            soft: e.soft,
        };
        if e.all {
            merge(&mut self.all, m);
        }
        for k in &e.keys {
            merge_into(&mut self.keys, k, m);
        }
        for p in &e.prefixes {
            merge_into(&mut self.prefixes, p, m);
            self.prefix_lengths.insert(p.len());
        }
        for t in &e.tags {
            merge_into(&mut self.tags, t, m);
        }
    }

    fn check<'a, I: Iterator<Item = &'a str>>(
        &self,
        key_text: &str,
        path: &str,
        tags: impl FnOnce() -> I,
        stored: SystemTime,
    ) -> Verdict {
        let mut verdict = Verdict::Keep;
        let mut consider = |m: Option<&Marker>| {
            let Some(m) = m.filter(|m| m.at > stored) else {
                return;
            };
            verdict = match verdict {
                Verdict::Gone => Verdict::Gone,
                _ if !m.soft => Verdict::Gone,
                Verdict::Stale { at } if at <= m.at => Verdict::Stale { at },
                _ => Verdict::Stale { at: m.at },
            };
        };
        consider(self.all.as_ref());
        consider(self.keys.get(key_text));
        for &len in self.prefix_lengths.range(..=path.len()) {
            if let Some(prefix) = path.get(..len) {
                consider(self.prefixes.get(prefix));
            }
        }
        if !self.tags.is_empty() {
            for tag in tags() {
                consider(self.tags.get(tag));
            }
        }
        verdict
    }

    fn len(&self) -> usize {
        usize::from(self.all.is_some()) + self.keys.len() + self.prefixes.len() + self.tags.len()
    }
}

/// All customers' markers, read by every hit without a lock.
#[derive(Debug, Default)]
struct Markers(HashMap<String, CustomerMarkers, quick_cache::DefaultHashBuilder>);

/// Markers for every customer: what a node whose purge file was unreadable at start
/// must assume of everything stored before that start.
#[derive(Debug, Default)]
struct Everyone(Option<Marker>);

impl Verdict {
    /// What two sets of markers say together: gone if either says so, else the earlier
    /// stale instant.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Gone, _) | (_, Verdict::Gone) => Verdict::Gone,
            (Verdict::Stale { at: a }, Verdict::Stale { at: b }) => Verdict::Stale { at: a.min(b) },
            (Verdict::Stale { at }, Verdict::Keep) | (Verdict::Keep, Verdict::Stale { at }) => {
                Verdict::Stale { at }
            }
            (Verdict::Keep, Verdict::Keep) => Verdict::Keep,
        }
    }
}

/// The purge markers of this node, and where they are kept.
pub struct Purges {
    markers: ArcSwap<Markers>,
    everyone: Everyone,
    /// Every entry applied, in order (what the file holds), behind the writers' lock.
    log: Mutex<Vec<Entry>>,
    file: Option<PathBuf>,
}

impl Purges {
    /// Markers kept in `dir/purges.json` (the disk tier's directory), loaded from it now;
    /// `None`: kept in memory only (without a disk tier nothing outlives the process).
    /// A file that cannot be read or parsed does not stop the node; since starting
    /// without the purges it held could serve purged objects from disk, everything stored
    /// before now is then treated as purged (hard), with an error in the log.
    pub fn open(dir: Option<&Path>) -> Purges {
        let file = dir.map(|d| d.join("purges.json"));
        let mut everyone = Everyone::default();
        let read = match &file {
            Some(f) => match std::fs::read(f) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e.to_string()),
            },
            None => Ok(Vec::new()),
        };
        let entries: Vec<Entry> = match read {
            Ok(entries) => entries,
            Err(e) => {
                log::error!(
                    "purges: cannot use {} ({e}); treating every object stored before now \
                     as purged, so that none that was purged comes back",
                    file.as_deref()
                        .map_or_else(String::new, |f| f.display().to_string())
                );
                everyone.0 = Some(Marker {
                    at: SystemTime::now(),
                    soft: false,
                });
                Vec::new()
            }
        };
        let mut markers = Markers::default();
        for e in &entries {
            markers.0.entry(e.customer.clone()).or_default().add(e);
        }
        Purges {
            markers: ArcSwap::from_pointee(markers),
            everyone,
            log: Mutex::new(entries),
            file,
        }
    }

    /// Apply `entry`: written to the file first (when there is one), then in force. When
    /// the file cannot be written the purge is in force all the same (taking content back
    /// matters more than keeping the record), and the error says it will not outlive a
    /// restart.
    pub fn apply(&self, entry: Entry) -> std::io::Result<()> {
        let mut log = self.log.lock();
        log.push(entry);
        let written = match &self.file {
            Some(file) => serde_json::to_vec(&*log)
                .map_err(std::io::Error::other)
                .and_then(|text| crate::sync::write_atomic(file, &text)),
            None => Ok(()),
        };
        let mut markers = Markers(self.markers.load().0.clone());
        if let Some(e) = log.last() {
            markers.0.entry(e.customer.clone()).or_default().add(e);
        }
        self.markers.store(Arc::new(markers));
        written
    }

    /// What the markers of `customer` say of a copy whose cache key text is `key_text`,
    /// for `path`, tagged `tags()` (only asked for when tag markers exist), stored (or
    /// last revalidated) at `stored`.
    pub fn check<'a, I: Iterator<Item = &'a str>>(
        &self,
        customer: &str,
        key_text: &str,
        path: &str,
        tags: impl FnOnce() -> I,
        stored: SystemTime,
    ) -> Verdict {
        if self.everyone.0.is_some_and(|m| m.at > stored) {
            return Verdict::Gone;
        }
        match self.markers.load().0.get(customer) {
            Some(m) => m.check(key_text, path, tags, stored),
            None => Verdict::Keep,
        }
    }

    /// Markers for `entries` (a synced document's), kept in memory only: the document
    /// itself is what outlives a restart (`cache_file`).
    pub fn of(entries: &[Entry]) -> Purges {
        let p = Purges::open(None);
        for e in entries {
            let _ = p.apply(e.clone());
        }
        p
    }

    /// The entries in force, in the order they were applied.
    pub fn entries(&self) -> Vec<Entry> {
        self.log.lock().clone()
    }

    /// Markers in force, over all customers.
    pub fn len(&self) -> usize {
        self.markers
            .load()
            .0
            .values()
            .map(CustomerMarkers::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Nanoseconds since the Unix epoch, as entries keep their `at`.
/// `holdfast_purge_markers` on `/metrics`.
pub struct PurgeMetrics(pub std::sync::Arc<Purges>);

impl std::fmt::Debug for PurgeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PurgeMetrics")
    }
}

impl crate::metrics::Collector for PurgeMetrics {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        crate::metrics::gauge(
            &mut enc,
            "holdfast_purge_markers",
            "Purge markers in force (URLs, prefixes, tags, whole customers).",
            self.0.len() as u64,
        )
    }
}

pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Remove the copies stored under `keys` now, in both tiers, as an invalidation: fills
/// under way do not store them back. A hard URL purge's markers already keep them from
/// being served, so this frees them; an unsafe method's success invalidates its URL so.
pub async fn remove_now(
    store: &'static dyn crate::storage::CacheStore,
    keys: &[pingora_cache::CacheKey],
) {
    let span = pingora_cache::trace::Span::inactive();
    for key in keys {
        let target = pingora_cache::PurgeTarget::Active(&key.to_compact());
        if let Err(e) = store
            .purge(
                target,
                pingora_cache::PurgeType::Invalidation,
                &span.handle(),
            )
            .await
        {
            log::warn!("cache: removing {:?} failed: {e}", key.primary_key_str());
        }
    }
}

/// The cache keys one URL of `customer` is stored under: one per scheme, since a purge
/// of a URL takes it back whichever scheme it was asked by.
pub fn url_keys(
    customer: &crate::config::Customer,
    host: &str,
    path: &str,
    query: Option<&str>,
) -> Vec<pingora_cache::CacheKey> {
    ["http", "https"]
        .iter()
        .map(|scheme| {
            crate::storage::key(crate::policy::cache_key(
                customer, scheme, host, path, query,
            ))
        })
        .collect()
}

/// The cache keys of `url`, a whole http(s) URL of one of `customer`'s hosts (as
/// `customers` routes them); otherwise why not, in words for the one who wrote it.
pub fn keys_of_url(
    customers: &crate::config::Customers,
    customer: &crate::config::Customer,
    url: &str,
) -> Result<Vec<pingora_cache::CacheKey>, String> {
    let url = crate::config::purge_url(customers, customer, url)?;
    Ok(url_keys(
        customer,
        &url.host,
        &url.path,
        url.query.as_deref(),
    ))
}

/// The marker entry of `purge`, one of `customer`'s synced document's.
pub fn entry_of(customer: &crate::config::Customer, purge: &crate::config::DocumentPurge) -> Entry {
    Entry {
        customer: customer.name.clone(),
        at_unix_ns: purge.at_unix_ns,
        keys: purge
            .urls
            .iter()
            .flat_map(|u| url_keys(customer, &u.host, &u.path, u.query.as_deref()))
            .filter_map(|k| k.primary_key_str().map(str::to_string))
            .collect(),
        prefixes: purge.prefixes.clone(),
        tags: purge.tags.clone(),
        all: purge.all,
        soft: purge.soft,
    }
}

/// The markers of the purges customers' synced documents list (`Customer::purges`, plain
/// data in the config): made for a customer the first time one of its copies is checked
/// after a document brings its list, and kept while that list is the one in force.
#[derive(Default)]
pub struct DocumentPurges(ArcSwap<HashMap<String, DocumentMarkers>>);

/// One customer's list and the markers made from it.
#[derive(Clone)]
struct DocumentMarkers {
    list: Arc<[crate::config::DocumentPurge]>,
    markers: Arc<Purges>,
}

impl DocumentPurges {
    /// What the purges `customer`'s document lists say of a copy (see [`Purges::check`]).
    pub fn check<'a, I: Iterator<Item = &'a str>>(
        &self,
        customer: &crate::config::Customer,
        key_text: &str,
        path: &str,
        tags: impl FnOnce() -> I,
        stored: SystemTime,
    ) -> Verdict {
        if customer.purges.is_empty() {
            return Verdict::Keep;
        }
        self.markers_of(customer)
            .check(&customer.name, key_text, path, tags, stored)
    }

    fn markers_of(&self, customer: &crate::config::Customer) -> Arc<Purges> {
        if let Some(made) = self.0.load().get(&customer.name) {
            if Arc::ptr_eq(&made.list, &customer.purges) {
                return made.markers.clone();
            }
        }
        let entries: Vec<Entry> = customer
            .purges
            .iter()
            .map(|p| entry_of(customer, p))
            .collect();
        let made = DocumentMarkers {
            list: customer.purges.clone(),
            markers: Arc::new(Purges::of(&entries)),
        };
        self.0.rcu(|all| {
            let mut all = HashMap::clone(all);
            all.insert(customer.name.clone(), made.clone());
            all
        });
        made.markers
    }
}

/// Whether `token` (a digest) is one of `customer`'s purge tokens, compared in constant
/// time.
pub fn holds(customer: &crate::config::Customer, token: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    customer
        .purge_tokens
        .iter()
        .fold(false, |found, t| found | bool::from(t.ct_eq(token)))
}

impl std::fmt::Debug for Purges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purges")
            .field("markers", &self.len())
            .field("file", &self.file)
            .finish()
    }
}

/// The tags of a stored answer: `Surrogate-Key` split on spaces and `Cache-Tag` on
/// commas, at most [`MAX_TAGS`], each at most [`MAX_TAG_LEN`] bytes.
pub fn tags(headers: &http::HeaderMap) -> impl Iterator<Item = &str> {
    let surrogate = headers
        .get_all(TAG_FIELDS[0])
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(' '));
    let cache_tag = headers
        .get_all(TAG_FIELDS[1])
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    surrogate
        .chain(cache_tag)
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TAG_LEN)
        .take(MAX_TAGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn entry(at: u64, f: impl FnOnce(&mut Entry)) -> Entry {
        let mut e = Entry {
            customer: "shop".into(),
            at_unix_ns: (t(at).duration_since(UNIX_EPOCH).unwrap().as_nanos()) as u64,
            keys: vec![],
            prefixes: vec![],
            tags: vec![],
            all: false,
            soft: false,
        };
        f(&mut e);
        e
    }

    fn check(p: &Purges, key: &str, path: &str, tags: &[&str], stored: u64) -> Verdict {
        p.check("shop", key, path, || tags.iter().copied(), t(stored))
    }

    #[test]
    fn a_marker_reaches_what_was_stored_before_it_and_nothing_after() {
        let p = Purges::open(None);
        p.apply(entry(100, |e| e.keys = vec!["k1".into()])).unwrap();
        assert_eq!(check(&p, "k1", "/a", &[], 99), Verdict::Gone);
        assert_eq!(
            check(&p, "k1", "/a", &[], 100),
            Verdict::Keep,
            "stored at the instant"
        );
        assert_eq!(check(&p, "k1", "/a", &[], 101), Verdict::Keep);
        assert_eq!(check(&p, "k2", "/a", &[], 99), Verdict::Keep);
        assert_eq!(
            p.check("blog", "k1", "/a", || [].into_iter(), t(99)),
            Verdict::Keep,
            "customers never share markers"
        );
    }

    #[test]
    fn prefixes_tags_all_and_soft() {
        let p = Purges::open(None);
        p.apply(entry(100, |e| e.prefixes = vec!["/sale/".into()]))
            .unwrap();
        p.apply(entry(200, |e| {
            e.tags = vec!["red".into()];
            e.soft = true;
        }))
        .unwrap();
        assert_eq!(check(&p, "k", "/sale/a.png", &[], 50), Verdict::Gone);
        assert_eq!(check(&p, "k", "/sale", &[], 50), Verdict::Keep);
        assert_eq!(check(&p, "k", "/sales/a", &[], 50), Verdict::Keep);
        assert_eq!(
            check(&p, "k", "/x", &["blue", "red"], 150),
            Verdict::Stale { at: t(200) }
        );
        // Hard wins over soft.
        assert_eq!(check(&p, "k", "/sale/a", &["red"], 50), Verdict::Gone);
        p.apply(entry(300, |e| e.all = true)).unwrap();
        assert_eq!(check(&p, "k", "/anything", &[], 250), Verdict::Gone);
        assert_eq!(check(&p, "k", "/anything", &[], 301), Verdict::Keep);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn markers_outlive_a_restart_in_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = Purges::open(Some(dir.path()));
        p.apply(entry(100, |e| e.tags = vec!["t".into()])).unwrap();
        let again = Purges::open(Some(dir.path()));
        assert_eq!(check(&again, "k", "/", &["t"], 1), Verdict::Gone);
        assert_eq!(check(&again, "k", "/", &[], 1), Verdict::Keep);
        // A corrupt file: everything stored before the start is gone, later is not.
        std::fs::write(dir.path().join("purges.json"), b"[{").unwrap();
        let corrupt = Purges::open(Some(dir.path()));
        let before = SystemTime::now() - Duration::from_secs(1);
        assert_eq!(
            corrupt.check("any", "k", "/", || [].into_iter(), before),
            Verdict::Gone
        );
        let after = SystemTime::now() + Duration::from_secs(1);
        assert_eq!(
            corrupt.check("any", "k", "/", || [].into_iter(), after),
            Verdict::Keep
        );
    }

    #[test]
    fn tags_come_from_both_fields_within_bounds() {
        let mut h = http::HeaderMap::new();
        h.append("surrogate-key", "a b  c".parse().unwrap());
        h.append("cache-tag", "d, e".parse().unwrap());
        let long = "x".repeat(MAX_TAG_LEN + 1);
        h.append("cache-tag", long.parse().unwrap());
        assert_eq!(tags(&h).collect::<Vec<_>>(), ["a", "b", "c", "d", "e"]);
        let many: String = (0..100).map(|i| format!("t{i} ")).collect();
        let mut h = http::HeaderMap::new();
        h.append("surrogate-key", many.parse().unwrap());
        assert_eq!(tags(&h).count(), MAX_TAGS);
    }

    #[test]
    fn a_documents_purges_are_made_markers_and_made_again_for_a_new_list() {
        let node = crate::config::check_node_text(
            Path::new("node.yaml"),
            "listen: [\"127.0.0.1:8080\"]\ncustomers:\n  - name: shop\n    hosts: [shop.test]\n    origin: { servers: [\"127.0.0.1:9\"] }\n",
        )
        .unwrap();
        let mut shop = (*node.customers.list[0]).clone();
        let document = DocumentPurges::default();
        let key = url_keys(&shop, "shop.test", "/a", None)[1]
            .primary_key_str()
            .unwrap()
            .to_string();
        let check = |shop: &crate::config::Customer, stored| {
            document.check(shop, &key, "/a", std::iter::empty, t(stored))
        };
        // No list: nothing is purged, and no markers are made.
        assert_eq!(check(&shop, 10), Verdict::Keep);
        let purge = |at: u64, soft| crate::config::DocumentPurge {
            at_unix_ns: unix_ns(t(at)),
            urls: vec![crate::config::PurgeUrl {
                host: "shop.test".into(),
                path: "/a".into(),
                query: None,
            }],
            prefixes: Vec::new(),
            tags: Vec::new(),
            all: false,
            soft,
        };
        shop.purges = Arc::from([purge(100, false)]);
        assert_eq!(check(&shop, 10), Verdict::Gone);
        assert_eq!(check(&shop, 200), Verdict::Keep, "stored after the purge");
        // The next document lists another purge: its markers replace the first's.
        shop.purges = Arc::from([purge(100, true)]);
        assert_eq!(check(&shop, 10), Verdict::Stale { at: t(100) });
    }
}
