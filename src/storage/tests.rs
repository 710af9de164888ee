use super::handlers::MemoryHit;
use super::*;
use bytes::Bytes;
use pingora_cache::storage::MissFinishType;
use pingora_cache::trace::Span;
use pingora_http::ResponseHeader;
use proptest::prelude::*;

const KIB: usize = 1024;

fn store(memory: usize, max_object: usize) -> &'static MemoryStore {
    Box::leak(Box::new(MemoryStore::new(memory, max_object)))
}

fn span() -> SpanHandle {
    Span::inactive().handle()
}

fn header() -> ResponseHeader {
    let mut header = ResponseHeader::build(200, None).expect("status");
    header
        .append_header("Content-Type", "text/plain")
        .expect("header");
    header.append_header("ETag", "\"v1\"").expect("header");
    header
}

/// A meta admitted `age` ago, fresh for `ttl` from then.
fn meta_aged(ttl: Duration, age: Duration) -> CacheMeta {
    let created = SystemTime::now() - age;
    CacheMeta::new(created + ttl, created, 30, 600, header())
}

fn meta() -> CacheMeta {
    meta_aged(Duration::from_secs(300), Duration::ZERO)
}

fn key(path: &str) -> CacheKey {
    CacheKey::new(path, "test")
}

/// Write `body` through a miss handler and finish it; returns the size `finish` reported.
async fn put(store: &'static MemoryStore, key: &CacheKey, meta: &CacheMeta, body: &[u8]) -> usize {
    let mut miss = store
        .get_miss_handler(key, meta, &span())
        .await
        .expect("miss handler");
    // Two chunks, to exercise buffering.
    let (a, b) = body.split_at(body.len() / 2);
    miss.write_body(Bytes::copy_from_slice(a), false)
        .await
        .expect("write");
    miss.write_body(Bytes::copy_from_slice(b), true)
        .await
        .expect("write");
    match miss.finish().await.expect("finish") {
        MissFinishType::Created(size) => size,
        MissFinishType::Appended(..) => panic!("a fill creates, it never appends"),
    }
}

/// Look up and read the whole body.
async fn get(store: &'static MemoryStore, key: &CacheKey) -> Option<(CacheMeta, Bytes)> {
    let (meta, mut hit) = store.lookup(key, &span()).await.expect("lookup")?;
    let mut body = Vec::new();
    while let Some(chunk) = hit.read_body().await.expect("read") {
        body.extend_from_slice(&chunk);
    }
    Some((meta, Bytes::from(body)))
}

/// Present, without touching the entry's eviction state.
fn stored(store: &MemoryStore, key: &CacheKey) -> bool {
    store.entries.peek(&key.combined_bin()).is_some()
}

fn header_estimate(header: &ResponseHeader) -> usize {
    let reason = header.get_reason_phrase().map_or(0, str::len);
    header
        .headers
        .iter()
        .map(|(name, value)| 2 * name.as_str().len() + value.len() + 128)
        .sum::<usize>()
        + reason
}

#[tokio::test]
async fn lookup_of_an_unknown_key_misses() {
    let store = store(64 * KIB, KIB);
    assert!(store
        .lookup(&key("/none"), &span())
        .await
        .expect("lookup")
        .is_none());
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_finished_fill_is_served_with_its_body_and_meta() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/a");
    let mut stored_meta = meta_aged(Duration::from_secs(300), Duration::from_secs(20));
    let variance = [7u8; 16];
    stored_meta.set_variance(variance);
    put(store, &k, &stored_meta, b"hello world").await;

    let (meta, body) = get(store, &k).await.expect("hit");
    assert_eq!(body, Bytes::from_static(b"hello world"));
    assert_eq!(meta.fresh_until(), stored_meta.fresh_until());
    assert_eq!(meta.created(), stored_meta.created());
    assert!(meta.age().abs_diff(stored_meta.age()) <= Duration::from_secs(1));
    assert_eq!(meta.fresh_sec(), stored_meta.fresh_sec());
    assert_eq!(meta.stale_while_revalidate_sec(), 30);
    assert_eq!(meta.stale_if_error_sec(), 600);
    assert_eq!(meta.variance(), Some(variance));
    assert_eq!(meta.epoch_override(), None);
    assert_eq!(meta.response_header().status, 200);
    // Stored framed by the length of its complete body.
    let mut framed = stored_meta.headers().clone();
    framed.insert(http::header::CONTENT_LENGTH, "11".parse().unwrap());
    assert_eq!(meta.headers(), &framed);
    assert_eq!(store.len(), 1);
}

