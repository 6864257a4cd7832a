//! Switchyard: a self-hostable integration hub for partner programs.
//!
//! The crate is organised by domain slice (see `docs/architecture.md`): each slice owns its
//! routes, SQL and types; `http` assembles them into one router and `db` holds the pool, the
//! dialect and the migrations. `app` wires configuration, storage and the router into a running
//! server, and `cli` is the command line around it.

pub mod app;
pub mod attribution;
pub mod campaigns;
pub mod cli;
pub mod clock;
pub mod commissions;
pub mod config;
pub mod db;
pub mod events;
pub mod http;
pub mod identities;
pub mod ids;
pub mod keys;
pub mod links;
pub mod network;
pub mod outbound;
pub mod outbox;
pub mod partners;
pub mod payouts;
pub mod postbacks;
pub mod queue;
pub mod secrets;
pub mod stripe;
pub mod tenants;
pub mod webhooks;

/// mimalloc instead of the system allocator (ADR 10): the click router allocates on the request's
/// thread and frees on the recorder's, and glibc's allocator then makes threads wait for each
/// other's arena locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
