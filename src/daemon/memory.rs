//! Memory the daemon freed, given back to the system.
//!
//! glibc's allocator keeps memory that was freed in the middle of its heaps for the
//! next allocations; only the top of a heap is given back on its own. A leader's
//! memory peaks while it places tasks (status batches, endpoint changes, session
//! messages in flight) and what it freed then stayed in its RSS: at 1,000 nodes and
//! 30,000 tasks, 559 MB resident of which 178 MB were free (`malloc_trim` called from
//! a debugger: 381 MB after). Every [`TRIM_EVERY`] the daemon asks glibc to give back
//! the free pages of every heap (`malloc_trim(0)`, on a blocking thread; it takes each
//! arena's lock in turn). Elsewhere than glibc, nothing is done.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed memory is given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Gives the free pages of every heap back to the system; true if some were.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer and is safe to call from any thread at
        // any time (it locks each arena while it trims it).
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every [`TRIM_EVERY`] until `stop`.
pub fn spawn_trimmer(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let _ = tokio::task::spawn_blocking(|| {
                let started = std::time::Instant::now();
                trim();
                // It holds each arena's lock while it trims it: a long one holds up
                // every thread that allocates meanwhile.
                let took = started.elapsed();
                if took > Duration::from_millis(100) {
                    tracing::info!("freed memory given back in {took:?}");
                }
            })
            .await;
        }
    });
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }

    #[test]
    fn memory_freed_in_the_middle_of_the_heap_is_given_back() {
        const BLOCK: usize = 4096;
        const BLOCKS: usize = 64 * 1024; // 256 MiB
        let mut blocks: Vec<Option<Vec<u8>>> = (0..BLOCKS)
            .map(|i| Some(vec![(i % 251) as u8 + 1; BLOCK]))
            .collect();
        // One block in 16 stays: the heap's top cannot shrink, the rest is free in the
        // middle of it.
        for (i, b) in blocks.iter_mut().enumerate() {
            if i % 16 != 0 {
                *b = None;
            }
        }
        let freed = rss();
        assert!(trim(), "glibc gave nothing back");
        let trimmed = rss();
        let kept: usize = blocks.iter().flatten().map(|b| b[0] as usize).sum();
        assert!(kept > 0);
        // About 240 MiB were free; at least half of it must be given back (other tests
        // allocate meanwhile in this process).
        assert!(
            freed.saturating_sub(trimmed) >= 120 << 20,
            "resident before {} MiB, after {} MiB",
            freed >> 20,
            trimmed >> 20
        );
    }
}