/// The lines of a stored response's wire form, as text.
fn wire_text(stored: &StoredResponse) -> String {
    let wire = stored
        .wire()
        .expect("a header that keeps its case has its wire form");
    String::from_utf8(wire.bytes().to_vec()).expect("text")
}

#[tokio::test]
async fn a_fill_framed_anew_by_its_length_has_its_wire_form_framed_too() {
    let store = store(64 * KIB, 4 * KIB);
    // `header()` with `field` added, stored with an 11-byte body.
    let fill = |path: &'static str, field: (&'static str, &'static str)| async move {
        let mut header = header();
        header.append_header(field.0, field.1).expect("header");
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let k = key(path);
        put(store, &k, &meta, b"hello world").await;
        store.peek(&k).expect("stored")
    };
    let stored = fill("/chunked", ("Transfer-Encoding", "chunked")).await;
    assert_eq!(
        wire_text(&stored),
        "Content-Type: text/plain\r\nETag: \"v1\"\r\nContent-Length: 11\r\n"
    );
    // Framed by the right length already: stored as it came.
    let stored = fill("/framed", ("content-length", "11")).await;
    assert_eq!(
        wire_text(&stored),
        "Content-Type: text/plain\r\nETag: \"v1\"\r\ncontent-length: 11\r\n"
    );
    // Framed by a length the body does not have: the body's length wins.
    let stored = fill("/wrong", ("Content-Length", "12")).await;
    assert!(
        wire_text(&stored).ends_with("Content-Length: 11\r\n"),
        "{}",
        wire_text(&stored)
    );
    assert_eq!(
        stored
            .header()
            .headers
            .get("content-length")
            .map(|v| v.as_bytes()),
        Some(&b"11"[..])
    );
}

#[tokio::test]
async fn hits_share_the_stored_body_instead_of_copying_it() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/shared");
    put(store, &k, &meta(), &[42u8; 2048]).await;
    let (_, mut first) = store
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    let (_, mut second) = store
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    let a = first.read_body().await.expect("read").expect("body");
    let b = second.read_body().await.expect("read").expect("body");
    assert_eq!(a.len(), 2048);
    assert_eq!(a.as_ptr(), b.as_ptr());
    assert!(first.read_body().await.expect("read").is_none());
}

#[tokio::test]
async fn stored_headers_do_not_pin_the_buffer_they_were_parsed_from() {
    // Pingora parses origin headers as slices of the connection's read buffer.
    let buffer = Bytes::from(vec![b'a'; 16 * KIB]);
    let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
    let mut parsed = ResponseHeader::build(200, Some(2)).expect("header");
    parsed
        .append_header(
            "X-Shared",
            http::HeaderValue::from_maybe_shared(buffer.slice(10..20)).expect("value"),
        )
        .expect("append");
    let now = SystemTime::now();
    let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, parsed);
    let given = meta.headers().get("x-shared").expect("given value");
    assert!(
        range.contains(&(given.as_bytes().as_ptr() as usize)),
        "premise"
    );

    let stored = store(64 * KIB, 4 * KIB);
    let k = key("/pinned");
    put(stored, &k, &meta, b"body").await;
    let (found, _) = get(stored, &k).await.expect("hit");
    let value = found.headers().get("x-shared").expect("stored value");
    assert_eq!(value.as_bytes(), b"aaaaaaaaaa");
    assert!(!range.contains(&(value.as_bytes().as_ptr() as usize)));
}

/// A header's fields: names as sent, with their values, in order.
type WireFields = Vec<(Vec<u8>, Vec<u8>)>;

/// Status, reason and fields (duplicates included) of `header`.
fn wire_fields(header: &ResponseHeader) -> (u16, Option<String>, WireFields) {
    let fields = if header.has_case() {
        header
            .case_header_iter()
            .map(|(n, v)| (n.as_slice().to_vec(), v.as_bytes().to_vec()))
            .collect()
    } else {
        header
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    };
    let reason = header.get_reason_phrase().map(str::to_string);
    (header.status.as_u16(), reason, fields)
}

