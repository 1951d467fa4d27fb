//! Locking the few `std` mutexes the gateway keeps: maps and queues whose
//! every critical section is one operation that cannot panic halfway, so a
//! lock poisoned by a panic elsewhere still guards consistent data.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
