//! Consensus: openraft 0.9 with the log and the state machine on sled.
//!
//! Managers are Raft voters; workers are not members of Raft at all (they talk to the
//! dispatcher). The pieces:
//!
//! - [`command`]: the payload of a normal entry, a command with its bytes.
//! - [`log_store`]: the Raft log, vote and commit index in sled (`raft_log`, `raft_meta`
//!   trees of a db of their own, `raft` in the data dir). Appends are flushed before
//!   openraft is told they are durable; that flush writes the log only.
//! - [`state_machine`]: applies committed [`Command`]s to the [`State`] tables, keeps them
//!   in memory, builds and installs snapshots (`snapshot` tree in sled): a restart
//!   starts from the current snapshot and applies the log after it again.
//! - [`network`]: the Raft RPCs over the cluster's mTLS gRPC connections.
//! - [`recovery`]: `orc init --force-new-cluster`, the rewrite of a survivor's log that
//!   restarts it as the only voter after its cluster lost quorum for good.
//!
//! Both stores pass openraft's conformance `Suite` (see the tests in each module).

pub mod command;
pub mod log_store;
pub mod network;
pub mod recovery;
pub mod state_machine;
pub mod wire;

use crate::store::Response;
#[allow(unused_imports)]
use crate::store::State;
pub use command::LogCommand;

openraft::declare_raft_types!(
    /// The openraft type configuration of orc.
    pub TypeConfig:
        D = LogCommand,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running Raft node.
pub type Raft = openraft::Raft<TypeConfig>;

/// The runtime Raft's own tasks run on: openraft's core, its replication to each
/// follower, the state machine's worker, and the channels they send on. Apart from the
/// daemon's runtime, whose workers the leader's sessions, control calls and status
/// reports keep busy: behind them at 300 nodes, heartbeats to followers missed their
/// 100 ms and leadership moved every few seconds. Stopped when dropped.
pub struct RaftRuntime {
    rt: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
}

/// The nice value of Raft's threads ([`RaftRuntime`]), where the process may raise
/// them (as root): ahead of the daemon's other threads for the CPU. On a saturated
/// manager (1,000 sessions, 100,000 tasks placed, two cores) Raft's thread got its
/// turn after every other runnable thread's, heartbeats missed their 100 ms to both
/// followers at once, and leadership moved dozens of times while the tasks were placed.
pub const RAFT_NICE: i32 = -10;

/// Gives the calling thread [`RAFT_NICE`] (Linux sets a nice value per thread); a
/// process not allowed to (not root) keeps the one it has.
fn raise_priority() {
    // SAFETY: gettid and setpriority take no pointers and touch only this thread's
    // scheduling value.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS as _, tid as libc::id_t, RAFT_NICE)
    };
    if r != 0 {
        tracing::debug!(
            "raft runtime: its threads keep their priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl RaftRuntime {
    /// A runtime of one worker thread (a batch being applied hands the others' tasks
    /// to another thread, see [`cpu_heavy`]), its threads ahead of the daemon's others
    /// ([`RAFT_NICE`]).
    pub fn new() -> crate::Result<RaftRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("orc-raft")
            .on_thread_start(raise_priority)
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Internal(format!("raft runtime: {e}")))?;
        Ok(RaftRuntime {
            rt: std::sync::Mutex::new(Some(rt)),
        })
    }

    /// Runs `f` on this runtime; its spawned tasks run here too.
    pub async fn run<F>(&self, f: F) -> crate::Result<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self
            .rt
            .lock()
            .expect("raft runtime lock")
            .as_ref()
            .map(|rt| rt.handle().clone())
            .ok_or_else(|| crate::Error::Internal("raft runtime: stopped".into()))?;
        handle
            .spawn(f)
            .await
            .map_err(|e| crate::Error::Internal(format!("raft runtime: {e}")))
    }

    /// Stops the runtime's tasks (without waiting for them: it may be called from
    /// within another runtime).
    pub fn stop(&self) {
        if let Some(rt) = self.rt.lock().expect("raft runtime lock").take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `f`, which may hold the CPU for a while (applying a batch of entries, writing
/// one to the log), without holding up the other tasks queued on this worker of a
/// multi-thread runtime: `block_in_place` hands them to another thread first. Raft's
/// heartbeats and the sessions are such tasks; stuck behind an apply they would wait
/// for it. Elsewhere (a current-thread runtime, no runtime) `f` simply runs.
pub(crate) fn cpu_heavy<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Whether a task woken by a task that then holds its thread for `hold` runs while
    /// it holds it, on a runtime of one worker (the woken task waits in that worker's
    /// slot for the next task, where no other thread takes it from).
    async fn ran_meanwhile(heavy: bool, hold: Duration) -> bool {
        tokio::spawn(async move {
            let ran = Arc::new(AtomicBool::new(false));
            let r = ran.clone();
            tokio::spawn(async move { r.store(true, Ordering::SeqCst) });
            let sleep = || std::thread::sleep(hold);
            if heavy {
                super::cpu_heavy(sleep);
            } else {
                sleep();
            }
            ran.load(Ordering::SeqCst)
        })
        .await
        .expect("task")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_long_apply_does_not_hold_up_the_tasks_behind_it() {
        // Control: held plainly, the woken task runs only after.
        assert!(!ran_meanwhile(false, Duration::from_millis(300)).await);
        assert!(ran_meanwhile(true, Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn on_a_current_thread_runtime_it_simply_runs() {
        assert_eq!(super::cpu_heavy(|| 7), 7);
    }

    /// This thread's nice value.
    fn nice() -> i32 {
        // SAFETY: no pointers; reads this thread's scheduling value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS as _, libc::gettid() as libc::id_t) }
    }

    /// Raft's threads run ahead of the others where the process may raise them (root,
    /// as the daemon and the CI run); elsewhere they keep their priority.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raft_threads_run_ahead_of_the_daemons_others() {
        let rt = super::RaftRuntime::new().expect("runtime");
        let (raft, blocking) = rt
            .run(async {
                let worker = nice();
                let blocking = super::cpu_heavy(nice);
                (worker, blocking)
            })
            .await
            .expect("ran");
        // Control: a thread of another runtime keeps its own.
        let other = nice();
        assert_ne!(other, super::RAFT_NICE);
        // SAFETY: no pointers.
        let root = unsafe { libc::geteuid() } == 0;
        let want = if root { super::RAFT_NICE } else { other };
        assert_eq!((raft, blocking), (want, want));
        rt.stop();
    }
}
