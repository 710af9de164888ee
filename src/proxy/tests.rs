//! Unit tests of the phases' shared decisions, on an edge whose clock the test sets:
//! nothing here sleeps to let time pass.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::clock::TestClock;
use super::stored::{Judgement, StoredCopy};
use super::Edge;
use crate::purge::{Entry, Purges};

/// 2026-12-01T00:00:00Z, where each test's clock starts.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_083_200)
}

const NODE: &str = r#"
listen: ["127.0.0.1:8080"]
customers:
  - name: shop
    hosts: ["shop.test"]
    origin: { servers: ["127.0.0.1:9"] }
    cache: { stale_if_error: 1h }
    rules:
      - match: { path_prefix: /sale/ }
        expires_at: "2026-12-01T00:10:00Z"
"#;

/// An edge over the customers of [`NODE`], its purge markers and its clock.
fn edge() -> (Edge, Arc<Purges>, Arc<TestClock>) {
    let node = crate::config::check_node_text(std::path::Path::new("node.yaml"), NODE)
        .expect("the test's node config");
    let customers = Arc::new(arc_swap::ArcSwap::new(node.customers.clone()));
    let store: &'static crate::storage::MemoryStore =
        Box::leak(Box::new(crate::storage::MemoryStore::new(1 << 20, 1 << 16)));
    let purges = Arc::new(Purges::open(None));
    let mut edge = Edge::new(
        &node,
        customers,
        store,
        Arc::default(),
        purges.clone(),
        Arc::default(),
    );
    let clock = Arc::new(TestClock::at(t0()));
    edge.clock = clock.clone();
    (edge, purges, clock)
}

/// A copy stored at `t0()`, fresh for a minute.
fn copy(headers: &http::HeaderMap) -> StoredCopy<'_> {
    StoredCopy {
        headers,
        validated: t0(),
        created: t0(),
        fresh_until: t0() + Duration::from_secs(60),
        stale_if_error: Duration::from_secs(3600),
    }
}

fn judge(edge: &Edge, path: &str, copy: &StoredCopy) -> Judgement {
    let customers = edge.customers.load();
    let customer = customers.route("shop.test").expect("shop");
    let now = edge.clock.now();
    let rule = crate::policy::matching_rule(customer, path, now);
    edge.judge(customer, rule, "shop-key", path, copy, now)
}

#[test]
fn a_copy_is_fresh_then_stale_and_stands_in_at_once_only_after_a_failure() {
    let (edge, _, clock) = edge();
    let headers = http::HeaderMap::new();
    let copy = copy(&headers);
    clock.advance(Duration::from_secs(30));
    assert_eq!(judge(&edge, "/a", &copy), Judgement::Fresh);
    clock.advance(Duration::from_secs(31));
    assert_eq!(judge(&edge, "/a", &copy), Judgement::Stale);
    // The origin fails: within the backoff the copy is served without asking it again.
    edge.health.failed("shop", 503, edge.clock.instant());
    assert_eq!(judge(&edge, "/a", &copy), Judgement::StaleShortcut);
    clock.advance(super::health::BACKOFF);
    assert_eq!(judge(&edge, "/a", &copy), Judgement::Stale);
    // Past its stale-if-error window, even a failing origin gets asked.
    edge.health.failed("shop", 503, edge.clock.instant());
    clock.advance(Duration::from_secs(3600));
    edge.health.failed("shop", 503, edge.clock.instant());
    assert_eq!(judge(&edge, "/a", &copy), Judgement::Stale);
}

#[test]
fn purges_come_first_and_only_reach_copies_stored_before_them() {
    let (edge, purges, clock) = edge();
    let headers = http::HeaderMap::new();
    let copy = copy(&headers);
    let purge = |at: SystemTime, soft: bool| Entry {
        customer: "shop".into(),
        at_unix_ns: crate::purge::unix_ns(at),
        keys: vec!["shop-key".into()],
        prefixes: Vec::new(),
        tags: Vec::new(),
        all: false,
        soft,
    };
    // Issued before the copy was stored: nothing to purge.
    purges
        .apply(purge(t0() - Duration::from_secs(1), false))
        .unwrap();
    assert_eq!(judge(&edge, "/a", &copy), Judgement::Fresh);
    let soft_at = t0() + Duration::from_millis(300);
    purges.apply(purge(soft_at, true)).unwrap();
    assert_eq!(
        judge(&edge, "/a", &copy),
        Judgement::SoftPurged { at: soft_at }
    );
    purges
        .apply(purge(t0() + Duration::from_secs(1), false))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    // A purge wins over freshness and over a failing origin alike.
    edge.health.failed("shop", 502, edge.clock.instant());
    assert_eq!(judge(&edge, "/a", &copy), Judgement::Purged);
}

#[test]
fn a_rules_expiry_ends_a_copy_that_claims_freshness_past_it() {
    let (edge, _, clock) = edge();
    let headers = http::HeaderMap::new();
    let mut copy = copy(&headers);
    copy.fresh_until = t0() + Duration::from_secs(3600);
    clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(judge(&edge, "/sale/banner.png", &copy), Judgement::Fresh);
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        judge(&edge, "/sale/banner.png", &copy),
        Judgement::ExpiredByRule {
            at: t0() + Duration::from_secs(600),
            serve_stale: false
        }
    );
    // Another path is not under that rule.
    assert_eq!(judge(&edge, "/a", &copy), Judgement::Fresh);
}
