//! Rolling updates: how they go ([`UpdateConfig`]) and how one stands
//! ([`UpdateStatus`], driven by the orchestrator).

use super::*;

/// What a failed update (or rollback) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop updating.
    #[default]
    Pause,
    /// Carry on.
    Continue,
    /// Go back to the previous spec.
    Rollback,
}

impl FailureAction {
    /// `pause`, `continue` or `rollback`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureAction::Pause => "pause",
            FailureAction::Continue => "continue",
            FailureAction::Rollback => "rollback",
        }
    }
}

impl Words for FailureAction {
    const EXPECTED: &'static str = "pause, continue or rollback";
}

impl std::str::FromStr for FailureAction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pause" => Ok(FailureAction::Pause),
            "continue" => Ok(FailureAction::Continue),
            "rollback" => Ok(FailureAction::Rollback),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for FailureAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Order of replacement in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one.
    #[default]
    StopFirst,
    /// Start the new task, then stop the old one.
    StartFirst,
}

impl UpdateOrder {
    /// `stop-first` or `start-first`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
    }
}

impl Words for UpdateOrder {
    const EXPECTED: &'static str = "stop-first or start-first";
}

impl std::str::FromStr for UpdateOrder {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stop-first" => Ok(UpdateOrder::StopFirst),
            "start-first" => Ok(UpdateOrder::StartFirst),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for UpdateOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How updates (or rollbacks) proceed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once (0 = all).
    pub parallelism: u64,
    /// Pause between batches, ms.
    pub delay_ms: u64,
    /// On failure.
    pub failure_action: FailureAction,
    /// How long a new task is watched after it starts, ms.
    pub monitor_ms: u64,
    /// Fraction of failed tasks tolerated.
    pub max_failure_ratio: f64,
    /// Order.
    pub order: UpdateOrder,
}

impl Eq for UpdateConfig {}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: 5000,
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// Where a service's rolling update (or rollback) stands. JSON: the lower-case names
/// `updating`, `paused`, `completed`, `rollback_started`, `rollback_paused`,
/// `rollback_completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Tasks are being replaced with the new spec.
    Updating,
    /// Failures went past the ratio with failure action pause: no new replacement starts.
    Paused,
    /// Every task runs the new spec (or failed within the tolerated ratio).
    Completed,
    /// The previous spec was put back; tasks are being replaced with it.
    RollbackStarted,
    /// The rollback failed past its ratio: no new replacement starts.
    RollbackPaused,
    /// Every task runs the previous spec again.
    RollbackCompleted,
}

impl UpdateState {
    /// The lower-case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }

    /// True while tasks are being replaced (`updating`, `rollback_started`).
    pub fn is_active(&self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    /// True once nothing more happens (`completed`, `rollback_completed`).
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            UpdateState::Completed | UpdateState::RollbackCompleted
        )
    }

    /// True for the states of a rollback.
    pub fn is_rollback(&self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }
}

impl fmt::Display for UpdateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit of an update whose new task failed before it counted as updated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFailure {
    /// The unit: a replica slot, or a node id for global services.
    pub unit: u64,
    /// The task that failed.
    pub task_id: crate::store::TaskId,
    /// Why (`exited with code 3`, `unhealthy`, the rejection).
    pub reason: String,
    /// When it was counted, unix ms (the orchestrator's clock).
    pub at_ms: u64,
}

/// A service's update (or rollback) and its progress, written by the control API when
/// an update starts (with the spec change) and by the orchestrator as it goes. Stored
/// beside the service (`update/<id>`, see [`crate::store`]), so a new leader resumes
/// where the last one was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The state.
    pub state: UpdateState,
    /// What happened, for the operator (names the failing task and why).
    pub message: String,
    /// When the update (or rollback) started, unix ms.
    pub started_ms: u64,
    /// When it completed, unix ms.
    pub completed_ms: Option<u64>,
    /// The service version the update rolls out: tasks of the service's spec made from
    /// this version on were made by it, and their failures count.
    pub version: u64,
    /// Units counted as updated: unit (replica slot, or node id for global services) →
    /// when, unix ms; 0 for a unit that needed no new task.
    #[serde(default)]
    pub updated: BTreeMap<u64, u64>,
    /// Units whose new task failed, in order.
    #[serde(default)]
    pub failures: Vec<UpdateFailure>,
}

impl UpdateStatus {
    /// A fresh update (or rollback) of `version`, started at `now_ms`.
    pub fn new(state: UpdateState, version: u64, now_ms: u64, message: impl Into<String>) -> Self {
        UpdateStatus {
            state,
            message: message.into(),
            started_ms: now_ms,
            completed_ms: None,
            version,
            updated: BTreeMap::new(),
            failures: vec![],
        }
    }
}

/// True when going from `old` to `new` replaces tasks: the task spec, the published
/// ports or the networks (with their aliases) changed (a scale or a label does not),
/// and the service is not a job.
pub fn starts_update(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    !new.mode.is_job()
        && (old.task != new.task
            || old.ports != new.ports
            || old.attachments() != new.attachments())
}
