//! `holdfast explain`'s text form of an [`Explanation`], for a terminal.

use std::fmt::Write as _;

use super::{Explanation, TimeView};

/// The explanation as text for a terminal.
pub fn render_text(e: &Explanation) -> String {
    let mut s = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(s, "{label:<15}{value}");
    };
    line("URL", &e.url);
    line("At", &e.at);
    line(
        "Customer",
        &format!(
            "{} (host {}, config version {})",
            e.customer, e.host, e.config_version
        ),
    );
    line(
        "Rule",
        &match &e.rule {
            Some(r) => format!("rules[{}] {}", r.index, r.matcher),
            None => "none applies; the customer's cache: settings decide".into(),
        },
    );
    match &e.bypass {
        Some(why) => line(
            "Cache",
            &format!("bypassed: {why}; requests go to the origin"),
        ),
        None => line("Cache", "yes"),
    }
    if let Some(slice) = &e.slice {
        line(
            "Slices",
            &format!(
                "GET and HEAD are answered from pieces of {} (Range requests to the origin), each stored apart",
                slice.text
            ),
        );
    }
    if let Some(ttl) = &e.ttl {
        let origin = if ttl.origin_headers_win {
            "used when the origin sends no Cache-Control/Expires"
        } else {
            "wins over the origin's Cache-Control/Expires (override_origin)"
        };
        let value = if ttl.seconds == 0 {
            format!(
                "0s ({}): responses without origin freshness are not stored",
                ttl.source
            )
        } else {
            format!("{} ({}), {origin}", ttl.text, ttl.source)
        };
        line("TTL", &value);
    }
    if let (Some(swr), Some(sie)) = (&e.stale_while_revalidate, &e.stale_if_error) {
        line(
            "Stale windows",
            &format!(
                "while revalidating {} ({}), on origin error {} ({})",
                swr.text, swr.source, sie.text, sie.source
            ),
        );
    }
    if let Some(r) = &e.rule {
        if let Some(x) = &r.expires_at {
            let mut block = Vec::new();
            time_lines(&x.time, &mut block);
            let after = if x.stale_after_expiry {
                "stale copies may still be served after it (stale_after_expiry: true)"
            } else {
                "nothing is served after it, not even stale"
            };
            block.push(if x.time.passed {
                format!("passed {}; {after}", x.time.relative)
            } else {
                format!("not yet passed ({}); {after}", x.time.relative)
            });
            for (i, l) in block.iter().enumerate() {
                line(if i == 0 { "Expires at" } else { "" }, l);
            }
        }
        if let Some(w) = &r.active {
            line("Active window", &format!("{}: {}", w.state, w.summary));
        }
    }
    if let Some(store) = &e.if_stored_now {
        let value = if store.stored {
            let mut v = format!(
                "fresh until {}",
                store.fresh_until.as_deref().unwrap_or("?")
            );
            if let Some(cap) = store.capped_by {
                let _ = write!(v, " (cut short by {cap})");
            }
            let _ = write!(
                v,
                ", then stale-while-revalidate {}, stale-if-error {}",
                store.stale_while_revalidate.as_deref().unwrap_or("0s"),
                store.stale_if_error.as_deref().unwrap_or("0s")
            );
            v
        } else {
            format!(
                "not stored ({})",
                store.reason.as_deref().unwrap_or("uncacheable")
            )
        };
        line("Stored now", &value);
    }
    line("Stored copies", &e.stored_copies);
    if let Some(change) = &e.next_rule_change {
        line(
            "Next change",
            &format!(
                "{} = {} ({}), {}",
                change.utc, change.local, change.abbreviation, change.relative
            ),
        );
    }
    if e.matching_rules.is_empty() {
        line("Matching rules", "none");
    }
    for (i, r) in e.matching_rules.iter().enumerate() {
        let mut v = format!("rules[{}] {}", r.index, r.matcher);
        let _ = write!(v, ": {}", r.status);
        if !r.cache {
            v.push_str(", cache: false");
        }
        if let Some(ttl) = &r.ttl {
            let _ = write!(v, ", ttl {ttl}");
        }
        if let Some(x) = &r.expires_at {
            let _ = write!(v, ", expires_at {} ({})", x.time.utc, x.time.relative);
        }
        if let Some(w) = &r.active {
            let _ = write!(v, ", window {}", w.summary);
        }
        line(if i == 0 { "Matching rules" } else { "" }, &v);
    }
    s
}

fn time_lines(t: &TimeView, out: &mut Vec<String>) {
    out.push(format!("{} (UTC)", t.utc));
    out.push(format!(
        "{} ({}, the rule's own zone)",
        t.local, t.abbreviation
    ));
}
