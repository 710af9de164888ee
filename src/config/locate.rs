//! Find where a value sits in the YAML text, for errors found after deserialization
//! (duplicate hosts, empty lists, limits that contradict each other...).
//!
//! serde_yaml keeps no spans, but it attaches the position of the current event to any
//! error a `Deserialize` impl raises. So we walk the document again with a probe that
//! raises a sentinel error exactly at the wanted key or value, and read the position
//! off that error. This only runs on the error path.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Whether to point at the key of the last path segment (`servers:`) or at its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Key,
    Value,
}

const SENTINEL: &str = "\u{0}holdfast-locate-probe";

/// The 1-based (line, column) of `path` in `text`, if it exists.
pub(super) fn locate(text: &str, path: &[Seg], target: Target) -> Option<(usize, usize)> {
    let probe = Probe { path, target };
    match probe.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(SENTINEL) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// Like [`locate`], but when the path does not exist (a defaulted or missing key),
/// fall back to the nearest enclosing key that does, and finally to the start.
pub(super) fn locate_near(text: &str, path: &[Seg], target: Target) -> (usize, usize) {
    if let Some(pos) = locate(text, path, target) {
        return pos;
    }
    let mut path = path;
    while let Some((_, parent)) = path.split_last() {
        path = parent;
        let target = match path.last() {
            Some(Seg::Key(_)) => Target::Key,
            _ => Target::Value,
        };
        if let Some(pos) = locate(text, path, target) {
            return pos;
        }
    }
    (1, 1)
}

fn probe_error<E: de::Error>() -> E {
    E::custom(SENTINEL)
}

struct Probe<'p, 'a> {
    path: &'p [Seg<'a>],
    target: Target,
}

impl<'de> DeserializeSeed<'de> for Probe<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (want, rest) = match self.path.split_first() {
            None => return Err(probe_error()),
            Some((Seg::Index(i), rest)) => (*i, rest),
            Some((Seg::Key(_), _)) => return skip_seq(seq),
        };
        let mut i = 0;
        loop {
            let found = if i == want {
                seq.next_element_seed(Probe {
                    path: rest,
                    target: self.target,
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if found.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (want, rest) = match self.path.split_first() {
            None => return Err(probe_error()),
            Some((Seg::Key(k), rest)) => (*k, rest),
            Some((Seg::Index(_), _)) => return skip_map(map),
        };
        let key_is_target = rest.is_empty() && self.target == Target::Key;
        while let Some(matched) = map.next_key_seed(KeyProbe {
            want,
            raise: key_is_target,
        })? {
            if matched {
                map.next_value_seed(Probe {
                    path: rest,
                    target: self.target,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl Probe<'_, '_> {
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(probe_error())
        } else {
            Ok(())
        }
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads one mapping key; `Ok(true)` when it is the wanted one. Raises the sentinel
/// instead when the key itself is what we are locating.
struct KeyProbe<'a> {
    want: &'a str,
    raise: bool,
}

impl KeyProbe<'_> {
    fn check<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.want, self.raise) {
            (true, true) => Err(probe_error()),
            (matched, _) => Ok(matched),
        }
    }
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        skip_seq(seq).map(|_| false)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        skip_map(map).map(|_| false)
    }
}

#[cfg(test)]
mod tests {
    use super::Seg::{Index, Key};
    use super::*;

    const DOC: &str = "\
a: 1
list:
  - name: x
    hosts: [one, two]
  - { name: y, hosts: [three] }
map: { \"404\": 30s, 500: 1s }
";

    #[test]
    fn finds_keys_and_values() {
        assert_eq!(locate(DOC, &[Key("a")], Target::Key), Some((1, 1)));
        assert_eq!(locate(DOC, &[Key("a")], Target::Value), Some((1, 4)));
        let p = [Key("list"), Index(0), Key("hosts"), Index(1)];
        assert_eq!(locate(DOC, &p, Target::Value), Some((4, 18)));
        let p = [Key("list"), Index(1), Key("hosts")];
        assert_eq!(locate(DOC, &p, Target::Key), Some((5, 16)));
        assert_eq!(
            locate(DOC, &[Key("map"), Key("500")], Target::Key),
            Some((6, 20))
        );
        assert_eq!(
            locate(DOC, &[Key("map"), Key("404")], Target::Value),
            Some((6, 15))
        );
    }

    #[test]
    fn missing_paths() {
        assert_eq!(locate(DOC, &[Key("nope")], Target::Key), None);
        assert_eq!(locate(DOC, &[Key("list"), Index(5)], Target::Value), None);
        let p = [Key("list"), Index(1), Key("origin"), Key("servers")];
        assert_eq!(locate_near(DOC, &p, Target::Key), (5, 5));
        assert_eq!(locate_near("", &[Key("x")], Target::Key), (1, 1));
        assert_eq!(locate_near("a: [", &[Key("a")], Target::Key), (1, 1));
    }
}
