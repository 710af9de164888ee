//! `server:`: Pingora's own `ServerConf`, passed through.
//!
//! `ServerConf` ignores unknown keys; we do not, so a typo cannot silently fall back to
//! a default. Known keys are those of `ServerConf::default()` serialized to a mapping.

use pingora_core::server::configuration::ServerConf;
use serde_yaml::{Mapping, Value};

use super::error::ConfigError;
use super::locate::{Seg::Key, Target};
use super::validate::Ctx;

/// Check `server:` and build the `ServerConf` from it (defaults when absent).
pub(super) fn check(ctx: &Ctx, map: Option<Mapping>) -> Result<ServerConf, ConfigError> {
    let Some(map) = map else {
        return Ok(ServerConf::default());
    };
    let known: Vec<String> = match serde_yaml::to_value(ServerConf::default()) {
        Ok(Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let mut names = Vec::with_capacity(map.len());
    for (k, v) in &map {
        let name = match k {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        if !known.contains(&name) {
            let fix = match closest(&name, &known) {
                Some(near) => format!("did you mean {near:?}?"),
                None => format!("use one of Pingora's ServerConf keys: {}", known.join(", ")),
            };
            return Err(ctx.err(
                &[Key("server"), Key(&name)],
                Target::Key,
                format!("unknown key {name:?} under server:; {fix}"),
            ));
        }
        let mut one = Mapping::new();
        one.insert(k.clone(), v.clone());
        if let Err(e) = serde_yaml::from_value::<ServerConf>(Value::Mapping(one)) {
            return Err(ctx.err(
                &[Key("server"), Key(&name)],
                Target::Value,
                format!("invalid server.{name}: {e}; see Pingora's ServerConf for its type"),
            ));
        }
        names.push(name);
    }
    let conf = serde_yaml::from_value::<ServerConf>(Value::Mapping(map)).map_err(|e| {
        ctx.err(
            &[Key("server")],
            Target::Key,
            format!("invalid server settings: {e}; see Pingora's ServerConf"),
        )
    })?;
    // Tokio refuses a runtime without workers; say so here rather than panic at start.
    if conf.threads == 0 {
        return Err(ctx.err(
            &[Key("server"), Key("threads")],
            Target::Value,
            "server.threads is 0; use 1 or more worker threads per service".into(),
        ));
    }
    conf.validate().map_err(|e| {
        let why = e
            .context
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| e.to_string());
        // Point at the key Pingora complains about, if it names one we were given.
        let key = names.iter().find(|n| why.contains(n.as_str()));
        let path = match key {
            Some(k) => vec![Key("server"), Key(k.as_str())],
            None => vec![Key("server")],
        };
        ctx.err(
            &path,
            if key.is_some() {
                Target::Value
            } else {
                Target::Key
            },
            format!("invalid server settings: {why}; change that value"),
        )
    })
}

/// The known name within edit distance 2 of `name`, for "did you mean".
fn closest<'k>(name: &str, known: &'k [String]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("threads", "threads"), 0);
        assert_eq!(edit_distance("treads", "threads"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        let known = vec!["threads".to_string(), "daemon".to_string()];
        assert_eq!(closest("deamon", &known), Some("daemon"));
        assert_eq!(closest("workers", &known), None);
    }
}