#[test]
fn an_admitted_header_is_the_given_one_packed_in_one_buffer() {
    let mut given = ResponseHeader::build(203, None).expect("status");
    given
        .set_reason_phrase(Some("Fine Enough"))
        .expect("reason");
    given
        .append_header("Content-Type", "text/plain")
        .expect("field");
    given.append_header("X-Mixed-Case", "a").expect("field");
    given.append_header("set-cookie", "s=1").expect("field");
    given.append_header("x-mixed-case", "b").expect("field");
    given
        .append_header("Cache-Control", "max-age=60")
        .expect("field");
    given.append_header("Content-Length", "5").expect("field");
    given
        .append_header("Cache-Status", "shield; hit")
        .expect("field");
    let mut no_case = ResponseHeader::build_no_case(200, None).expect("status");
    no_case.append_header("x-one", "1").expect("field");
    no_case.append_header("x-one", "2").expect("field");
    no_case.append_header("etag", "\"e\"").expect("field");
    for header in [given, no_case] {
        let now = SystemTime::now();
        let meta = CacheMeta::new(now, now, 0, 0, header.clone());
        let parts = entry::MetaParts::from_meta(&meta);
        let admitted = parts.header.clone();
        assert_eq!(wire_fields(&admitted), wire_fields(&header));
        assert_eq!(admitted.has_case(), header.has_case());
        // A header that keeps its case comes with its fields as HTTP/1 sends them, in
        // the map's order, and its values are slices of those very lines.
        match parts.wire() {
            Some(wire) => {
                assert!(header.has_case());
                let lines: Vec<(Vec<u8>, Vec<u8>)> = wire
                    .fields()
                    .map(|f| {
                        let line = &wire.bytes()[f.line.clone()];
                        let expected = [f.name, b": ", f.value, b"\r\n"].concat();
                        assert_eq!(line, expected.as_slice());
                        (f.name.to_vec(), f.value.to_vec())
                    })
                    .collect();
                assert_eq!(lines, wire_fields(&header).2);
                for name in [
                    http::header::CONTENT_LENGTH,
                    "cache-status".parse().expect("name"),
                ] {
                    assert_eq!(wire.first(&name), Some(admitted.headers.get(&name)));
                }
                assert_eq!(wire.first(&http::header::ETAG), None);
                let bytes = wire.bytes().as_ptr_range();
                for value in admitted.headers.values() {
                    assert!(bytes.contains(&value.as_bytes().as_ptr()));
                }
            }
            None => assert!(!header.has_case()),
        }
        // Every value lies in one span no longer than all names and values together.
        let values: Vec<&[u8]> = admitted.headers.values().map(|v| v.as_bytes()).collect();
        let start = values
            .iter()
            .map(|v| v.as_ptr() as usize)
            .min()
            .expect("fields");
        let end = values
            .iter()
            .map(|v| v.as_ptr() as usize + v.len())
            .max()
            .expect("fields");
        let packed: usize = admitted
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + ": \r\n".len())
            .sum();
        assert!(
            end - start <= packed,
            "values spread over {} bytes",
            end - start
        );
    }
}

#[tokio::test]
async fn weight_is_body_plus_header_estimate_plus_overhead() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/weighed");
    let size = put(store, &k, &meta(), &[1u8; 1000]).await;
    // The key's text is kept beside its hash (for the disk tier), and weighed.
    let key_text = k.primary_key_str().unwrap_or_default().len();
    let mut framed = header();
    framed.insert_header("Content-Length", 1000).unwrap();
    let expected = 1000 + header_estimate(&framed) + key_text + MemoryStore::per_entry_overhead();
    assert_eq!(size, expected);
    assert_eq!(store.used_bytes(), expected);
    let (_, hit) = store
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    assert_eq!(hit.get_eviction_weight(), expected);
}

