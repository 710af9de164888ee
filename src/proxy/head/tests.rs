//! The two forms of a hit's header send the same bytes, for every header a store holds.

use bytes::{BufMut, BytesMut};

use super::hit::*;
use super::plan::*;
use super::*;
use crate::proxy::status::Signature;
use proptest::prelude::*;

/// Fields a stored header may carry, several of them more than once.
const FIELDS: [(&str, &str); 16] = [
    ("Content-Type", "text/plain"),
    ("content-length", "5"),
    ("Transfer-Encoding", "chunked"),
    ("ETag", "\"v1\""),
    ("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
    ("Surrogate-Key", "a b"),
    ("Cache-Tag", "c"),
    ("Cache-Status", "origin; fwd=miss"),
    ("via", "1.1 shield"),
    ("accept-ranges", "none"),
    ("age", "3"),
    ("cache-status", "shield; hit"),
    ("Date", "Tue, 01 Dec 2026 10:00:00 GMT"),
    ("Connection", "keep-alive"),
    ("X-Custom", "1"),
    ("Content-Encoding", "gzip"),
];

fn stored(status: u16, reason: Option<&str>, fields: &[usize]) -> ResponseHeader {
    let mut h = ResponseHeader::build(status, None).unwrap();
    h.set_reason_phrase(reason).unwrap();
    for &i in fields {
        let (name, value) = FIELDS[i];
        h.append_header(name.to_string(), value).unwrap();
    }
    h
}

fn request(method: &str, condition: Option<(&str, &str)>) -> RequestHeader {
    let mut req = RequestHeader::build(method, b"/a", None).unwrap();
    if let Some((name, value)) = condition {
        req.insert_header(name.to_string(), value).unwrap();
    }
    req
}

/// Status line, then the field lines, sorted by name only: the order of fields of
/// one name is kept, the order across names (which carries no meaning) is not.
fn lines(wire: &[u8]) -> (String, Vec<String>) {
    let text = String::from_utf8(wire.to_vec()).unwrap();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let status = lines.next().unwrap().to_string();
    let mut fields: Vec<String> = lines.map(str::to_string).collect();
    fields.sort_by_key(|l| l.split(':').next().unwrap().to_ascii_lowercase());
    (status, fields)
}

/// The plan on the wire, and the header it makes through Pingora's writer's steps
/// (`Date`, `Connection` inserted, then Pingora's own serialization).
fn both(plan: Plan<'_>) -> ((String, Vec<String>), (String, Vec<String>)) {
    let date = HeaderValue::from_static("Wed, 02 Dec 2026 06:00:00 GMT");
    let mut wire = BytesMut::new();
    plan.put_h1(&mut wire, &date, "keep-alive");
    let mut header = HitHeader::Plan(plan).into_header().unwrap();
    header.insert_header(header::DATE, date).unwrap();
    header
        .insert_header(header::CONNECTION, "keep-alive")
        .unwrap();
    let mut built = BytesMut::new();
    built.put_slice(b"HTTP/1.1 ");
    put_status(&mut built, header.status, header.get_reason_phrase());
    header.header_to_h1_wire(&mut built);
    (lines(&wire), lines(&built))
}

#[test]
fn a_plain_hit_changes_what_a_hit_changes() {
    let pick = |names: &[&str]| -> Vec<usize> {
        let at = |n: &&str| FIELDS.iter().position(|(f, _)| f == n).unwrap();
        names.iter().map(at).collect()
    };
    let fields = pick(&[
        "Content-Type",
        "content-length",
        "Surrogate-Key",
        "Cache-Status",
        "via",
        "Date",
        "X-Custom",
    ]);
    let stored = stored(200, None, &fields);
    let req = request("GET", None);
    let sign = Signature::new(&crate::config::NodeIdentity {
        name: "fra1".into(),
        max_hops: 4,
        advertise: false,
    });
    let outcome = Outcome::Hit {
        ttl: Some(60),
        stale: None,
    };
    let Some(hit) = hit(&stored, None, &req, 7, 5, &outcome, &sign).unwrap() else {
        panic!("a plain GET is a hit");
    };
    assert_eq!(hit.body, HitBody::Span(0..5));
    let HitHeader::Plan(plan) = hit.header else {
        panic!("a GET without Range is planned");
    };
    let ((status, fields), built) = both(plan);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        fields,
        [
            "Accept-Ranges: bytes",
            "Age: 7",
            "Cache-Status: origin; fwd=miss, holdfast; hit; ttl=60",
            "Connection: keep-alive",
            "content-length: 5",
            "Content-Type: text/plain",
            "Date: Wed, 02 Dec 2026 06:00:00 GMT",
            "via: 1.1 shield",
            "Via: 1.1 holdfast",
            "X-Custom: 1",
        ]
    );
    assert_eq!((status, fields), built);
}

