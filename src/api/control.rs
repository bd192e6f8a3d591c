//! `Control`: the cluster's state, served by the leader on the local socket and the
//! cluster port (managers only). Each handler is one line over a domain function
//! ([`super::nodes`], [`super::services`], [`super::stacks`], [`super::networks`],
//! [`super::keys`]): reads go
//! through `leader_call!`, writes through `leader_write!` ([`super::route`]: authorise a
//! manager, refuse a forward past its deadline, run on the leader or forward, and apply
//! a write once however often it is retried). `ServiceLogs` and `Events` are the calls any
//! manager serves itself ([`super::logs`], [`super::events`]).

use tonic::{Request, Response, Status};

use super::route::{leader_call, leader_write};
use super::{auth, events, keys, logs, networks, nodes, secrets, services, stacks};
use crate::host::Host;
use crate::net::peer_of;
use crate::proto::*;
use crate::store::Role;

/// `Control`: cluster state, served by the leader.
pub struct ControlApi {
    /// The node.
    pub(super) d: Host,
}

#[tonic::async_trait]
impl control_server::Control for ControlApi {
    async fn join_token(
        &self,
        req: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        leader_write!(self, req, join_token, |m, r: JoinTokenRequest| {
            nodes::join_token(&m, &r.role, r.rotate).await
        })
    }

    async fn list_nodes(&self, req: Request<Empty>) -> Result<Response<ListNodesResponse>, Status> {
        leader_call!(self, req, list_nodes, |m, _r: Empty| Ok(nodes::list(&m)))
    }

