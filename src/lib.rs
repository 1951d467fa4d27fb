//! asyncgate: a reverse proxy that makes slow synchronous HTTP routes
//! asynchronous without touching the backend.
//!
//! Requests on routes configured `async` are answered at once with
//! `202 Accepted` and a job URL; the gateway sends the original request to
//! the backend in the background (`jobs`), keeps the response in a store
//! (`jobs::store`) and serves the job's status, result and cancellation
//! (`app::job_api`), and calls back when a job ends if asked to
//! (`webhook`). Every other request is proxied through (`proxy`).
//!
//! The layers, each importing only those below it (there is no import
//! circle): `server` (listeners, workers, each connection's service, drain)
//! over `admin` (health, readiness, metrics, the dashboard: it reads the
//! app's `Report`, never the app) over `app` (the composition root and
//! per-request dispatch) over `error` (the one place errors become
//! problems) over `jobs` and `proxy`, over `route`, `upstream`, `webhook`
//! and `kafka` (the senders), over `delivery` (a job's delivery records and
//! the one loop of attempts the senders share), over `config`, over the
//! protocol leaves (`accept`, `callback`, `headers`, `prefer`, `problem`,
//! `retry_after`, `route_table`, `body`, `defaults`, `telemetry`).
//!
//! Start with [`Config::load`] and [`Gateway::bind`].

mod accept;
mod admin;
mod advisor;
mod app;
mod backoff;
mod body;
mod callback;
mod config;
mod cors;
mod defaults;
mod delivery;
mod error;
mod error_chain;
mod header_block;
mod headers;
mod jobs;
#[cfg(feature = "kafka")]
mod kafka;
mod launch;
pub mod logging;
mod metrics;
mod prefer;
mod priority;
mod problem;
mod proxy;
mod retry_after;
mod room;
mod route;
mod route_table;
mod server;
pub mod shutdown;
mod sync;
pub mod telemetry;
#[cfg(feature = "tls")]
mod tls;
mod tunnel;
mod upgrade;
mod upstream;
mod webhook;

pub use admin::probe;
pub use config::{Config, ConfigError};
pub use jobs::DrainReport;
pub use launch::Launch;
pub use server::{Gateway, RunReport};
