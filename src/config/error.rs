//! Configuration errors. Each message names where the problem is and how to fix it:
//! `file:line:column: what is wrong; how to fix it`.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read at all (there is no line to point at).
    #[error("{file}: cannot read: {source}; check the path and its permissions")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML, does not match the format, or fails validation.
    /// `message` already says how to fix it.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(file: &str, (line, column): (usize, usize), message: String) -> Self {
        ConfigError::Invalid {
            file: file.to_string(),
            line,
            column,
            message,
        }
    }

    /// The 1-based (line, column) the error points at, when it points into the text.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
        }
    }

    /// Turn a serde_yaml error into one located at its line and column, with a hint on
    /// how to fix it when serde's own message lacks one.
    pub(crate) fn from_yaml(file: &str, err: &serde_yaml::Error) -> Self {
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let mut message = err.to_string();
        // serde_yaml appends the position; we already lead with it.
        let at = format!(" at line {line} column {column}");
        if let Some(i) = message.find(&at) {
            message.replace_range(i..i + at.len(), "");
        }
        let mut message = internal_names(&message);
        if !message.contains("; ") {
            message.push_str(hint(&message));
        }
        ConfigError::invalid(file, (line, column), message)
    }
}

/// serde names our private structs ("expected struct CustomerFile"); say "a mapping".
fn internal_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("struct ") {
        let after = &rest[i + "struct ".len()..];
        let ident_len = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        out.push_str(&rest[..i]);
        if after[..ident_len].ends_with("File") {
            out.push_str("a mapping");
        } else {
            out.push_str(&rest[i..i + "struct ".len() + ident_len]);
        }
        rest = &after[ident_len..];
    }
    out.push_str(rest);
    out
}

fn hint(message: &str) -> &'static str {
    const HINTS: &[(&str, &str)] = &[
        ("unknown field", "; remove it or correct its spelling"),
        ("missing field", "; add it"),
        ("unknown variant", "; use one of the listed values"),
        ("duplicate field", "; keep only one of them"),
        ("duplicate entry", "; keep only one of them"),
        ("invalid type", "; write the value in the documented form"),
        ("invalid value", "; write the value in the documented form"),
        ("invalid length", "; write the value in the documented form"),
        (
            "more than one document",
            "; keep a single YAML document (remove the extra ---)",
        ),
        (
            "EOF while parsing",
            "; the file is empty or cut short, write the whole configuration",
        ),
        (
            "recursion limit",
            "; the nesting is too deep, simplify the document",
        ),
        (
            "repetition limit",
            "; too many aliases, write the values out",
        ),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map(|(_, hint)| *hint)
        .unwrap_or("; fix the YAML syntax here (check indentation, quotes and brackets)")
}
