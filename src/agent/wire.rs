//! The agent's types ↔ their messages in `proto/dispatcher.proto`: an [`Assignment`]
//! as the leader's session sends it. Store → wire cannot fail; wire → store names the
//! field it refuses, as in [`crate::proto::convert`] (which converts the task, ports
//! and image pin inside).

use super::executor::{ImageSource, TaskNetwork};
use super::runner::Assignment;
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::proto::convert::port;

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
        })
    }
}

impl From<Assignment> for pb::Assignment {
    fn from(a: Assignment) -> Self {
        pb::Assignment {
            task: Some(a.task.into()),
            net: Some(a.net.into()),
            image_pin: a.image_pin.map(Into::into),
        }
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
        })
    }
}
