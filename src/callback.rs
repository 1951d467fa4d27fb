//! A callback before anything is sent: where it may go (its URL, and the
//! addresses its host may stand for, so no request is forged towards the
//! gateway's own network) and how it is signed (Standard Webhooks).

mod address;
pub(crate) mod signature;
pub(crate) mod target;
