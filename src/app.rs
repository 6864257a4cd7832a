//! Wiring: configuration in, a running server out.
//!
//! Start-up order: load the secrets key, open the database as its owner, migrate, grant the
//! restricted application role (PostgreSQL), create the default tenant and its first admin key
//! when the database is empty, reopen as the application role, then serve until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Config;
use crate::db::{Db, Dialect, TENANT_SETTING};
use crate::http::ops::Metrics;
use crate::http::rate_limit::RateLimits;
use crate::keys::{self, IssuedKey, KeyKind, NewKey};
use crate::links::Links;
use crate::outbound::{Guard, Outbound};
use crate::secrets::{self, SecretBox};
use crate::tenants::{self, Tenant};

use job_queue::{Periodic, Queue, Worker, WorkerOptions};

/// How often periodic schedules are looked at.
const PERIODIC_TICK: Duration = Duration::from_secs(1);

/// What every handler can reach: one shared allocation, so the clone each layer and handler
/// makes per request is a single reference-count increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub db: Db,
    pub queue: Queue,
    pub outbound: Outbound,
    pub clock: Clock,
    pub secrets: SecretBox,
    pub config: Arc<Config>,
    pub limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    pub links: Arc<Links>,
    /// The webhook delivery path's batched fan-outs, reads and success records.
    pub webhooks: crate::webhooks::delivery::Batches,
    /// The one outbound Stripe client.
    pub stripe: crate::stripe::client::StripeClient,
}

/// The default tenant and admin key created on first start: shown once.
pub struct FirstStart {
    pub tenant: Tenant,
    pub key: IssuedKey,
}

/// The secrets key: from configuration, else (SQLite only) a key file beside the database.
pub fn load_secrets(config: &Config) -> anyhow::Result<SecretBox> {
    let secrets = own_secrets(config)?;
    secrets
        .with_previous(&config.secrets_key_previous)
        .context("SWITCHYARD_SECRETS_KEY_PREVIOUS")
}

fn own_secrets(config: &Config) -> anyhow::Result<SecretBox> {
    if let Some(encoded) = &config.secrets_key {
        return SecretBox::from_encoded_key(encoded).context("SWITCHYARD_SECRETS_KEY");
    }
    if Dialect::from_url(&config.database_url)? == Dialect::Postgres {
        anyhow::bail!(
            "SWITCHYARD_SECRETS_KEY is required with PostgreSQL: every node must share one key \
             (generate one with `openssl rand -hex 32`)"
        );
    }
    let Some(database) = config.sqlite_path() else {
        tracing::warn!("in-memory database without SWITCHYARD_SECRETS_KEY: using a throwaway key");
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        return Ok(SecretBox::from_encoded_key(&hex::encode(key))?);
    };
    let path = secrets::key_file_for(&database);
    let (key, created) = secrets::load_or_create_key_file(&path)?;
    if created {
        tracing::info!(path = %path.display(), "generated a secrets key file; back it up with the database");
    } else {
        tracing::info!(path = %path.display(), "using the secrets key file");
    }
    Ok(key)
}

/// Checks the configuration without touching the network or the database: the database URL,
/// the secrets key (required with PostgreSQL), the public URL and the Stripe API base.
pub fn check(config: &Config) -> anyhow::Result<()> {
    Dialect::from_url(&config.database_url)?;
    if let Some(app_url) = &config.database_url_app {
        Dialect::from_url(app_url).context("DATABASE_URL_APP")?;
    }
    if let Some(encoded) = &config.secrets_key {
        SecretBox::from_encoded_key(encoded).context("SWITCHYARD_SECRETS_KEY")?;
    } else if Dialect::from_url(&config.database_url)? == Dialect::Postgres {
        load_secrets(config)?;
    }
    if let Some(url) = &config.public_url {
        let parsed = url::Url::parse(url).context("SWITCHYARD_PUBLIC_URL is not a URL")?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "SWITCHYARD_PUBLIC_URL must be an http(s) URL"
        );
    }
    crate::stripe::client::StripeClient::new(
        config.stripe_api_base.as_deref(),
        &[],
        Duration::from_secs(1),
        config.stripe_rate_limit,
    )?;
    Ok(())
}

/// Opens the database as its owner and applies pending migrations; grants the application
/// role when one is configured.
pub async fn open_migrated(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database_url, config.db_max_connections).await?;
    db.migrate().await?;
    if let Some(app_url) = &config.database_url_app {
        let role = url::Url::parse(app_url)
            .context("DATABASE_URL_APP is not a URL")?
            .username()
            .to_owned();
        anyhow::ensure!(!role.is_empty(), "DATABASE_URL_APP must name a user");
        db.grant_app_role(&role).await?;
    }
    Ok(db)
}

