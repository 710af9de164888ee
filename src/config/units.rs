//! Units written in the config: durations (`30s`), sizes (`256MiB`) and absolute
//! instants (`2026-11-29T00:00:00-05:00[America/New_York]`).
//!
//! Each has a parse function returning a message that says how to fix the value, and
//! a serde newtype that parses inside `Deserialize`, so serde_yaml attaches the line
//! and column of the offending scalar to the error.

use std::fmt;
use std::time::Duration;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, OffsetConflict, TimeZone};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::model::Instant;

const DURATION_FORMS: &str = "write an integer with a unit: 500ms, 30s, 5m, 1h or 7d";
const SIZE_FORMS: &str =
    "write an integer with a unit: 512B, 64KiB, 256MiB, 1GiB (or KB, MB, GB for powers of 1000)";

/// Split `30s` into (`30`, `s`); `None` when there are no leading digits.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, unit) = text.split_at(digits);
    number.parse().ok().map(|n| (n, unit))
}

/// Parse a duration such as `500ms`, `30s`, `5m`, `1h`, `7d` (`0s` is allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let Some((n, unit)) = split_number(t) else {
        return Err(format!("invalid duration {text:?}; {DURATION_FORMS}"));
    };
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("duration {text:?} has no unit; {DURATION_FORMS}")),
        _ => {
            return Err(format!(
                "duration {text:?} has an unknown unit {unit:?}; {DURATION_FORMS}"
            ))
        }
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large; use a smaller value"))
}

/// Parse a size such as `64KiB`, `256MiB`, `1GiB`, `1MB` (powers of 1000), `512B`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let Some((n, unit)) = split_number(t) else {
        return Err(format!("invalid size {text:?}; {SIZE_FORMS}"));
    };
    let per_unit: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "" => return Err(format!("size {text:?} has no unit; {SIZE_FORMS}")),
        _ => {
            return Err(format!(
                "size {text:?} has an unknown unit {unit:?}; {SIZE_FORMS}"
            ))
        }
    };
    n.checked_mul(per_unit)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("size {text:?} is too large; use a smaller value"))
}

/// `-05:00`, `+05:30`, `+00:00`.
fn fmt_offset(offset: Offset) -> String {
    let secs = offset.seconds();
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.unsigned_abs();
    let (h, m, s) = (abs / 3600, abs / 60 % 60, abs % 60);
    if s == 0 {
        format!("{sign}{h:02}:{m:02}")
    } else {
        format!("{sign}{h:02}:{m:02}:{s:02}")
    }
}

/// What a zone's offset is at a civil time, for messages.
fn describe_offsets(amb: AmbiguousOffset) -> String {
    match amb {
        AmbiguousOffset::Unambiguous { offset } => format!("is at {}", fmt_offset(offset)),
        AmbiguousOffset::Fold { before, after } => format!(
            "is at {} or {} then (clocks go back)",
            fmt_offset(before),
            fmt_offset(after)
        ),
        AmbiguousOffset::Gap { before, after } => format!(
            "skips that time (clocks go forward from {} to {})",
            fmt_offset(before),
            fmt_offset(after)
        ),
    }
}

/// Parse an absolute instant. Accepted: RFC 3339 with an offset
/// (`2026-11-29T00:00:00-05:00`, kept with a fixed-offset zone), RFC 9557 with an
/// IANA zone (`2026-11-29T00:00:00-05:00[America/New_York]`), or a civil time with a
/// zone (`2026-11-29T00:00:00[America/New_York]`). An offset that disagrees with the
/// zone is rejected, never silently re-interpreted.
pub fn parse_instant(text: &str) -> Result<Instant, String> {
    let forms = "write it with an offset (2026-11-29T00:00:00-05:00) \
                 or with an IANA zone (2026-11-29T00:00:00[America/New_York])";
    let pieces = jiff::fmt::temporal::Pieces::parse(text.trim())
        .map_err(|e| format!("invalid date-time {text:?} ({e}); {forms}"))?;
    let Some(time) = pieces.time() else {
        return Err(format!("{text:?} has a date but no time of day; {forms}"));
    };
    let dt: DateTime = pieces.date().to_datetime(time);
    let offset = pieces.to_numeric_offset();
    let zoned = match pieces.time_zone_annotation() {
        None => {
            let Some(offset) = offset else {
                return Err(format!("{text:?} has no offset or time zone; {forms}"));
            };
            TimeZone::fixed(offset)
                .to_zoned_datetime(dt)
                .map_err(|e| format!("{text:?} is out of range ({e}); use a nearer date"))?
        }
        Some(annotation) => {
            let zone_name = match annotation.kind() {
                jiff::fmt::temporal::TimeZoneAnnotationKind::Named(n) => n.as_str().to_string(),
                jiff::fmt::temporal::TimeZoneAnnotationKind::Offset(o) => fmt_offset(*o),
                _ => text.to_string(),
            };
            let tz = annotation.to_time_zone().map_err(|_| {
                format!(
                    "unknown time zone {zone_name:?} in {text:?}; use an IANA zone name \
                     such as America/New_York or Europe/Berlin"
                )
            })?;
            let amb = tz.to_ambiguous_zoned_datetime(dt);
            let offsets = amb.offset();
            match offset {
                Some(offset) => OffsetConflict::Reject
                    .resolve(dt, offset, tz)
                    .and_then(|z| z.unambiguous())
                    .map_err(|_| {
                        format!(
                            "offset {} in {text:?} disagrees with {zone_name}, which {} \
                             at {dt}; correct the offset or the zone",
                            fmt_offset(offset),
                            describe_offsets(offsets)
                        )
                    })?,
                None => amb.unambiguous().map_err(|_| {
                    format!(
                        "{text:?} is not a single instant: {zone_name} {} at {dt}; \
                         write the offset you mean before the zone, \
                         e.g. {dt}{}[{zone_name}]",
                        describe_offsets(offsets),
                        match offsets {
                            AmbiguousOffset::Fold { before, .. } => fmt_offset(before),
                            AmbiguousOffset::Gap { after, .. } => fmt_offset(after),
                            AmbiguousOffset::Unambiguous { offset } => fmt_offset(offset),
                        }
                    )
                })?,
            }
        }
    };
    Ok(Instant {
        text: text.to_string(),
        zoned,
    })
}

