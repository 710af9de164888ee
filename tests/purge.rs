//! `POST /purge` end to end: who may purge, each kind removing exactly what it names
//! (the origin's request counts prove it), soft purges revalidating and standing in for
//! errors, tags kept from clients, and purges outliving a restart with the disk tier.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{customer, request, Behavior, Holdfast, Origin, Resp};

const HOST: &str = "shop.test";
/// A purge token of customer shop, and the digest its config holds.
const SHOP_TOKEN: &str = "shop-purge-token-1";
const BLOG_TOKEN: &str = "blog-purge-token-1";

fn digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(token.as_bytes());
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn customers(origin: &Origin) -> String {
    format!(
        "customers:\n{}    purge_tokens: [\"{}\"]\n{}    purge_tokens: [\"{}\"]\n",
        customer("shop", HOST, origin.addr, "      stale_if_error: 1d\n", ""),
        digest(SHOP_TOKEN),
        customer("blog", "blog.test", origin.addr, "", ""),
        digest(BLOG_TOKEN),
    )
}

async fn node(origin: &Origin, extra: &str, admin: &str, env: &[(&str, &str)]) -> Holdfast {
    Holdfast::start_with_admin(admin, &format!("{extra}\n{}", customers(origin)), env).await
}

async fn purge(h: &Holdfast, token: Option<&str>, body: &str) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a), ("Content-Type", "application/json")])
        .unwrap_or_default();
    request(
        h.admin,
        "POST",
        &h.admin.to_string(),
        "/purge",
        &headers,
        body.as_bytes(),
    )
    .await
}

/// Fill `paths` (each answered by the origin's fallback) and check each is then a hit.
async fn fill(h: &Holdfast, paths: &[&str]) {
    for p in paths {
        let r = h.get(HOST, p).await;
        assert!(
            r.cache_status().contains("stored"),
            "{p}: {}",
            r.cache_status()
        );
        let r = h.get(HOST, p).await;
        assert!(
            r.cache_status().starts_with("holdfast; hit"),
            "{p}: {}",
            r.cache_status()
        );
    }
}

