//! Applying a command: [`State::apply`] dispatches each [`Command`] to the function of
//! its table, one file per concept: nodes and the cluster object ([`node`]), services
//! ([`service`]), networks ([`network`]), secrets and configs ([`secret`]), tasks ([`task`]), the root CA rotation ([`ca`]) and exactly-once
//! requests ([`once`]). Each returns the response for the proposer and the keys it
//! changed (see the module doc of [`crate::store`]).

mod ca;
mod network;
mod node;
mod once;
mod secret;
mod service;
mod task;

use super::{Command, Response, State};

/// What applying a command gives: the response for the proposer and the changed keys.
pub(super) type Applied = (Response, Vec<String>);

impl State {
    /// Applies one committed command. Returns the response for the proposer and the
    /// keys (see the module doc) whose value changed; [`State::value_of`] gives their
    /// new value, or `None` when deleted.
    pub fn apply(&mut self, cmd: &Command) -> (Response, Vec<String>) {
        let deleted = self.deleted_services(cmd);
        let (response, mut keys) = self.apply_one(cmd);
        // A change that may drop the last reference to a secret's older version.
        let drops_refs = matches!(
            cmd,
            Command::UpdateService { .. }
                | Command::RollbackService { .. }
                | Command::RemoveService { .. }
                | Command::DeleteTasks { .. }
                | Command::UpdateSecret { .. }
        );
        if drops_refs && response == Response::Ok {
            self.prune_secret_versions(&mut keys);
        }
        // A batch's commands recorded theirs as each was applied.
        if !matches!(cmd, Command::Batch { .. }) {
            self.record_changes(&keys, deleted);
        }
        (response, keys)
    }

    fn apply_one(&mut self, cmd: &Command) -> (Response, Vec<String>) {
        match cmd {
            Command::InitCluster { cluster, node } => self.init_cluster(cluster, node),
            Command::AddNode { node } => self.add_node(node),
            Command::UpdateNodeSpec {
                id,
                role,
                availability,
                labels_add,
                labels_rm,
            } => self.update_node_spec(id, role, availability, labels_add, labels_rm),
            Command::UpdateNodeStatus {
                id,
                status,
                description,
                addr,
                now_ms,
            } => self.update_node_status(id, status, description, addr, now_ms),
            Command::RemoveNode { id } => self.remove_node(id),
            Command::RotateSecret { role, secret } => self.rotate_secret(role, secret),
            Command::SetUnlockKey { unlock_key } => self.set_unlock_key(unlock_key),
            Command::CreateService { service } => self.create_service(service),
            Command::UpdateService { service } => self.update_service(service),
            Command::RollbackService {
                id,
                version,
                message,
                now_ms,
            } => self.rollback_service(id, version, message, now_ms),
            Command::SetUpdateStatus { updates } => self.set_update_status(updates),
            Command::SetVolumeHomes { homes } => self.set_volume_homes(homes),
            Command::RemoveService { id } => self.remove_service(id),
            Command::DeployStack {
                create,
                update,
                remove,
                create_networks,
                remove_networks,
                create_secrets,
                update_secrets,
                remove_secrets,
            } => self.deploy_stack(
                create,
                update,
                remove,
                create_networks,
                remove_networks,
                (create_secrets, update_secrets, remove_secrets),
            ),
            Command::CreateNetwork { network } => self.create_network(network),
            Command::RemoveNetwork { id } => self.remove_network(id),
            Command::CreateTasks { tasks } => self.create_tasks(tasks),
            Command::SetTaskDesired { updates } => self.set_task_desired(updates),
            Command::DeleteTasks { ids } => self.delete_tasks(ids),
            Command::AssignTasks {
                assign,
                pending,
                now_ms,
            } => self.assign_tasks(assign, pending, now_ms),
            Command::UpdateTaskStatus { updates } => self.update_task_status(updates),
            Command::StartCaRotation { rotation } => self.start_ca_rotation(rotation),
            Command::CaNodeMoved { id, new_digest } => self.ca_node_moved(id, new_digest),
            Command::FinishCaRotation { new_digest } => self.finish_ca_rotation(new_digest),
            Command::Noop => (Response::Ok, vec![]),
            Command::CreateSecret { secret } => self.create_secret(secret),
            Command::UpdateSecret { update, now_ms } => {
                self.update_secret(update.kind, &update.id, &update.version, *now_ms, &[])
            }
            Command::RemoveSecret { kind, id } => self.remove_secret(*kind, id),
            Command::Once {
                request,
                now_ms,
                reply,
                cmd,
            } => self.once(request, now_ms, reply, cmd),
            Command::Batch { cmds } => self.batch(cmds),
        }
    }

    /// Applies [`Command::Batch`]: each command as if it were an entry of its own.
    fn batch(&mut self, cmds: &[Command]) -> Applied {
        let mut responses = Vec::with_capacity(cmds.len());
        let mut keys = Vec::new();
        for cmd in cmds {
            let (response, changed) = match cmd {
                Command::Batch { .. } => {
                    (Response::Rejected("a batch within a batch".into()), vec![])
                }
                cmd => self.apply(cmd),
            };
            responses.push(response);
            keys.extend(changed);
        }
        keys.sort_unstable();
        keys.dedup();
        (Response::Batch(responses), keys)
    }
}