/// A scalar that must be written as text with a unit; numbers get a message showing
/// the accepted forms.
struct UnitVisitor<F> {
    what: &'static str,
    parse: F,
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for UnitVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {} written as text", self.what)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        // A bare number: let the parser produce the "no unit" message.
        (self.parse)(&v.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Err(E::custom(format!(
            "invalid {} {v}; it must not be negative",
            self.what
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        (self.parse)(&v.to_string()).map_err(E::custom)
    }
}

/// A duration field (`30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            what: "duration",
            parse: |s: &str| parse_duration(s).map(Dur),
        })
    }
}

/// A size field (`256MiB`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Size(pub usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            what: "size",
            parse: |s: &str| parse_size(s).map(Size),
        })
    }
}

/// An absolute instant field.
#[derive(Debug, Clone)]
pub(super) struct InstantText(pub Instant);

impl<'de> Deserialize<'de> for InstantText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            what: "date-time",
            parse: |s: &str| parse_instant(s).map(InstantText),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        let e = parse_duration("30").unwrap_err();
        assert!(e.contains("no unit") && e.contains("500ms, 30s"), "{e}");
        let e = parse_duration("30sec").unwrap_err();
        assert!(
            e.contains("unknown unit \"sec\"") && e.contains("7d"),
            "{e}"
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        let e = parse_size("1024").unwrap_err();
        assert!(e.contains("no unit") && e.contains("256MiB"), "{e}");
        let e = parse_size("1mb").unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn instants() {
        let i = parse_instant("2026-11-29T00:00:00-05:00").unwrap();
        assert_eq!(i.timestamp().to_string(), "2026-11-29T05:00:00Z");
        assert_eq!(i.zoned.offset().seconds(), -5 * 3600);
        let i = parse_instant("2026-11-29T00:00:00-05:00[America/New_York]").unwrap();
        assert_eq!(i.zoned.time_zone().iana_name(), Some("America/New_York"));
        assert_eq!(i.text, "2026-11-29T00:00:00-05:00[America/New_York]");
        let i = parse_instant("2026-07-01T00:00:00[America/New_York]").unwrap();
        assert_eq!(i.timestamp().to_string(), "2026-07-01T04:00:00Z");
        let i = parse_instant("2026-07-01T04:00:00Z").unwrap();
        assert_eq!(i.timestamp().to_string(), "2026-07-01T04:00:00Z");

        let e = parse_instant("2026-11-29T00:00:00").unwrap_err();
        assert!(e.contains("no offset or time zone"), "{e}");
        assert!(
            e.contains("-05:00") && e.contains("[America/New_York]"),
            "{e}"
        );
        let e = parse_instant("2026-11-29T00:00:00[America/Nowhere]").unwrap_err();
        assert!(e.contains("unknown time zone \"America/Nowhere\""), "{e}");
        let e = parse_instant("2026-07-01T00:00:00-05:00[America/New_York]").unwrap_err();
        assert!(e.contains("is at -04:00"), "{e}");
        assert!(parse_instant("tomorrow").is_err());
        assert!(parse_instant("2026-11-29").is_err());
    }

    #[test]
    fn instants_in_the_fall_back_hour() {
        // 2026-11-01 01:30 happens twice in New York: at -04:00, then at -05:00.
        let a = parse_instant("2026-11-01T01:30:00-04:00[America/New_York]").unwrap();
        let b = parse_instant("2026-11-01T01:30:00-05:00[America/New_York]").unwrap();
        assert_eq!(a.timestamp().to_string(), "2026-11-01T05:30:00Z");
        assert_eq!(b.timestamp().to_string(), "2026-11-01T06:30:00Z");
        let e = parse_instant("2026-11-01T01:30:00-06:00[America/New_York]").unwrap_err();
        assert!(e.contains("-04:00 or -05:00"), "{e}");
        let e = parse_instant("2026-11-01T01:30:00[America/New_York]").unwrap_err();
        assert!(e.contains("not a single instant"), "{e}");
        // Spring forward: 02:30 does not exist.
        let e = parse_instant("2026-03-08T02:30:00[America/New_York]").unwrap_err();
        assert!(e.contains("skips that time"), "{e}");
    }

    proptest! {
        #[test]
        fn duration_round_trip(n in 0u64..1_000_000, unit in 0usize..5) {
            let (suffix, ms) = [("ms", 1u64), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)][unit];
            prop_assert_eq!(parse_duration(&format!("{n}{suffix}")), Ok(Duration::from_millis(n * ms)));
        }

        #[test]
        fn duration_never_panics(s in "\\PC*") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
            let _ = parse_instant(&s);
        }
    }
}