/// The plan [`hit_fields`] makes for these.
fn plan_like<'a>(
    stored: &'a ResponseHeader,
    req: &RequestHeader,
    age: u64,
    outcome: &Outcome,
    sign: &Signature,
) -> Plan<'a> {
    let mut plan = Plan::new(stored);
    hit_fields(&mut plan, req, age, 5, outcome, sign).unwrap();
    plan
}

/// Status, then every field as lower-case name and value, in `http`'s order (each
/// name's values together, in order).
fn fields_of(header: Box<ResponseHeader>) -> (u16, Vec<(String, Vec<u8>)>) {
    let mut fields: Vec<(String, Vec<u8>)> = header
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    (header.status.as_u16(), fields)
}

proptest! {
    /// Whatever the stored fields, status and request, the plan written to the wire
    /// and the `ResponseHeader` it makes say the same.
    #[test]
    fn the_plan_on_the_wire_is_the_header_it_makes(
        fields in proptest::collection::vec(0..FIELDS.len(), 0..12),
        status in prop::sample::select(vec![200u16, 203, 204, 301, 304, 404]),
        reason in prop::sample::select(vec![None, Some("Fine")]),
        method in prop::sample::select(vec!["GET", "HEAD"]),
        condition in prop::sample::select(vec![
            None,
            Some(("If-None-Match", "\"v1\"")),
            Some(("If-None-Match", "\"v2\"")),
            Some(("If-Modified-Since", "Tue, 01 Dec 2026 10:00:00 GMT")),
        ]),
        age in 0u64..100_000,
    ) {
        let stored = stored(status, reason, &fields);
        let req = request(method, condition);
        let sign = Signature::new(&crate::config::NodeIdentity {
            name: "fra1".into(),
            max_hops: 4,
            advertise: true,
        });
        let outcome = Outcome::Hit { ttl: Some(1), stale: None };
        let mut plan = Plan::new(&stored);
        let body = hit_fields(&mut plan, &req, age, 5, &outcome, &sign).unwrap();
        prop_assert!(body.is_some());
        let h2 = fields_of(HitHeader::Plan(plan_like(&stored, &req, age, &outcome, &sign)).into_h2_header().unwrap());
        let h1 = fields_of(HitHeader::Plan(plan_like(&stored, &req, age, &outcome, &sign)).into_header().unwrap());
        prop_assert_eq!(h2, h1);
        let (wire, built) = both(plan);
        prop_assert_eq!(wire, built);
    }

    /// A plan over the store's packed copy of a header, copying the stored lines
    /// from its wire form, writes the very bytes a plan over the header itself does.
    #[test]
    fn the_wire_form_writes_what_the_fields_write(
        fields in proptest::collection::vec(0..FIELDS.len(), 0..12),
        status in prop::sample::select(vec![200u16, 203, 204, 304, 404]),
        condition in prop::sample::select(vec![None, Some(("If-None-Match", "\"v1\""))]),
        age in 0u64..100_000,
    ) {
        let stored = stored(status, None, &fields);
        let (packed, wire) = crate::storage::owned_header(&stored);
        let wire = wire.expect("a header that keeps its case is packed with its wire form");
        let req = request("GET", condition);
        let sign = Signature::new(&crate::config::NodeIdentity {
            name: "fra1".into(),
            max_hops: 4,
            advertise: false,
        });
        let outcome = Outcome::Hit { ttl: Some(1), stale: None };
        let date = HeaderValue::from_static("Wed, 02 Dec 2026 06:00:00 GMT");
        let mut by_fields = BytesMut::new();
        plan_like(&stored, &req, age, &outcome, &sign).put_h1(&mut by_fields, &date, "close");
        let mut plan = Plan::with_wire(&packed, Some(&wire));
        hit_fields(&mut plan, &req, age, 5, &outcome, &sign).unwrap();
        let mut by_wire = BytesMut::new();
        plan.put_h1(&mut by_wire, &date, "close");
        prop_assert_eq!(
            String::from_utf8_lossy(&by_wire),
            String::from_utf8_lossy(&by_fields)
        );
    }
}