#[tokio::test]
async fn streaming_ten_times_the_bound_through_evicts_and_never_exceeds_it() {
    let memory = 64 * KIB;
    let store = store(memory, 1024 * KIB);
    let m = meta();
    let mut last = Vec::new();
    for i in 0..640 {
        let k = key(&format!("/obj/{i}"));
        let size = put(store, &k, &m, &[(i % 251) as u8; KIB]).await;
        assert!(size > KIB, "entry {i} was not stored");
        assert!(
            store.used_bytes() <= memory,
            "over the bound after entry {i}"
        );
        assert!(
            stored(store, &k),
            "entry {i} missing right after its insert"
        );
        last.push(k);
    }
    assert!(store.evictions() > 0);
    // Nothing was purged, replaced or turned away: every entry is either here or evicted.
    assert_eq!(store.len() as u64 + store.evictions(), 640);
    assert!(store.len() > 16, "only {} entries left", store.len());
    let (_, body) = get(store, &last[639])
        .await
        .expect("the newest entry is served");
    assert_eq!(body, Bytes::from(vec![(639 % 251) as u8; KIB]));
}

#[tokio::test]
async fn a_body_over_max_object_is_not_stored_and_not_an_error() {
    let store = store(64 * KIB, 100);
    let k = key("/big");
    assert_eq!(put(store, &k, &meta(), &[0u8; 101]).await, 0);
    assert!(get(store, &k).await.is_none());
    assert!(store.is_empty());

    let at_limit = key("/at-limit");
    assert!(put(store, &at_limit, &meta(), &[0u8; 100]).await > 0);
    assert!(get(store, &at_limit).await.is_some());
}

#[tokio::test]
async fn a_content_length_over_max_object_is_not_buffered() {
    let store = store(64 * KIB, 100);
    let k = key("/declared-big");
    let mut m = meta();
    m.response_header_mut()
        .insert_header("Content-Length", "5000")
        .expect("header");
    assert_eq!(put(store, &k, &m, b"short").await, 0);
    assert!(get(store, &k).await.is_none());
}

#[tokio::test]
async fn an_oversized_refill_leaves_the_stored_version_alone() {
    let store = store(64 * KIB, 100);
    let k = key("/grew");
    put(store, &k, &meta(), b"small").await;
    assert_eq!(put(store, &k, &meta(), &[0u8; 500]).await, 0);
    let (_, body) = get(store, &k).await.expect("old version");
    assert_eq!(body, Bytes::from_static(b"small"));
}

#[tokio::test]
async fn an_entry_heavier_than_a_shard_admits_is_skipped_without_evicting() {
    let store = store(8 * KIB, 1024 * KIB);
    let small = key("/small");
    put(store, &small, &meta(), b"keep me").await;
    assert_eq!(
        put(store, &key("/huge"), &meta(), &[0u8; 10 * KIB]).await,
        0
    );
    assert!(stored(store, &small));
    assert_eq!(store.evictions(), 0);
}

#[tokio::test]
async fn a_zero_byte_store_stores_nothing() {
    let store = store(0, KIB);
    let k = key("/nothing");
    assert_eq!(put(store, &k, &meta(), b"x").await, 0);
    assert!(get(store, &k).await.is_none());
    assert_eq!(store.used_bytes(), 0);
}

#[tokio::test]
async fn an_empty_body_is_stored_and_reads_as_eof() {
    let store = store(64 * KIB, KIB);
    let k = key("/empty");
    assert!(put(store, &k, &meta(), b"").await > 0);
    let (_, mut hit) = store
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    assert!(hit.read_body().await.expect("read").is_none());
}

#[tokio::test]
async fn a_dropped_miss_handler_stores_nothing() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/abandoned");
    let mut miss = store
        .get_miss_handler(&k, &meta(), &span())
        .await
        .expect("miss handler");
    miss.write_body(Bytes::from_static(b"partial"), false)
        .await
        .expect("write");
    drop(miss);
    assert!(get(store, &k).await.is_none());
    assert!(store.is_empty());
    assert_eq!(store.used_bytes(), 0);
}

