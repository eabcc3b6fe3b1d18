//! Which side of a `fork()` this process is on, without a system call: a counter that a
//! `pthread_atfork` child handler increments in every forked child.
//!
//! State that must not be carried over into a child (the TLSRPT counts an engine has not yet
//! written, which the parent writes itself) remembers the generation it was made in and compares
//! it on use. The handler is registered the first time [`generation`] is called, so every fork
//! after that is seen; state made before a fork always called it first. Asking the kernel for the
//! pid instead costs a system call (about 70 ns) on every counted session.
//!
//! Besides `src/ffi`, this is the only module with `unsafe` code: the one registration call.

#![allow(unsafe_code)]

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCH: Once = Once::new();

extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::AcqRel);
}

/// The number of `fork()`s between the first process that asked and this one: equal in two
/// calls exactly when no fork separates them (from the first call on).
pub fn generation() -> u64 {
    WATCH.call_once(|| {
        // SAFETY: registers a plain extern "C" function that only touches an atomic, which is
        // async-signal-safe as a fork handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    FORKS.load(Ordering::Acquire)
}
