//! The one `Range` form most clients send, `bytes=first-last` or `bytes=first-`, read
//! without Pingora's regular expression.
//!
//! Pingora's `range_header_filter` decides every `Range` on both paths. It runs a regular
//! expression over each range, which costs a ranged hit about a tenth of its CPU. This
//! reads the common single-range form and gives the same range it would; anything else
//! (a suffix range, several ranges, spaces, a range that is not satisfiable) returns
//! `None`, and the caller asks Pingora's filter. The property test below holds the two
//! to the same answer.

use std::ops::Range;

/// The bytes of a body of `len` bytes that `value` (a `Range` field) asks for, when it is
/// one `bytes=first-last` or `bytes=first-` range that the body satisfies. The caller
/// checks the rest of what decides a range (a 200, GET or HEAD, no `If-Range`).
pub fn simple(value: &[u8], len: usize) -> Option<Range<usize>> {
    let prefix = value.get(..6)?;
    if !prefix.eq_ignore_ascii_case(b"bytes=") {
        return None;
    }
    let spec = &value[6..];
    let dash = spec.iter().position(|&b| b == b'-')?;
    let start = number(&spec[..dash])?;
    let last = match &spec[dash + 1..] {
        [] => None,
        digits => Some(number(digits)?),
    };
    if start >= len {
        return None;
    }
    // The last byte is inclusive and may lie past the end of the body.
    let end = last.map_or(len - 1, |last| last.min(len - 1)) + 1;
    (end > start).then_some(start..end)
}

/// A non-empty run of ASCII digits that fits a `usize`.
fn number(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::{RequestHeader, ResponseHeader};
    use pingora_proxy::{range_header_filter, RangeType};
    use proptest::prelude::*;

    /// What Pingora's own filter makes of `value` for a 200 of `len` bytes.
    fn pingora(value: &str, len: usize) -> RangeType {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        req.insert_header("Range", value).expect("header");
        let mut resp = ResponseHeader::build(200, None).expect("response");
        resp.insert_header("Content-Length", len).expect("header");
        range_header_filter(&req, &mut resp, Some(200))
    }

    #[test]
    fn the_common_forms_are_read_here() {
        assert_eq!(simple(b"bytes=0-0", 10), Some(0..1));
        assert_eq!(simple(b"bytes=2-5", 10), Some(2..6));
        assert_eq!(simple(b"bytes=7-", 10), Some(7..10));
        assert_eq!(simple(b"BYTES=7-100", 10), Some(7..10));
    }

    #[test]
    fn everything_else_is_left_to_pingora() {
        for value in [
            "bytes=-5",
            "bytes=1-2,4-5",
            "bytes= 1-2",
            "bytes=1-2 ",
            "bytes=10-",
            "bytes=5-4",
            "bytes=",
            "bytes=-",
            "items=1-2",
            "bytes=99999999999999999999999-",
            "bytes=1-+2",
        ] {
            assert_eq!(simple(value.as_bytes(), 10), None, "{value}");
        }
        assert_eq!(
            simple(b"bytes=0-", 0),
            None,
            "an empty body has no bytes to give"
        );
    }

    proptest! {
        /// Whenever this reads a range, it is the one Pingora's filter gives.
        #[test]
        fn agrees_with_pingora(
            unit in prop::sample::select(vec!["bytes", "Bytes", "BYTES", "byte", "bytes "]),
            start in prop::option::of(0usize..2000),
            last in prop::option::of(0usize..2000),
            tail in prop::sample::select(vec!["", ",", " ", ",5-6", "x"]),
            len in 0usize..1500,
        ) {
            let start = start.map(|n| n.to_string()).unwrap_or_default();
            let last = last.map(|n| n.to_string()).unwrap_or_default();
            let value = format!("{unit}={start}-{last}{tail}");
            if let Some(range) = simple(value.as_bytes(), len) {
                prop_assert_eq!(pingora(&value, len), RangeType::Single(range), "{}", value);
            }
        }

        /// And it does read every satisfiable range of the common forms.
        #[test]
        fn reads_every_satisfiable_common_range(
            len in 1usize..1500,
            start in 0usize..1500,
            last in prop::option::of(0usize..3000),
        ) {
            prop_assume!(start < len && last.is_none_or(|last| last >= start));
            let value = match last {
                Some(last) => format!("bytes={start}-{last}"),
                None => format!("bytes={start}-"),
            };
            let range = simple(value.as_bytes(), len);
            prop_assert!(range.is_some(), "{}", value);
            prop_assert_eq!(pingora(&value, len), RangeType::Single(range.unwrap_or_default()));
        }
    }
}