#[tokio::test]
async fn update_meta_without_an_entry_reports_false() {
    let store = store(64 * KIB, 64 * KIB);
    let never = key("/never");
    assert!(!store
        .update_meta(&never, &meta(), &span())
        .await
        .expect("update"));

    let purged = key("/purged");
    put(store, &purged, &meta(), b"x").await;
    let (m, _) = get(store, &purged).await.expect("hit");
    let compact = purged.to_compact();
    store
        .purge(
            PurgeTarget::Active(&compact),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .expect("purge");
    assert!(!store
        .update_meta(&purged, &m, &span())
        .await
        .expect("update"));

    let evicted = key("/evicted");
    put(store, &evicted, &meta(), b"x").await;
    let (m, _) = get(store, &evicted).await.expect("hit");
    for i in 0..1000 {
        if !stored(store, &evicted) {
            break;
        }
        // Fillers read back right away are promoted over the untouched entry.
        let filler = key(&format!("/filler/{i}"));
        put(store, &filler, &meta(), &[0u8; 20 * KIB]).await;
        get(store, &filler).await;
    }
    assert!(!stored(store, &evicted), "never evicted");
    assert!(!store
        .update_meta(&evicted, &m, &span())
        .await
        .expect("update"));
    assert!(get(store, &evicted).await.is_none());
}

#[tokio::test]
async fn update_meta_after_revalidation_refreshes_freshness_and_age() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/revalidated");
    let admitted = meta_aged(Duration::from_secs(60), Duration::from_secs(100));
    put(store, &k, &admitted, b"body").await;
    let (_, mut hit) = store
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    let before = hit.read_body().await.expect("read").expect("body");

    // What pingora's revalidate_cache_meta hands over: a new freshness, the same admission.
    let (mut m, _) = get(store, &k).await.expect("hit");
    assert!(m.age() >= Duration::from_secs(99));
    let fresh_until = SystemTime::now() + Duration::from_secs(3600);
    m.update_freshness(fresh_until, 5, 7);
    assert!(store.update_meta(&k, &m, &span()).await.expect("update"));

    let (seen, _) = get(store, &k).await.expect("hit");
    assert_eq!(seen.fresh_until(), fresh_until);
    assert_eq!(seen.stale_while_revalidate_sec(), 5);
    assert_eq!(seen.stale_if_error_sec(), 7);
    assert_eq!(seen.created(), admitted.created());
    assert!(seen.age() <= Duration::from_secs(1), "age {:?}", seen.age());
    assert_eq!(seen.fresh_sec(), m.fresh_sec());

    let (_, mut hit) = store
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    let after = hit.read_body().await.expect("read").expect("body");
    assert_eq!(
        after.as_ptr(),
        before.as_ptr(),
        "the body is kept, not copied"
    );
}

#[tokio::test]
async fn update_meta_from_a_replaced_admission_changes_nothing() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/raced");
    put(
        store,
        &k,
        &meta_aged(Duration::from_secs(60), Duration::from_secs(10)),
        b"old",
    )
    .await;
    let (mut old, _) = get(store, &k).await.expect("hit");
    put(store, &k, &meta(), b"new").await;

    old.update_freshness(SystemTime::now() + Duration::from_secs(3600), 0, 0);
    assert!(!store.update_meta(&k, &old, &span()).await.expect("update"));
    let (seen, body) = get(store, &k).await.expect("hit");
    assert_eq!(body, Bytes::from_static(b"new"));
    assert_eq!(seen.stale_if_error_sec(), 600);
}

#[tokio::test]
async fn update_meta_with_heavier_headers_stays_under_the_bound() {
    let memory = 16 * KIB;
    let store = store(memory, 4 * KIB);
    for i in 0..11 {
        put(store, &key(&format!("/n/{i}")), &meta(), &[0u8; KIB]).await;
    }
    let k = key("/n/10");
    let (mut m, _) = get(store, &k).await.expect("hit");
    let weight = |store: &MemoryStore| store.entries.peek(&k.combined_bin()).map(|e| e.weight());
    let before = weight(store).expect("stored");
    for i in 0..20 {
        m.response_header_mut()
            .append_header(format!("X-Extra-{i}"), "a fairly long header value")
            .expect("header");
    }
    assert!(store.update_meta(&k, &m, &span()).await.expect("update"));
    assert!(store.used_bytes() <= memory);
    let (seen, body) = get(store, &k).await.expect("still stored");
    assert_eq!(body.len(), KIB);
    assert!(seen.headers().contains_key("x-extra-19"));
    assert!(weight(store).expect("stored") > before);
}

