//! The agent's types ↔ their messages in `proto/dispatcher.proto`: an [`Assignment`]
//! as the leader's session sends it. Store → wire cannot fail; wire → store names the
//! field it refuses, as in [`crate::proto::convert`] (which converts the task, ports
//! and image pin inside).

use super::executor::{AssignedNetwork, ImageSource, TaskNetwork};
use super::runner::Assignment;
use super::secrets::{Plain, TaskFile, MAX_FILES};
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::proto::convert::port;
use crate::store::{NetworkId, SecretId};

impl From<ImageSource> for pb::ImageSource {
    fn from(s: ImageSource) -> Self {
        pb::ImageSource {
            addr: s.addr,
            hostname: s.hostname,
            known: s.known,
        }
    }
}

impl From<pb::ImageSource> for ImageSource {
    fn from(s: pb::ImageSource) -> Self {
        ImageSource {
            addr: s.addr,
            hostname: s.hostname,
            known: s.known,
        }
    }
}

impl From<TaskNetwork> for pb::TaskNetwork {
    fn from(n: TaskNetwork) -> Self {
        pb::TaskNetwork {
            ports: n.ports.into_iter().map(Into::into).collect(),
            expose: n.expose.into_iter().map(u32::from).collect(),
            dns: n.dns,
            dns_search: n.dns_search,
            dns_options: n.dns_options,
            image_sources: n.image_sources.into_iter().map(Into::into).collect(),
            networks: n
                .networks
                .into_iter()
                .map(|n| pb::AssignedNetwork {
                    id: n.id.0,
                    name: n.name,
                    internal: n.internal,
                    encrypted: n.encrypted,
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::TaskNetwork> for TaskNetwork {
    type Error = Error;
    fn try_from(n: pb::TaskNetwork) -> Result<Self> {
        Ok(TaskNetwork {
            ports: n
                .ports
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            expose: n
                .expose
                .into_iter()
                .map(|p| port("net.expose", p))
                .collect::<Result<_>>()?,
            dns: n.dns,
            dns_search: n.dns_search,
            dns_options: n.dns_options,
            image_sources: n.image_sources.into_iter().map(Into::into).collect(),
            networks: n
                .networks
                .into_iter()
                .map(|n| {
                    // The id names a Docker network and a bridge device: 16 hex digits
                    // or the built-in network's, nothing else.
                    let id = NetworkId(n.id);
                    let ok = id.is_default()
                        || (id.0.len() == 16 && id.0.bytes().all(|b| b.is_ascii_hexdigit()));
                    if !ok {
                        return Err(Error::InvalidInput(format!(
                            "net.networks.id: {:?} is not a network id",
                            id.0
                        )));
                    }
                    Ok(AssignedNetwork {
                        id,
                        name: n.name,
                        internal: n.internal,
                        encrypted: n.encrypted,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

impl From<Assignment> for pb::Assignment {
    fn from(a: Assignment) -> Self {
        pb::Assignment {
            task: Some(a.task.into()),
            net: Some(a.net.into()),
            image_pin: a.image_pin.map(Into::into),
            files: a.files.into_iter().map(Into::into).collect(),
            volume_source: a.volume_source.map(|v| pb::VolumeSource {
                node: v.node.0,
                addr: v.addr,
                hostname: v.hostname,
                volumes: v.volumes,
            }),
        }
    }
}

impl From<TaskFile> for pb::AssignedFile {
    fn from(f: TaskFile) -> Self {
        pb::AssignedFile {
            kind: pb::SecretKind::from(f.kind).into(),
            name: f.name.clone(),
            id: f.id.0.clone(),
            version: f.version,
            path: f.path.clone(),
            uid: f.uid,
            gid: f.gid,
            mode: f.mode,
            data: f.data.0.clone(),
        }
    }
}

impl TryFrom<pb::AssignedFile> for TaskFile {
    type Error = Error;
    fn try_from(mut f: pb::AssignedFile) -> Result<Self> {
        let file = TaskFile {
            kind: crate::proto::convert::secret::kind_of("assignment.files.kind", f.kind)?,
            name: std::mem::take(&mut f.name),
            id: SecretId(std::mem::take(&mut f.id)),
            version: f.version,
            path: std::mem::take(&mut f.path),
            uid: f.uid,
            gid: f.gid,
            mode: f.mode,
            data: Plain(std::mem::take(&mut f.data)),
        };
        file.check()?;
        Ok(file)
    }
}

impl TryFrom<pb::Assignment> for Assignment {
    type Error = Error;
    fn try_from(a: pb::Assignment) -> Result<Self> {
        Ok(Assignment {
            task: a
                .task
                .ok_or_else(|| Error::InvalidInput("assignment.task: must be set".into()))?
                .try_into()?,
            net: a
                .net
                .map(TryInto::try_into)
                .transpose()?
                .unwrap_or_default(),
            image_pin: a.image_pin.map(Into::into),
            files: {
                if a.files.len() > MAX_FILES {
                    return Err(Error::InvalidInput(format!(
                        "assignment.files: at most {MAX_FILES} files"
                    )));
                }
                a.files
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_>>()?
            },
            volume_source: match a.volume_source {
                Some(v) => {
                    let v = crate::agent::volumes::VolumeSource {
                        node: crate::store::NodeId(v.node),
                        addr: v.addr,
                        hostname: v.hostname,
                        volumes: v.volumes,
                    };
                    v.check()?;
                    Some(v)
                }
                None => None,
            },
        })
    }
}
