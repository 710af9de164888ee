//! Configuration: the YAML file format → a validated runtime model.
//!
//! The pipeline is `text → file::* (serde, deny_unknown_fields) → validate → model::*`.
//! Every error names the file, line and column and says how to fix it; nothing here
//! panics on user input. A failed load or reload never touches the running state:
//! callers only swap in a fully built value.

mod certificate;
mod error;
mod file;
mod locate;
pub mod model;
mod purges;
mod scalars;
mod server_conf;
mod units;
mod validate;

#[cfg(test)]
mod tests;

pub use certificate::{any_changed, covers, Certificate};
pub use error::ConfigError;
pub use model::*;
pub use purges::{is_valid_tag, purge_url, DocumentPurge, PurgeUrl, MAX_TAG_LEN};
pub use units::{parse_duration, parse_instant, parse_size};

use std::path::Path;

use validate::Ctx;

/// A synced customer document: `{ version, customers, purges }` (each customer holds
/// the purges the document lists for it).
#[derive(Debug)]
pub struct CustomerDocument {
    pub version: u64,
    pub customers: Customers,
}

/// Read and validate the node configuration file.
pub fn load_node_file(path: &Path) -> Result<NodeConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        file: path.display().to_string(),
        source: e,
    })?;
    check_node_text(path, &text)
}

/// Validate node configuration text; `path` is used in error messages and to
/// resolve relative paths.
pub fn check_node_text(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
    let name = path.display().to_string();
    let parsed: file::NodeFile =
        serde_yaml::from_str(text).map_err(|e| ConfigError::from_yaml(&name, &e))?;
    let ctx = Ctx { file: &name, text };
    validate::node(&ctx, path, parsed)
}

/// An error found after the node file loaded (a directory the node cannot write),
/// pointed at the value of `keys` in `source`, or at the nearest key that is there.
pub fn error_at(source: &Path, keys: &[&str], message: String) -> ConfigError {
    let text = std::fs::read_to_string(source).unwrap_or_default();
    let path: Vec<locate::Seg> = keys.iter().map(|k| locate::Seg::Key(k)).collect();
    let at = locate::locate_near(&text, &path, locate::Target::Value);
    ConfigError::invalid(&source.display().to_string(), at, message)
}

/// Parse and validate a customer document (from the control plane or the cache file).
/// `origin` names where it came from in error messages (a URL or a path).
/// Relative certificate paths in it are relative to `base` (the node file's directory).
pub fn parse_customer_document(
    origin: &str,
    text: &str,
    base: &Path,
) -> Result<CustomerDocument, ConfigError> {
    let parsed: file::CustomerDocumentFile = serde_yaml::from_str(text).map_err(|e| {
        let err = ConfigError::from_yaml(origin, &e);
        match err {
            ConfigError::Invalid {
                line,
                column,
                message,
                ..
            } if message.contains("missing field `version`") => ConfigError::invalid(
                origin,
                (line, column),
                "the customer document has no version; add `version: <integer>` \
                     next to customers: and raise it on every change"
                    .into(),
            ),
            other => other,
        }
    })?;
    let ctx = Ctx { file: origin, text };
    let mut customers = validate::customers(&ctx, base, parsed.version, parsed.customers)?;
    validate::purges(&ctx, &mut customers, parsed.purges)?;
    Ok(CustomerDocument {
        version: parsed.version,
        customers,
    })
}