fn hit(r: &Resp) -> bool {
    r.cache_status().starts_with("holdfast; hit")
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_operator_and_a_customers_own_token_may_purge() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let token = "operator-token-9";
    let h = node(
        &origin,
        "",
        "token_env: HOLDFAST_ADMIN_TOKEN",
        &[("HOLDFAST_ADMIN_TOKEN", token)],
    )
    .await;
    let body = r#"{"customer": "shop", "prefixes": ["/"]}"#;
    assert_eq!(purge(&h, None, body).await.status, 401);
    assert_eq!(purge(&h, Some("nobody's"), body).await.status, 401);
    assert_eq!(purge(&h, Some(BLOG_TOKEN), body).await.status, 403);
    assert_eq!(purge(&h, Some(SHOP_TOKEN), body).await.status, 200);
    assert_eq!(purge(&h, Some(token), body).await.status, 200);
    // The operator may purge any customer; a token holder learns nothing of others.
    let unknown = r#"{"customer": "nobody", "all": true}"#;
    assert_eq!(purge(&h, Some(token), unknown).await.status, 404);
    assert_eq!(purge(&h, Some(SHOP_TOKEN), unknown).await.status, 401);
    for (bad, why) in [
        ("{", "not a purge request"),
        (
            r#"{"customer": "shop", "all": true, "everything": 1}"#,
            "unknown field",
        ),
        (r#"{"customer": "shop"}"#, "nothing to purge"),
        (
            r#"{"customer": "shop", "urls": ["https://blog.test/a"]}"#,
            "not one of customer",
        ),
        (
            r#"{"customer": "shop", "urls": ["/a"]}"#,
            "no scheme or host",
        ),
        (
            r#"{"customer": "shop", "prefixes": ["sale/"]}"#,
            "not a path",
        ),
        (r#"{"customer": "shop", "tags": ["a b"]}"#, "without spaces"),
    ] {
        let r = purge(&h, Some(SHOP_TOKEN), bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.text().contains(why), "{bad}: {}", r.text());
    }
    assert!(!h.log().contains(SHOP_TOKEN) && !h.log().contains(token));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_of_purge_removes_exactly_what_it_names() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let tagged = |tags: &[(&str, &str)]| Behavior::Respond {
        status: 200,
        headers: [("Cache-Control", "max-age=600")]
            .iter()
            .chain(tags)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: b"tagged".to_vec(),
    };
    origin.route("/t/red-blue", tagged(&[("Surrogate-Key", "red blue")]));
    origin.route("/t/blue", tagged(&[("Cache-Tag", "green, blue")]));
    origin.route("/t/none", tagged(&[]));
    let h = node(&origin, "", "", &[]).await;
    let all = [
        "/a",
        "/b",
        "/sale/1",
        "/sale/2",
        "/other",
        "/t/red-blue",
        "/t/blue",
        "/t/none",
    ];
    fill(&h, &all).await;
    // Tags never reach clients, from the full path (the fill) or the fast one (a hit).
    for p in ["/t/red-blue", "/t/blue"] {
        let r = h.get(HOST, p).await;
        assert!(hit(&r));
        assert!(r.header("surrogate-key").is_none() && r.header("cache-tag").is_none());
    }
    let hits_before = origin.hits();

    let url = purge(
        &h,
        None,
        r#"{"customer": "shop", "urls": ["https://shop.test/a"]}"#,
    )
    .await;
    assert_eq!(url.status, 200, "{}", url.text());
    assert!(
        !hit(&h.get(HOST, "/a").await),
        "the purged URL (by https) is gone over http too"
    );
    assert!(hit(&h.get(HOST, "/b").await));

    let prefix = purge(&h, None, r#"{"customer": "shop", "prefixes": ["/sale/"]}"#).await;
    assert_eq!(prefix.status, 200);
    assert!(!hit(&h.get(HOST, "/sale/1").await) && !hit(&h.get(HOST, "/sale/2").await));
    assert!(hit(&h.get(HOST, "/other").await));

    let tag = purge(&h, None, r#"{"customer": "shop", "tags": ["blue"]}"#).await;
    assert_eq!(tag.status, 200);
    assert!(!hit(&h.get(HOST, "/t/red-blue").await));
    assert!(!hit(&h.get(HOST, "/t/blue").await));
    assert!(hit(&h.get(HOST, "/t/none").await));
    // What a purge took is stored again by the next request, and then hit.
    assert!(hit(&h.get(HOST, "/a").await));
    assert_eq!(
        origin.hits(),
        hits_before + 5,
        "/a, /sale/1, /sale/2 and two tagged"
    );

    // Another customer's content is untouched by shop's purges.
    let blog = h.get("blog.test", "/a").await;
    assert!(blog.cache_status().contains("stored"));
    let everything = purge(&h, None, r#"{"customer": "shop", "all": true}"#).await;
    assert_eq!(everything.status, 200);
    for p in ["/b", "/other", "/t/none"] {
        assert!(!hit(&h.get(HOST, p).await), "{p}");
    }
    assert!(hit(&h.get("blog.test", "/a").await));

    // Counted per customer and kind; requests, hits and misses too.
    let metrics = h.metrics().await;
    for (kind, n) in [("url", 1), ("prefix", 1), ("tag", 1), ("all", 1)] {
        let line =
            format!("holdfast_customer_purges_total{{customer=\"shop\",kind=\"{kind}\"}} {n}");
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{customer=\"shop\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} for shop missing"))
    };
    let (requests, hits, misses) = (
        value("holdfast_customer_requests_total"),
        value("holdfast_customer_hits_total"),
        value("holdfast_customer_misses_total"),
    );
    assert_eq!(
        requests,
        hits + misses,
        "all of shop's requests were hits or misses"
    );
    assert_eq!(
        misses,
        origin.hits() as u64 - 1,
        "one of the origin's requests was blog's"
    );
    assert!(value("holdfast_customer_bytes_total") >= 4 * requests);

    // GET /config lists what is in force.
    let config = request(h.admin, "GET", &h.admin.to_string(), "/config", &[], b"").await;
    let config: serde_json::Value = serde_json::from_slice(&config.body).unwrap();
    let purges = config["purges"].as_array().expect("purges listed");
    assert_eq!(purges.len(), 4, "{purges:?}");
    assert_eq!(purges[1]["prefixes"][0], "/sale/");
    assert!(purges
        .iter()
        .all(|p| p["source"] == "admin" && p["customer"] == "shop"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purge_revalidates_and_still_stands_in_for_errors() {
    let origin = Origin::start().await;
    origin.route("/down", Behavior::ok("max-age=600", "kept"));
    let h = node(&origin, "", "", &[]).await;
    fill(&h, &["/down"]).await;
    let r = purge(
        &h,
        None,
        r#"{"customer": "shop", "urls": ["http://shop.test/down"], "soft": true}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The origin now fails: the soft-purged copy stands in for it.
    origin.route("/down", Behavior::status(503, &[], "down"));
    let stale = h.get(HOST, "/down").await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "kept"));
    assert!(
        stale.cache_status().contains("stale-if-error"),
        "{}",
        stale.cache_status()
    );
    let metrics = h.metrics().await;
    for line in [
        "holdfast_customer_stale_total{customer=\"shop\"} 1",
        "holdfast_customer_origin_errors_total{customer=\"shop\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    // Back up: refetched, not served from the purged copy.
    origin.route("/down", Behavior::ok("max-age=600", "fresh"));
    let fresh = h.get(HOST, "/down").await;
    assert_eq!(fresh.text(), "fresh", "{}", fresh.cache_status());
    assert!(hit(&h.get(HOST, "/down").await));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purge_asks_the_origin_with_the_stored_validators() {
    let origin = Origin::start().await;
    origin.route(
        "/doc",
        Behavior::Respond {
            status: 200,
            headers: vec![
                ("Cache-Control".into(), "max-age=600".into()),
                ("ETag".into(), "\"v1\"".into()),
            ],
            body: b"doc-v1".to_vec(),
        },
    );
    let h = node(&origin, "", "", &[]).await;
    fill(&h, &["/doc"]).await;
    let r = purge(
        &h,
        None,
        r#"{"customer": "shop", "urls": ["http://shop.test/doc"], "soft": true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    origin.route(
        "/doc",
        Behavior::Document {
            etag: "\"v1\"".into(),
            body: b"doc-v1".to_vec(),
        },
    );
    let revalidated = h.get(HOST, "/doc").await;
    assert_eq!(revalidated.text(), "doc-v1");
    let seen = origin.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        last.headers.get("if-none-match").map(String::as_str),
        Some("\"v1\""),
        "revalidated, not refetched"
    );
    assert!(hit(&h.get(HOST, "/doc").await), "fresh again after the 304");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hard_purge_of_a_varied_url_takes_every_variant() {
    let origin = Origin::start().await;
    origin.route(
        "/v",
        Behavior::status(
            200,
            &[
                ("Cache-Control", "max-age=600"),
                ("Vary", "Accept-Language"),
            ],
            "v1",
        ),
    );
    let h = node(&origin, "", "", &[]).await;
    let get = |lang: &'static str| {
        let addr = h.addr;
        async move { request(addr, "GET", HOST, "/v", &[("Accept-Language", lang)], b"").await }
    };
    for lang in ["en", "de", "en", "de"] {
        get(lang).await;
    }
    assert_eq!(origin.hits_for("/v"), 2);
    let r = purge(
        &h,
        None,
        r#"{"customer": "shop", "urls": ["http://shop.test/v"]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    for lang in ["en", "de"] {
        assert!(!hit(&get(lang).await), "{lang}");
    }
    assert_eq!(origin.hits_for("/v"), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn purges_outlive_a_restart_with_the_disk_tier() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let disk = "cache: { memory: 8MiB, max_object: 1MiB, disk: { path: cache, size: 16MiB } }";
    let mut h = node(&origin, disk, "", &[]).await;
    fill(&h, &["/sale/1", "/kept"]).await;
    let r = purge(&h, None, r#"{"customer": "shop", "prefixes": ["/sale/"]}"#).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"persisted\":true"), "{}", r.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.signal_and_wait("KILL", Duration::from_secs(5)).is_some());
    origin.stop();
    h.restart().await;
    let gone = h.get(HOST, "/sale/1").await;
    assert_eq!(gone.status, 502, "{}: {}", gone.cache_status(), gone.text());
    let kept = h.get(HOST, "/kept").await;
    assert_eq!((kept.status, kept.text().as_str()), (200, "page"));
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_on_the_data_plane_needs_the_sites_token() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let h = node(&origin, "", "", &[]).await;
    fill(&h, &["/p", "/q"]).await;
    let hits = origin.hits();
    let purge = |token: Option<&'static str>| {
        let addr = h.addr;
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            request(addr, "PURGE", HOST, "/p", &headers, b"").await
        }
    };
    assert_eq!(purge(None).await.status, 401);
    assert_eq!(purge(Some("guess")).await.status, 401);
    assert_eq!(purge(Some(BLOG_TOKEN)).await.status, 403);
    assert!(hit(&h.get(HOST, "/p").await), "refused purges took nothing");
    let ok = purge(Some(SHOP_TOKEN)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(origin.hits(), hits, "the origin never sees PURGE");
    assert!(!hit(&h.get(HOST, "/p").await));
    assert!(hit(&h.get(HOST, "/q").await));
}

/// The first refill after a purge ends its effect, even within the purge's second: the
/// origin's `Date` (whole seconds) must not date the new copy before the purge. Hard:
/// one refetch, then hits; soft: one revalidation, then hits.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_refill_after_a_purge_is_kept_within_the_same_second() {
    let origin = Origin::start().await;
    origin.send_date();
    let v1 = || Behavior::Respond {
        status: 200,
        headers: vec![
            ("Cache-Control".into(), "max-age=600".into()),
            ("ETag".into(), "\"v1\"".into()),
        ],
        body: b"doc-v1".to_vec(),
    };
    origin.route("/hard", v1());
    origin.route("/soft", v1());
    let h = node(&origin, "", "", &[]).await;
    fill(&h, &["/hard", "/soft"]).await;
    origin.route(
        "/soft",
        Behavior::Document {
            etag: "\"v1\"".into(),
            body: b"doc-v1".to_vec(),
        },
    );
    for (path, soft) in [("/hard", false), ("/soft", true)] {
        // The purge and the refill fall in one second, as when a client asks again at
        // once; starting early in a second keeps a slow machine from crossing it.
        while SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_millis()
            > 200
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = format!(
            r#"{{"customer": "shop", "urls": ["http://shop.test{path}"], "soft": {soft}}}"#
        );
        assert_eq!(purge(&h, None, &body).await.status, 200);
        let before = origin.hits_for(path);
        let refill = h.get(HOST, path).await;
        assert_eq!(refill.text(), "doc-v1");
        assert!(!hit(&refill), "{path}: {}", refill.cache_status());
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let again = h.get(HOST, path).await;
            assert!(
                hit(&again),
                "{path} after its refill: {}",
                again.cache_status()
            );
        }
        assert_eq!(
            origin.hits_for(path),
            before + 1,
            "{path}: one origin request"
        );
    }
}