#[tokio::test]
async fn purge_removes_the_entry() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/p");
    put(store, &k, &meta(), b"x").await;
    let compact = k.to_compact();
    let target = PurgeTarget::Active(&compact);
    let outcome = store.purge(target, PurgeType::Invalidation, &span()).await;
    assert_eq!(outcome.expect("purge"), PurgeOutcome::Purged(None));
    assert!(get(store, &k).await.is_none());
    let again = store.purge(target, PurgeType::Invalidation, &span()).await;
    assert_eq!(again.expect("purge"), PurgeOutcome::NotFound);
    assert_eq!(store.used_bytes(), 0);
}

#[tokio::test]
async fn purge_reaches_exactly_the_variant_it_names() {
    let store = store(64 * KIB, 4 * KIB);
    let primary = key("/v");
    let mut variant = key("/v");
    variant.set_variance_key([9u8; 16]);
    put(store, &primary, &meta(), b"primary").await;
    put(store, &variant, &meta(), b"variant").await;

    let exact = CacheEntryKey::KeyOnly(variant.to_compact());
    let outcome = store
        .purge(PurgeTarget::Exact(&exact), PurgeType::Invalidation, &span())
        .await;
    assert_eq!(outcome.expect("purge"), PurgeOutcome::Purged(None));
    assert!(get(store, &variant).await.is_none());
    assert!(get(store, &primary).await.is_some());

    let identified = CacheEntryKey::identified(
        primary.to_compact(),
        pingora_cache::eviction::CacheEntryId::new(1),
    );
    let outcome = store
        .purge(
            PurgeTarget::Exact(&identified),
            PurgeType::Invalidation,
            &span(),
        )
        .await;
    assert_eq!(outcome.expect("purge"), PurgeOutcome::NotFound);
    assert!(get(store, &primary).await.is_some());
}

#[tokio::test]
async fn a_fill_under_way_at_a_purge_is_not_stored() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/inflight");
    let mut miss = store
        .get_miss_handler(&k, &meta(), &span())
        .await
        .expect("miss handler");
    miss.write_body(Bytes::from_static(b"pre-purge"), true)
        .await
        .expect("write");
    let compact = k.to_compact();
    store
        .purge(
            PurgeTarget::Active(&compact),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .expect("purge");
    assert!(matches!(
        miss.finish().await.expect("finish"),
        MissFinishType::Created(0)
    ));
    assert!(get(store, &k).await.is_none());

    // A fill that starts after the purge is stored as usual.
    put(store, &k, &meta(), b"post-purge").await;
    let (_, body) = get(store, &k).await.expect("hit");
    assert_eq!(body, Bytes::from_static(b"post-purge"));
}

#[tokio::test]
async fn expire_keeps_the_body_but_makes_it_stale() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/expire");
    put(store, &k, &meta(), b"body").await;
    let used = store.used_bytes();
    let compact = k.to_compact();
    let outcome = store.expire(PurgeTarget::Active(&compact), &span()).await;
    assert_eq!(outcome.expect("expire"), PurgeOutcome::Expired);

    let (m, body) = get(store, &k).await.expect("still stored");
    assert_eq!(body, Bytes::from_static(b"body"));
    assert!(!m.is_fresh(SystemTime::now() + Duration::from_millis(1)));
    assert!(m.serve_stale_while_revalidate(SystemTime::now()));
    assert_eq!(store.used_bytes(), used);

    let missing = key("/expire/none").to_compact();
    let outcome = store.expire(PurgeTarget::Active(&missing), &span()).await;
    assert_eq!(outcome.expect("expire"), PurgeOutcome::NotFound);
}

#[tokio::test]
async fn seek_selects_a_range_and_rejects_one_out_of_range() {
    let store = store(64 * KIB, 4 * KIB);
    let k = key("/range");
    put(store, &k, &meta(), b"0123456789").await;
    let (_, mut hit) = store
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    assert!(hit.can_seek());

    hit.seek(5, None).expect("seek");
    assert_eq!(
        hit.read_body().await.expect("read"),
        Some(Bytes::from_static(b"56789"))
    );
    assert_eq!(hit.read_body().await.expect("read"), None);

    hit.seek(4, Some(5)).expect("seek");
    assert_eq!(
        hit.read_body().await.expect("read"),
        Some(Bytes::from_static(b"4"))
    );

    hit.seek(2, Some(100)).expect("end is clamped");
    assert_eq!(
        hit.read_body().await.expect("read"),
        Some(Bytes::from_static(b"23456789"))
    );

    assert!(hit.seek(10, None).is_err());
    assert!(hit.seek(100, Some(200)).is_err());
    assert!(hit.seek(6, Some(3)).is_err());
}