    async fn inspect_node(&self, req: Request<NodeRef>) -> Result<Response<NodeInfo>, Status> {
        leader_call!(self, req, inspect_node, |m, r: NodeRef| nodes::inspect(
            &m, &r.node
        ))
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        leader_write!(self, req, update_node, |m, r: UpdateNodeRequest| {
            nodes::update(&m, r).await
        })
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<Empty>, Status> {
        leader_write!(self, req, remove_node, |m, r: RemoveNodeRequest| {
            nodes::remove(&m, &r.node, r.force).await.map(|_| Empty {})
        })
    }

    // `update_cluster` and `unlock_key` write, yet are not `leader_write!`: their reply
    // is an unlock key, and a recorded reply lives in the replicated state in the clear.
    // A retry turns autolock on only once (then answers without the key: `orc
    // unlock-key` shows it) and a retried rotation answers the key in force.
    async fn update_cluster(
        &self,
        req: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        leader_call!(self, req, update_cluster, |m, r: UpdateClusterRequest| {
            keys::update_cluster(&m, r).await
        })
    }

    async fn unlock_key(
        &self,
        req: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        leader_call!(self, req, unlock_key, |m, r: UnlockKeyRequest| {
            keys::unlock_key(&m, r.rotate).await
        })
    }

    type ServiceLogsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogLine, Status>> + Send>>;

    async fn create_service(
        &self,
        req: Request<ServiceSpecRequest>,
    ) -> Result<Response<ServiceRef>, Status> {
        leader_write!(self, req, create_service, |m, r: ServiceSpecRequest| {
            services::create(&m, r.spec).await
        })
    }

    async fn update_service(
        &self,
        req: Request<ServiceSpecRequest>,
    ) -> Result<Response<ServiceRef>, Status> {
        leader_write!(self, req, update_service, |m, r: ServiceSpecRequest| {
            services::update(&m, &r.service, r.spec).await
        })
    }

    async fn scale_service(
        &self,
        req: Request<ScaleRequest>,
    ) -> Result<Response<ServiceRef>, Status> {
        leader_write!(self, req, scale_service, |m, r: ScaleRequest| {
            services::scale(&m, &r.service, r.replicas).await
        })
    }

    async fn rollback_service(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<ServiceRef>, Status> {
        leader_write!(self, req, rollback_service, |m, r: ServiceRef| {
            services::rollback(&m, &r.service).await
        })
    }

    async fn remove_service(&self, req: Request<ServiceRef>) -> Result<Response<Empty>, Status> {
        leader_write!(self, req, remove_service, |m, r: ServiceRef| {
            services::remove(&m, &r.service).await.map(|_| Empty {})
        })
    }

    async fn list_services(
        &self,
        req: Request<Empty>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        leader_call!(self, req, list_services, |m, _r: Empty| services::list(&m))
    }

    async fn inspect_service(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<ServiceInspect>, Status> {
        leader_call!(self, req, inspect_service, |m, r: ServiceRef| {
            services::inspect(&m, &r.service)
        })
    }

    async fn service_tasks(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<ServiceTasksResponse>, Status> {
        leader_call!(self, req, service_tasks, |m, r: ServiceRef| {
            services::tasks(&m, &r.service)
        })
    }

    async fn service_logs(
        &self,
        req: Request<LogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        // Any manager can gather logs: no need to go through the leader.
        auth::require_role(&self.d, &peer_of(&req), Role::Manager)?;
        Ok(Response::new(
            logs::service_logs(&self.d, req.into_inner()).await?,
        ))
    }

    async fn deploy_stack(
        &self,
        req: Request<StackRequest>,
    ) -> Result<Response<StackPlan>, Status> {
        leader_write!(self, req, deploy_stack, |m, r: StackRequest| {
            stacks::deploy(&m, r).await
        })
    }

    async fn remove_stack(
        &self,
        req: Request<StackRequest>,
    ) -> Result<Response<StackPlan>, Status> {
        leader_write!(self, req, remove_stack, |m, r: StackRequest| {
            stacks::remove(&m, &r.name).await
        })
    }

    async fn create_network(&self, req: Request<NetworkSpec>) -> Result<Response<Network>, Status> {
        leader_write!(self, req, create_network, |m, r: NetworkSpec| {
            networks::create(&m, r).await
        })
    }

    async fn list_networks(
        &self,
        req: Request<Empty>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        leader_call!(self, req, list_networks, |m, _r: Empty| networks::list(&m))
    }

    async fn inspect_network(
        &self,
        req: Request<NetworkRef>,
    ) -> Result<Response<NetworkView>, Status> {
        leader_call!(self, req, inspect_network, |m, r: NetworkRef| {
            networks::inspect(&m, &r.network)
        })
    }

    async fn remove_network(&self, req: Request<NetworkRef>) -> Result<Response<Empty>, Status> {
        leader_write!(self, req, remove_network, |m, r: NetworkRef| {
            networks::remove(&m, &r.network).await.map(|_| Empty {})
        })
    }

    async fn create_secret(
        &self,
        req: Request<SecretData>,
    ) -> Result<Response<SecretView>, Status> {
        leader_write!(self, req, create_secret, |m, r: SecretData| {
            secrets::create(&m, r).await
        })
    }

    async fn list_secrets(
        &self,
        req: Request<SecretKindRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        leader_call!(self, req, list_secrets, |m, r: SecretKindRequest| {
            secrets::list(&m, r)
        })
    }

    async fn inspect_secret(
        &self,
        req: Request<SecretName>,
    ) -> Result<Response<SecretView>, Status> {
        leader_call!(self, req, inspect_secret, |m, r: SecretName| {
            secrets::inspect(&m, r)
        })
    }

    async fn update_secret(
        &self,
        req: Request<SecretData>,
    ) -> Result<Response<SecretView>, Status> {
        leader_write!(self, req, update_secret, |m, r: SecretData| {
            secrets::update(&m, r).await
        })
    }

    async fn remove_secret(&self, req: Request<SecretName>) -> Result<Response<Empty>, Status> {
        leader_write!(self, req, remove_secret, |m, r: SecretName| {
            secrets::remove(&m, r).await.map(|_| Empty {})
        })
    }

    async fn ca_status(&self, req: Request<Empty>) -> Result<Response<CaStatusResponse>, Status> {
        leader_call!(self, req, ca_status, |m, _r: Empty| nodes::ca_status(&m))
    }

    async fn rotate_ca(
        &self,
        req: Request<RotateCaRequest>,
    ) -> Result<Response<CaStatusResponse>, Status> {
        leader_write!(self, req, rotate_ca, |m, r: RotateCaRequest| {
            nodes::ca_rotate(&m, r.cert_validity_secs).await
        })
    }

    type EventsStream = events::EventStream;

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        // Each manager serves its own events: no need to go through the leader.
        auth::require_role(&self.d, &peer_of(&req), Role::Manager)?;
        Ok(Response::new(events::events(&self.d, req.into_inner())?))
    }

    async fn list_volumes(
        &self,
        req: Request<Empty>,
    ) -> Result<Response<crate::proto::ListVolumesResponse>, Status> {
        // Any manager asks the nodes itself: its own state names them.
        auth::require_role(&self.d, &peer_of(&req), Role::Manager)?;
        Ok(Response::new(super::volumes::list_volumes(&self.d).await?))
    }

    async fn barrier(&self, req: Request<Empty>) -> Result<Response<BarrierResponse>, Status> {
        leader_call!(self, req, barrier, |m, _r: Empty| {
            m.propose(crate::store::Command::Noop).await?;
            let index = *m.sm.subscribe().borrow();
            Ok(BarrierResponse { index })
        })
    }
}
