//! Holdfast: a CDN edge cache on Pingora that keeps serving when everything behind it fails.
//!
//! `config` turns YAML into a validated model, `policy` makes every cache decision as a
//! pure function, `storage` is the bounded cache store, `proxy` is the Pingora glue,
//! `sync` keeps the customers current (control plane, last-known-good file, reloads),
//! `admin` serves operators, and `server` assembles them. `healthcheck` is the client
//! side of `GET /healthz`, for the container's HEALTHCHECK.
// No unsafe code, but for `proxy::direct`, which borrows the client socket's
// descriptor to write a hit to it, which no safe API on Pingora's stream offers, and
// `storage::body`, which maps a sealed memory file holding a large body.
#![deny(unsafe_code)]

pub mod admin;
pub mod config;
pub mod demo_origin;
pub mod explain;
pub mod healthcheck;
pub mod metrics;
pub mod origin;
pub mod policy;
pub mod preflight;
pub mod proxy;
pub mod purge;
pub mod server;
pub mod storage;
pub mod sync;
pub mod tls;
