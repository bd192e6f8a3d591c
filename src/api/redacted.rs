//! `Debug` for the generated messages that carry keys, join secrets or tokens
//! (`build.rs` skips theirs): they show which fields are set, never those values.

use std::fmt;

use crate::proto::{
    AssignedFile, CaJoinRequest, InitResponse, JoinRequest, JoinTokenResponse, ManagerKeys,
    SecretData, StackSecret, UnlockKeyResponse, UnlockRequest, UpdateClusterResponse,
};

fn shown(s: &str) -> &'static str {
    if s.is_empty() {
        ""
    } else {
        "[elided]"
    }
}

impl fmt::Debug for ManagerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerKeys")
            .field("data_key", &"[elided]")
            .field("unlock_key", &shown(&self.unlock_key))
            .finish()
    }
}

impl fmt::Debug for InitResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitResponse")
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("worker_token", &shown(&self.worker_token))
            .field("manager_token", &shown(&self.manager_token))
            .field("advertise_addr", &self.advertise_addr)
            .field("unlock_key", &shown(&self.unlock_key))
            .field("removed_managers", &self.removed_managers)
            .finish()
    }
}

impl fmt::Debug for UnlockRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockRequest")
            .field("key", &shown(&self.key))
            .finish()
    }
}

impl fmt::Debug for UpdateClusterResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateClusterResponse")
            .field("autolock", &self.autolock)
            .field("unlock_key", &shown(&self.unlock_key))
            .finish()
    }
}

impl fmt::Debug for UnlockKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockKeyResponse")
            .field("key", &shown(&self.key))
            .finish()
    }
}

impl fmt::Debug for CaJoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaJoinRequest")
            .field("secret", &shown(&self.secret))
            .field("advertise_addr", &self.advertise_addr)
            .field("hostname", &self.hostname)
            .field("forwarded_for", &self.forwarded_for)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("token", &shown(&self.token))
            .field("remote_addr", &self.remote_addr)
            .field("advertise_addr", &self.advertise_addr)
            .field("listen_addr", &self.listen_addr)
            .finish()
    }
}

impl fmt::Debug for JoinTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenResponse")
            .field("token", &shown(&self.token))
            .field("manager_addr", &self.manager_addr)
            .finish()
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("data", &format_args!("[{} bytes elided]", self.data.len()))
            .finish()
    }
}

impl fmt::Debug for AssignedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssignedFile")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("id", &self.id)
            .field("version", &self.version)
            .field("path", &self.path)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &self.mode)
            .field("data", &format_args!("[{} bytes elided]", self.data.len()))
            .finish()
    }
}

impl fmt::Debug for StackSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackSecret")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("external", &self.external)
            .field("labels", &self.labels)
            .field(
                "data",
                &format_args!("[{} bytes elided]", self.data.as_ref().map_or(0, Vec::len)),
            )
            .finish()
    }
}