/// A body of `len` bytes that is not one repeated byte, so an offset mix-up shows.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn store_with_files(memory: usize, max_object: usize, files: usize) -> &'static MemoryStore {
    let budget = FileBudget::with_limit(files);
    Box::leak(Box::new(MemoryStore::with_file_budget(
        memory, max_object, budget,
    )))
}

#[tokio::test]
async fn a_large_body_lives_in_a_sealed_memory_file_holding_exactly_it() {
    use std::os::unix::fs::FileExt;
    let store = store_with_files(4096 * KIB, 1024 * KIB, 8);
    let k = key("/large");
    let body = patterned(FILE_BACKED_MIN + 1000);
    put(store, &k, &meta(), &body).await;
    assert_eq!(store.memory_files(), 1);

    let stored = store.peek(&k).expect("stored");
    let file = stored.body_file().expect("a large body is file-backed");
    assert_eq!(file.metadata().expect("metadata").len(), body.len() as u64);
    let mut in_file = vec![0; body.len()];
    file.read_exact_at(&mut in_file, 0).expect("read the file");
    assert_eq!(in_file, body);
    // Sealed: neither written over nor grown, so what is being sent cannot change.
    assert!(file.write_at(b"x", 0).is_err());
    assert!(file.write_at(b"x", body.len() as u64).is_err());
    assert!(file.set_len(1).is_err());

    // pingora-cache's full path reads the same bytes, through the mapping, and ranges of them.
    let (_, whole) = get(store, &k).await.expect("hit");
    assert_eq!(&whole[..], &body[..]);
    let (_, mut hit) = store
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    let (start, end) = (body.len() - 1010, body.len() - 1000);
    hit.seek(start, Some(end)).expect("seek");
    let range = hit.read_body().await.expect("read").expect("range");
    assert_eq!(&range[..], &body[start..end]);
}

#[tokio::test]
async fn a_memory_file_is_charged_whole_pages_and_closed_when_its_last_holder_lets_go() {
    let store = store_with_files(4096 * KIB, 1024 * KIB, 8);
    let k = key("/large");
    let len = FILE_BACKED_MIN + 1;
    let weighed = put(store, &k, &meta(), &patterned(len)).await;
    let page = rustix::param::page_size();
    assert!(
        weighed >= len.div_ceil(page) * page + MemoryStore::per_entry_overhead(),
        "{weighed} bytes charged for a {len} byte body in a memory file"
    );

    // A hit being written keeps the file open past a purge; the last holder closes it.
    let sending = store.peek(&k).expect("stored");
    let compact = k.to_compact();
    let target = PurgeTarget::Active(&compact);
    let outcome = store.purge(target, PurgeType::Invalidation, &span()).await;
    assert_eq!(outcome.expect("purge"), PurgeOutcome::Purged(None));
    assert!(store.peek(&k).is_none());
    assert_eq!(store.memory_files(), 1);
    assert_eq!(sending.body_len(), len);
    drop(sending);
    assert_eq!(store.memory_files(), 0);
}

