//! Assemble the Pingora server from a validated node config and run it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::info;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::Admin;
use crate::config::NodeConfig;
use crate::demo_origin::DemoOrigin;
use crate::metrics::Metrics;
use crate::proxy::Edge;
use crate::purge::Purges;
use crate::storage::disk::DiskTier;
use crate::storage::{CacheStore, MemoryStore, Tiered};
use crate::sync::{StartError, SyncService};

/// How long an exiting node waits for queued disk writes.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// Build every service of the node and run until a signal stops it. Fails before any
/// listener opens when there is no valid customer config at all.
pub fn run(mut node: NodeConfig) -> Result<(), StartError> {
    // The starting config (control plane, cache_file or inline), decided before any
    // listener opens.
    let syncer = crate::sync::bootstrap(&node)?;
    let mut conf = std::mem::take(&mut node.server);
    // SIGTERM drains in DrainOnTerm below; Pingora's own grace period would only add a
    // fixed sleep on top of it.
    conf.grace_period_seconds = Some(0);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Large bodies hold a memory file each, from half of this limit.
    let open_files = crate::storage::raise_open_file_limit();
    let memory: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(
        node.cache.memory,
        node.cache.max_object,
    )));
    info!(
        "open-file limit {}; bodies of {} bytes or more may use up to {} memory files",
        open_files.map_or("unlimited".to_string(), |n| n.to_string()),
        crate::storage::FILE_BACKED_MIN,
        memory.memory_file_limit()
    );
    let store: &'static dyn CacheStore = match &node.cache.disk {
        Some(disk) => {
            let tier = DiskTier::open(&disk.path, disk.size, disk.max_object);
            if tier.disabled().is_none() {
                info!(
                    "disk tier at {} ({} bytes; bodies above {} bytes and up to {} are streamed to it); \
                     loading its index in the background",
                    disk.path.display(),
                    tier.capacity(),
                    node.cache.max_object,
                    disk.max_object
                );
            }
            Box::leak(Box::new(Tiered::new(memory, tier)))
        }
        None => memory,
    };
    let customers = syncer.state().customers();
    let metrics = Arc::new(Metrics::default());

    // Purge markers live beside the disk tier's objects, whose purges they must outlive.
    let purges = Arc::new(Purges::open(
        node.cache.disk.as_ref().map(|d| d.path.as_path()),
    ));
    let origins = Arc::new(crate::origin::Origins::default());
    let edge = Edge::new(
        &node,
        customers.clone(),
        store,
        metrics.clone(),
        purges.clone(),
        origins.clone(),
    );
    info!(
        "node {}: CDN-Loop entry \"{}\", at most {} Holdfast hops per request",
        node.node.name,
        edge.loop_entry(),
        node.node.max_hops
    );
    // Every HTTP/1 connection must send each request header within header_timeout
    // (proxy/deadline.rs): Pingora bounds each read of it, not the whole.
    let guarded = |proxy: pingora_proxy::HttpProxy<Edge>, name: &str| {
        Service::new(
            name.to_string(),
            crate::proxy::deadline::Guarded::new(proxy, node.header_timeout, metrics.clone()),
        )
    };
    let mut proxy = guarded(
        pingora_proxy::http_proxy(&server.configuration, edge.clone()),
        "holdfast edge",
    );
    // Every TLS listener picks certificates from the snapshot that routes requests.
    let resolver = Arc::new(crate::tls::Resolver::new(
        customers.clone(),
        syncer.state().tls_default(),
    ));
    // Plain listeners that take HTTP/2 with prior knowledge are a service of their own
    // (Pingora sets h2c per service), over the same edge.
    let h2c: Vec<&crate::config::Listener> = node.listen.iter().filter(|l| l.h2c).collect();
    if !h2c.is_empty() {
        let mut app = pingora_proxy::http_proxy(&server.configuration, edge.clone());
        let mut options = pingora_core::apps::HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
        let mut svc = guarded(app, "holdfast edge (h2c)");
        for listener in h2c {
            svc.add_tcp(&listener.addr);
        }
        server.add_service(svc);
    }
    for listener in node.listen.iter().filter(|l| !l.h2c) {
        if listener.tls {
            let mut tls = TlsSettings::with_callbacks(Box::new(crate::tls::RecordSni))
                .map_err(|e| StartError::Listener(format!("{}: {e}", listener.addr)))?;
            tls.set_cert_resolver(resolver.clone());
            tls.enable_h2();
            proxy.add_tls_with_settings(&listener.addr, None, tls);
        } else {
            proxy.add_tcp(&listener.addr);
        }
    }
    if node.listen.iter().any(|l| !l.h2c) {
        server.add_service(proxy);
    }

    if let Some(admin) = &node.admin {
        let mut svc = Service::new(
            "holdfast admin".to_string(),
            Admin {
                customers: customers.clone(),
                metrics: metrics.clone(),
                store,
                sync: syncer.clone(),
                operator_token: operator_token(admin),
                hosts: admin.hosts.clone(),
                purges: purges.clone(),
                origins: origins.clone(),
                exposition: exposition(&metrics, store, &syncer, &purges, &origins),
            },
        );
        svc.add_tcp(&admin.listen);
        server.add_service(svc);
    }
    // Active origin checks (origin.health_check), for the customers that ask for them.
    server.add_service(background_service(
        "holdfast origin checks",
        crate::origin::checks::HealthChecks::new(customers.clone(), origins.clone()),
    ));
    server.add_service(background_service(
        "holdfast config sync",
        SyncService::new(syncer.clone()),
    ));
    // Warns when a rule's expiry or window passes on a config older than max_config_age.
    server.add_service(background_service(
        "holdfast schedule watch",
        crate::explain::watch::ScheduleWatch::new(syncer.state().clone(), node.max_config_age),
    ));
    if let Some(demo) = &node.demo_origin {
        let mut svc = Service::new(
            "holdfast demo origin".to_string(),
            DemoOrigin {
                root: demo.root.clone(),
            },
        );
        svc.add_tcp(&demo.listen);
        server.add_service(svc);
    }

    info!(
        "holdfast starting: listen=[{}] admin={:?} customers={} config_version={} config_source={}",
        node.listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        node.admin.as_ref().map(|a| a.listen.as_str()),
        customers.load().list.len(),
        customers.load().version,
        syncer.state().source().as_str()
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainOnTerm {
            metrics,
            grace: node.shutdown_grace,
        }),
    });
    // Objects stored in the last moments still go to disk before the process exits.
    store.flush(FLUSH_AT_EXIT);
    Ok(())
}