/// Creates the default tenant and its first admin key if the database has no default tenant.
pub async fn first_start(db: &Db, clock: &Clock) -> anyhow::Result<Option<FirstStart>> {
    let mut tx = db.write_global().await?;
    let Some(tenant) = tenants::create_default(&mut tx, clock).await? else {
        return Ok(None);
    };
    db.set_local(&mut tx, TENANT_SETTING, &tenant.id).await?;
    let key = keys::issue(
        &mut tx,
        clock,
        &tenant.id,
        NewKey {
            name: "first admin key".to_owned(),
            kind: KeyKind::Admin,
            scopes: Vec::new(),
            partner_id: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Some(FirstStart { tenant, key }))
}

/// The node's identity: configured, else the host name and the port it listens on (stable
/// across restarts; distinct for nodes on one host, which listen on different ports).
fn node_id(config: &Config, addr: SocketAddr) -> String {
    if let Some(id) = config.node_id.as_deref().filter(|id| !id.trim().is_empty()) {
        return id.trim().to_owned();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}:{}", addr.port())
}

/// A server running in the background.
pub struct Running {
    pub addr: SocketAddr,
    pub first_start: Option<FirstStart>,
    pub state: AppState,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    worker: JoinHandle<Result<(), job_queue::Error>>,
}

/// Prepares storage and starts serving on `listener`.
pub async fn start(config: Config, clock: Clock, listener: TcpListener) -> anyhow::Result<Running> {
    let secrets = load_secrets(&config)?;
    let owner = open_migrated(&config).await?;
    let first_start = first_start(&owner, &clock).await?;
    let db = match &config.database_url_app {
        Some(app_url) => {
            owner.close().await;
            Db::connect(app_url, config.db_max_connections).await?
        }
        None => owner,
    };
    let limits = Arc::new(RateLimits::new(
        config.rate_limit_per_key,
        config.rate_limit_per_ip,
    ));
    let queue = Queue::new(
        db.writer().clone(),
        db.dialect().queue_engine(),
        Arc::new({
            let clock = clock.clone();
            move || clock.now_ms()
        }),
    )
    .with_node(&node_id(&config, listener.local_addr()?));
    let outbound = Outbound::new(
        Guard::new(config.outbound_allow.clone()),
        Duration::from_secs(config.webhook_timeout_secs),
    );
    let links = Links::start(db.clone());
    let stripe = crate::stripe::client::StripeClient::new(
        config.stripe_api_base.as_deref(),
        &config.outbound_allow,
        Duration::from_secs(config.webhook_timeout_secs),
        config.stripe_rate_limit,
    )?;
    // The phone-number metadata loads on first use (hundreds of milliseconds): not in a request.
    tokio::task::spawn_blocking(|| {
        crate::identities::normalize_phone("+447911123456", phonenumber::country::Id::GB)
    });
    let state = AppState(Arc::new(Shared {
        queue: queue.clone(),
        outbound,
        webhooks: crate::webhooks::delivery::Batches::start(
            db.clone(),
            queue.clone(),
            clock.clone(),
        ),
        db,
        clock,
        secrets,
        limits: limits.clone(),
        metrics: Arc::new(Metrics::default()),
        links,
        stripe,
        config: Arc::new(config),
    }));
    let app = crate::http::router(state.clone());
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);

    let mut cleanup_stopped = stopped.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every.tick() => limits.forget_idle(),
                _ = cleanup_stopped.changed() => break,
            }
        }
    });

    let worker_options = WorkerOptions {
        shutdown_timeout: Duration::from_secs(state.config.shutdown_timeout_secs),
        retention: Duration::from_secs(state.config.job_retention_hours * 3600),
        listen_url: (state.db.dialect() == Dialect::Postgres).then(|| {
            let config = &state.config;
            config
                .database_url_app
                .clone()
                .unwrap_or_else(|| config.database_url.clone())
        }),
        ..WorkerOptions::default()
    };
    // Periodic jobs: every node schedules them; each window runs once (dedupe keys).
    let periodic = crate::commissions::schedule(Periodic::new(state.queue.clone()))?;
    let periodic = crate::http::idempotency::schedule(periodic)?;
    let periodic = crate::stripe::meters::schedule(periodic, &state)?;
    let periodic = crate::payouts::schedule(periodic, &state)?;
    let periodic = crate::network::schedule(periodic)?;
    let mut periodic_stopped = stopped.clone();
    tokio::spawn(periodic.run(PERIODIC_TICK, async move {
        let _ = periodic_stopped.changed().await;
    }));
    let mut worker_stopped = stopped.clone();
    let worker = Worker::new(queue, worker_options);
    let worker = crate::webhooks::delivery::register(worker, state.clone());
    let worker = crate::commissions::register(worker, state.clone());
    let worker = crate::postbacks::register(worker, state.clone());
    let worker = crate::http::idempotency::register(worker, state.clone());
    let worker = crate::stripe::register(worker, state.clone());
    let worker = crate::stripe::meters::register(worker, state.clone());
    let worker = crate::payouts::register(worker, state.clone());
    let worker = crate::network::register(worker, state.clone());
    let worker = tokio::spawn(worker.run(async move {
        let _ = worker_stopped.changed().await;
    }));

    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.changed().await;
        })
        .await
    });
    tracing::info!(%addr, engine = ?state.db.dialect(), "switchyard listening");
    Ok(Running {
        addr,
        first_start,
        state,
        stop,
        server,
        worker,
    })
}

impl Running {
    /// Stops accepting connections and claiming jobs, lets in-flight requests and jobs finish
    /// within the configured deadline (unfinished jobs are released), stores the buffered
    /// clicks, then closes the pool.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let deadline = Duration::from_secs(self.state.config.shutdown_timeout_secs);
        let abort = self.server.abort_handle();
        match tokio::time::timeout(deadline, self.server).await {
            Ok(joined) => joined??,
            Err(_) => {
                tracing::warn!(
                    ?deadline,
                    "in-flight requests did not finish in time; exiting"
                );
                abort.abort();
            }
        }
        // Requests are done: store every click they buffered before the pool closes.
        if tokio::time::timeout(deadline, self.state.links.shutdown())
            .await
            .is_err()
        {
            tracing::error!(
                ?deadline,
                "buffered clicks could not be stored before the shutdown deadline; they are lost"
            );
        }
        match self.worker.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "the job worker stopped with an error"),
            Err(err) => tracing::warn!(error = %err, "the job worker panicked"),
        }
        self.state.db.close().await;
        tracing::info!("switchyard stopped");
        Ok(())
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled, so call it before serving: a signal that arrives once the
/// port is open must not meet the default action (an abrupt exit).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown requested");
    }
}
