//! Routing at scale: `Customers::route` with 10,000 customers, each with an exact host
//! and a wildcard, against the old way for names no exact host matches (every wildcard
//! of every customer compared in turn; exact names were a hash lookup then too). Run with `cargo bench --bench route`; it prints nanoseconds per
//! lookup for exact names, wildcard names two labels deep, and unknown names.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

const CUSTOMERS: usize = 10_000;
const LOOKUPS: usize = 1_000_000;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, and only
    // needs it to build.
    if !std::env::args().any(|a| a == "--bench") {
        println!("route: run with cargo bench --bench route");
        return;
    }
    let mut doc = String::from("version: 1\ncustomers:\n");
    for i in 0..CUSTOMERS {
        doc.push_str(&format!(
            "  - name: c{i}\n    hosts: [\"shop{i}.example.com\", \"*.shop{i}.example.com\"]\n    origin: {{ servers: [\"127.0.0.1:8000\"] }}\n"
        ));
    }
    let started = Instant::now();
    let customers = holdfast::config::parse_customer_document("bench", &doc, Path::new(""))
        .expect("document")
        .customers;
    println!(
        "{CUSTOMERS} customers validated and indexed in {:?}",
        started.elapsed()
    );
    let wildcards: Vec<(String, usize)> = customers
        .list
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            c.hosts
                .iter()
                .filter_map(move |h| h.strip_prefix('*').map(|s| (s.to_string(), i)))
        })
        .collect();
    let names = |f: &dyn Fn(usize) -> String| -> Vec<String> {
        (0..1000).map(|i| f(i * (CUSTOMERS / 1000))).collect()
    };
    let cases = [
        ("exact", names(&|i| format!("shop{i}.example.com"))),
        ("wildcard", names(&|i| format!("a.b.shop{i}.example.com"))),
        ("unknown", names(&|i| format!("nobody{i}.example.org"))),
    ];
    for (what, hosts) in &cases {
        let t = Instant::now();
        let mut found = 0usize;
        for k in 0..LOOKUPS {
            found += usize::from(
                customers
                    .route(black_box(&hosts[k % hosts.len()]))
                    .is_some(),
            );
        }
        let hashed = t.elapsed().as_nanos() as f64 / LOOKUPS as f64;
        // The old way, for the same names: every wildcard suffix compared in turn.
        let t = Instant::now();
        let scans = LOOKUPS / 100;
        for k in 0..scans {
            let host = black_box(&hosts[k % hosts.len()]);
            black_box(
                wildcards.iter().find(|(suffix, _)| {
                    host.len() > suffix.len() && host.ends_with(suffix.as_str())
                }),
            );
        }
        let scanned = t.elapsed().as_nanos() as f64 / scans as f64;
        let old = if *what == "exact" {
            "(a hash lookup then too)".to_string()
        } else {
            format!("{scanned:.0} ns scanning every wildcard, the old way")
        };
        println!("{what:>8}: {hashed:5.0} ns per lookup ({found} found of {LOOKUPS}); {old}");
    }
}