#[tokio::test]
async fn bodies_stay_on_the_heap_below_the_threshold_or_past_the_file_budget() {
    let store = store_with_files(4096 * KIB, 1024 * KIB, 1);
    let small = patterned(FILE_BACKED_MIN - 1);
    put(store, &key("/small"), &meta(), &small).await;
    assert!(store
        .peek(&key("/small"))
        .expect("stored")
        .body_file()
        .is_none());
    assert_eq!(store.memory_files(), 0);

    let large = patterned(FILE_BACKED_MIN);
    put(store, &key("/first"), &meta(), &large).await;
    put(store, &key("/second"), &meta(), &large).await;
    assert_eq!(store.memory_files(), 1, "the budget allows one file");
    let first = store.peek(&key("/first")).expect("stored");
    let second = store.peek(&key("/second")).expect("stored");
    assert!(first.body_file().is_some());
    assert!(second.body_file().is_none(), "past the budget: on the heap");
    assert_eq!(&first.body().unwrap()[..], &large[..]);
    assert_eq!(&second.body().unwrap()[..], &large[..]);
    assert_eq!(
        &get(store, &key("/small")).await.expect("hit").1[..],
        &small[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fills_and_hits_hold_the_bound() {
    let memory = 2 * 1024 * KIB;
    let store = store(memory, 16 * KIB);
    let tasks = (0..8u64).map(|task| {
        tokio::spawn(async move {
            let m = meta();
            for i in 0..200u64 {
                let id = (task * 37 + i * 11) % 600;
                let len = 512 + ((task * 7919 + i * 104_729) % (12 * KIB as u64)) as usize;
                put(
                    store,
                    &key(&format!("/c/{id}")),
                    &m,
                    &vec![(id % 251) as u8; len],
                )
                .await;
                assert!(store.used_bytes() <= memory);

                let other = (id + 13) % 600;
                if let Some((_, body)) = get(store, &key(&format!("/c/{other}"))).await {
                    assert!(
                        body.iter().all(|&b| b == (other % 251) as u8),
                        "mixed bodies"
                    );
                }
                if i % 50 == 0 {
                    let compact = key(&format!("/c/{other}")).to_compact();
                    store
                        .purge(
                            PurgeTarget::Active(&compact),
                            PurgeType::Invalidation,
                            &span(),
                        )
                        .await
                        .expect("purge");
                }
            }
        })
    });
    for task in tasks.collect::<Vec<_>>() {
        task.await.expect("task panicked");
    }
    assert!(store.used_bytes() <= memory);
    assert!(store.evictions() > 0);
    assert!(!store.is_empty());
}

#[test]
fn the_bound_is_memory_rounded_to_whole_shards() {
    let store = MemoryStore::new(256 * 1024 * KIB + 3, 16 * 1024 * KIB);
    assert!(store.capacity() <= 256 * 1024 * KIB + 3);
    assert_eq!(store.capacity() % store.entries.num_shards(), 0);
    assert!(store.max_entry_weight > 16 * 1024 * KIB as u64);
}

proptest! {
    #[test]
    fn any_range_is_a_slice_or_an_error(
        len in 0usize..64,
        start in 0usize..80,
        end in proptest::option::of(0usize..100),
    ) {
        let body = Bytes::from((0..len).map(|b| b as u8).collect::<Vec<u8>>());
        let mut hit = MemoryHit::new(body.clone(), 1);
        match hit.select(start, end) {
            Ok(()) => {
                let stop = end.map_or(len, |end| end.min(len));
                prop_assert!(start < len && start <= stop);
                let expected = (stop > start).then(|| body.slice(start..stop));
                prop_assert_eq!(hit.next_chunk(), expected);
                prop_assert_eq!(hit.next_chunk(), None);
            }
            Err(_) => prop_assert!(start >= len || end.is_some_and(|end| end.min(len) < start)),
        }
    }
}

#[test]
fn a_key_with_its_hash_computed_once_hashes_as_pingora_would() {
    use pingora_cache::key::CacheHashKey;
    let text = "4:shop:5:https:16:shop.example.com:6:/a?b=c:".to_string();
    let plain = CacheKey::new(text.clone(), "");
    let once = super::key(text);
    assert_eq!(once.primary_bin(), plain.primary_bin());
    assert_eq!(once.combined_bin(), plain.combined_bin());
    assert_eq!(once.primary_key_str(), plain.primary_key_str());
}

proptest! {
    /// Whatever the key text (empty, one block, several), the hash the store and the
    /// disk tier's file names use is the one pingora-cache computes.
    #[test]
    fn every_key_hashes_as_pingora_would(text in ".{0,400}") {
        use pingora_cache::key::CacheHashKey;
        let plain = CacheKey::new(text.clone(), "");
        let ours = super::key(text);
        prop_assert_eq!(ours.primary_bin(), plain.primary_bin());
    }
}
