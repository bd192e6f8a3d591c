//! Ports for tests that start listeners of their own. Shared by the integration tests
//! (`tests/common`), the benches and the library's unit tests (through `#[path]`).
//!
//! Asking the kernel for port 0 and closing the listener hands out a port from the
//! ephemeral range, where two calls can return the same port and where any outgoing
//! connection may take it before the daemon binds it (a CI run failed on exactly
//! that: two nodes of one test cluster got the same port). So ports come from below
//! the ephemeral range, each at most once per process, from a start that differs per
//! process, and only if a listener can bind them right now.

use std::sync::atomic::{AtomicU32, Ordering};

/// The next candidate, as an offset into the range (0: not yet started).
static CURSOR: AtomicU32 = AtomicU32::new(0);

/// The ports handed out: [LOW, high), where high is the start of the kernel's
/// ephemeral range (or 32768 if it cannot be read).
const LOW: u32 = 10_000;

fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A TCP port free on every address right now, never handed out before by this
/// process. Falls back to the kernel's choice when the range below the ephemeral
/// one is used up or too small.
pub fn free_port() -> u16 {
    let high = ephemeral_start();
    if high > LOW + 1_000 {
        let span = high - LOW;
        let _ = CURSOR.compare_exchange(
            0,
            1 + (std::process::id().wrapping_mul(7_919)) % span,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        for _ in 0..span {
            let offset = CURSOR.fetch_add(1, Ordering::SeqCst);
            let port = LOW + offset % span;
            if let Ok(port) = u16::try_from(port) {
                if bindable(port) {
                    return port;
                }
            }
        }
    }
    std::net::TcpListener::bind("0.0.0.0:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}
