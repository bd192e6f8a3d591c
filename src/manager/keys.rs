//! The secrets a manager opens with the cluster's data key: the root CA's key, the join
//! secrets, the unlock key, and the keys a new manager receives with its certificate.
//! Sealed in the state ([`crate::store::Sealed`]), opened only here.

use super::Manager;
use crate::ca::RootCa;
use crate::error::{Error, Result};
use crate::keys::{Purpose, UnlockKey};
use crate::proto;
use crate::store::{Cluster, Role, Sealed};

fn secret_purpose(role: Role) -> Purpose {
    match role {
        Role::Manager => Purpose::ManagerSecret,
        Role::Worker => Purpose::WorkerSecret,
    }
}

impl Manager {
    /// The cluster object.
    pub fn cluster(&self) -> Result<Cluster> {
        self.read(|s| s.cluster.clone())
            .ok_or_else(|| Error::Unavailable("the cluster is not initialised".into()))
    }

    /// The root CA, its key opened with the data key.
    pub fn root_ca(&self) -> Result<RootCa> {
        let c = self.cluster()?;
        let key = self.data_key().open_string(Purpose::CaKey, &c.ca_key)?;
        RootCa::from_pem(&c.ca_cert_pem, &key)
    }

    /// A root CA key (PEM) sealed with the data key (a rotation's new root).
    pub fn seal_ca_key(&self, key_pem: &str) -> Result<Sealed> {
        self.data_key().seal_str(Purpose::CaKey, key_pem)
    }

    /// Opens a root CA key sealed with [`Manager::seal_ca_key`].
    pub fn open_ca_key(&self, sealed: &Sealed) -> Result<String> {
        self.data_key().open_string(Purpose::CaKey, sealed)
    }

    /// The secret of the join token for `role`, opened with the data key.
    pub fn join_secret(&self, role: Role) -> Result<String> {
        let c = self.cluster()?;
        let sealed = match role {
            Role::Manager => &c.manager_secret,
            Role::Worker => &c.worker_secret,
        };
        self.data_key().open_string(secret_purpose(role), sealed)
    }

    /// Seals a new join secret for `role` (for [`crate::store::Command::RotateSecret`]).
    pub fn seal_join_secret(&self, role: Role, secret: &str) -> Result<Sealed> {
        self.data_key().seal_str(secret_purpose(role), secret)
    }

    /// The unlock key, when autolock is on.
    pub fn unlock_key(&self) -> Result<Option<UnlockKey>> {
        self.cluster()?
            .unlock_key
            .map(|s| UnlockKey::open_with(self.data_key(), &s))
            .transpose()
    }

    /// The web dashboard's token (`orc dashboard token`): HMAC-SHA256 of a label of its
    /// own under the root CA's key, hex. The same on every manager, never stored, and
    /// changed by `orc ca rotate` (which is how an operator revokes a token that
    /// leaked).
    pub fn dashboard_token(&self) -> Result<String> {
        let c = self.cluster()?;
        let ca_key = self.data_key().open_string(Purpose::CaKey, &c.ca_key)?;
        Ok(dashboard_token_of(ca_key.as_bytes()))
    }

    /// What a node given `role` receives with its certificate: the keys for a manager,
    /// nothing for a worker.
    pub fn manager_keys(&self, role: Role) -> Result<Option<proto::ManagerKeys>> {
        if role != Role::Manager {
            return Ok(None);
        }
        Ok(Some(proto::ManagerKeys {
            data_key: self.data_key().as_bytes().to_vec(),
            unlock_key: self.unlock_key()?.map(|u| u.reveal()).unwrap_or_default(),
        }))
    }
}

/// [`Manager::dashboard_token`] from the root CA key's bytes. Pure.
pub fn dashboard_token_of(ca_key: &[u8]) -> String {
    use ring::hmac;
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, ca_key),
        b"orc dashboard token v1",
    );
    hex::encode(tag.as_ref())
}
