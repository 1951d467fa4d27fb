//! asyncgate: a reverse proxy that makes slow synchronous HTTP routes
//! asynchronous without touching the backend.
//!
//! Requests on routes configured `async` are answered at once with
//! `202 Accepted` and a job URL; the gateway sends the original request to
//! the backend in the background ([`jobs`]), keeps the response in a store
//! ([`jobs::store`]) and serves the job's status, result and cancellation
//! ([`jobs::api`]), and calls back when a job ends if asked to
//! ([`webhook`]). Every other request is proxied through ([`proxy`]).
//!
//! Start with [`Config::load`] and [`Gateway::bind`].

pub mod body;
pub mod config;
pub mod defaults;
pub mod error;
mod error_chain;
mod gateway;
pub mod header_block;
pub mod headers;
pub mod jobs;
pub mod prefer;
pub mod problem;
pub mod proxy;
pub mod retry_after;
pub mod route;
pub mod route_table;
mod server;
pub mod shutdown;
mod sync;
pub mod upstream;
pub mod webhook;

pub use config::{Config, ConfigError};
pub use server::{Gateway, RunReport};