/// The node's metrics, each module's registered once, in the order `/metrics` lists them.
fn exposition(
    metrics: &Arc<Metrics>,
    store: &'static dyn CacheStore,
    syncer: &Arc<crate::sync::Syncer>,
    purges: &Arc<Purges>,
    origins: &Arc<crate::origin::Origins>,
) -> crate::metrics::Exposition {
    let mut exposition = crate::metrics::Exposition::default();
    exposition.register(metrics.clone());
    exposition.register(crate::storage::StoreMetrics(store));
    exposition.register(crate::sync::ConfigMetrics(syncer.state().clone()));
    exposition.register(crate::purge::PurgeMetrics(purges.clone()));
    exposition.register(origins.clone());
    exposition
}

/// The operator's token from `admin.token_env`'s variable. A variable that is not set
/// (or empty) leaves admin POSTs to loopback peers, with a warning.
fn operator_token(admin: &crate::config::AdminConfig) -> crate::admin::access::OperatorToken {
    use crate::admin::access::OperatorToken;
    let token = OperatorToken::from_env(admin.token_env.as_deref(), |v| std::env::var(v).ok());
    match &token {
        OperatorToken::Set(_) => info!(
            "admin: POSTs need the bearer token in {}",
            admin.token_env.as_deref().unwrap_or_default()
        ),
        OperatorToken::Unset(name) => log::warn!(
            "admin: admin.token_env names {name}, which is not set; admin POSTs are \
             taken from loopback peers only until it is (restart to apply)"
        ),
        OperatorToken::NotConfigured => {}
    }
    token
}

/// SIGTERM: wait until requests in flight finish (at most `grace`), then let Pingora
/// stop. SIGINT stops at once; SIGQUIT hands the listeners to a new process.
struct DrainOnTerm {
    metrics: Arc<Metrics>,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            log::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => {
                let deadline = Instant::now() + self.grace;
                info!("SIGTERM: draining requests in flight (grace {:?})", self.grace);
                loop {
                    let n = self.metrics.inflight.load(Ordering::Acquire);
                    if n == 0 {
                        info!("SIGTERM: drained, exiting");
                        break;
                    }
                    if Instant::now() >= deadline {
                        log::warn!("SIGTERM: grace over with {n} requests in flight, exiting");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}
