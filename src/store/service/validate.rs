//! The spec checked at the control API's door: each refusal names the field
//! (`name`, `mode.replicas`, `task.placement.constraints[0]`), and the CLI shows the
//! flag instead.

use super::*;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

impl ServiceSpec {
    /// Checks the spec at the control API's door; the error names the field at fault
    /// (`ports: ...`, `mode.replicas: ...`), which the CLI shows as its flag
    /// ([`crate::cli::fields`]) and a compose file under its service.
    pub fn validate(&self) -> Result<()> {
        if !valid_name(&self.name) {
            return Err(Error::InvalidInput(format!(
                "name: {:?} is not a valid service name (letters, digits, '-', '_', '.'; at most 63; starting with a letter or digit)",
                self.name
            )));
        }
        if self.task.container.image.trim().is_empty() {
            return Err(Error::InvalidInput("image: must not be empty".into()));
        }
        crate::store::image::check_docker_reference(&self.task.container.image)?;
        self.validate_mode()?;
        self.validate_ports()?;
        self.validate_task()?;
        self.validate_depends_on()?;
        template::check_spec(self)?;
        crate::store::network::validate_attachments(&self.networks)?;
        if self.endpoint_mode == EndpointMode::Dnsrr
            && self.ports.iter().any(PortConfig::is_ingress)
        {
            return Err(Error::InvalidInput(
                "endpoint_mode: dnsrr cannot publish a port through the mesh (use mode: host)"
                    .into(),
            ));
        }
        for (field, u) in [("update", &self.update), ("rollback", &self.rollback)] {
            if !(0.0..=1.0).contains(&u.max_failure_ratio) {
                return Err(Error::InvalidInput(format!(
                    "{field}.max_failure_ratio: expected a number from 0 to 1"
                )));
            }
        }
        Ok(())
    }

    /// `mode`: counts within bounds, a job at least 1.
    fn validate_mode(&self) -> Result<()> {
        const MAX_REPLICAS: u64 = 100_000;
        match self.mode {
            ServiceMode::Replicated { replicas } if replicas > MAX_REPLICAS => {
                return Err(Error::InvalidInput(format!(
                    "mode.replicas: at most {MAX_REPLICAS}, found {replicas}"
                )))
            }
            ServiceMode::ReplicatedJob {
                total_completions, ..
            } if total_completions > MAX_REPLICAS => {
                return Err(Error::InvalidInput(format!(
                    "mode.total_completions: at most {MAX_REPLICAS}, found {total_completions}"
                )))
            }
            _ => {}
        }
        if let ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } = self.mode
        {
            if total_completions == 0 {
                return Err(Error::InvalidInput(
                    "mode.total_completions: a job runs at least 1".into(),
                ));
            }
            if max_concurrent == 0 {
                return Err(Error::InvalidInput(
                    "mode.max_concurrent: a job runs at least 1 task at a time".into(),
                ));
            }
        }
        Ok(())
    }

    /// `ports`: a target, PROXY protocol only where the mesh forwards TCP, no port twice.
    fn validate_ports(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.ports {
            if p.target == 0 {
                return Err(Error::InvalidInput(
                    "ports: the target port must be 1-65535".into(),
                ));
            }
            if p.proxy_protocol != ProxyProtocol::None
                && (p.protocol != Protocol::Tcp || !p.is_ingress())
            {
                return Err(Error::InvalidInput(format!(
                    "ports: proxy-protocol={} needs a published TCP port in ingress mode",
                    p.proxy_protocol.as_str()
                )));
            }
            if p.published != 0 && !seen.insert((p.published, p.protocol)) {
                return Err(Error::InvalidInput(format!(
                    "ports: port {}/{} is published twice",
                    p.published,
                    p.protocol.as_str()
                )));
            }
        }
        Ok(())
    }

    /// `task`: the environment, mounts and placement.
    fn validate_task(&self) -> Result<()> {
        for e in &self.task.container.env {
            if e.is_empty() || e.starts_with('=') {
                return Err(Error::InvalidInput(format!(
                    "task.container.env: expected K=V, found {e:?}"
                )));
            }
        }
        for m in &self.task.container.mounts {
            if !m.target.starts_with('/') {
                return Err(Error::InvalidInput(format!(
                    "task.container.mounts: target must be an absolute path, found {:?}",
                    m.target
                )));
            }
            if m.kind == MountKind::Bind && !m.source.starts_with('/') {
                return Err(Error::InvalidInput(format!(
                    "task.container.mounts: a bind source must be an absolute path, found {:?}",
                    m.source
                )));
            }
        }
        if let Some(m) = self
            .task
            .container
            .mounts
            .iter()
            .find(|m| (m.follow || m.keep) && !m.is_named_local_volume())
        {
            return Err(Error::InvalidInput(format!(
                "task.container.mounts: only a named volume of the local driver can follow its task, not {:?} ({})",
                m.target, m.kind
            )));
        }
        crate::store::volume::check_spec(self, "task.container.mounts")?;
        self.task.container.options.validate()?;
        check_generic_resources(&self.task.resources.generic_resources)
            .map_err(|w| Error::InvalidInput(format!("task.resources.generic_resources: {w}")))?;
        for (i, c) in self.task.placement.constraints.iter().enumerate() {
            c.check(&format!("task.placement.constraints[{i}]"))?;
        }
        for p in &self.task.placement.preferences {
            if !p.is_valid() {
                return Err(Error::InvalidInput(format!(
                    "task.placement.preferences: expected spread=KEY, KEY one of {}, found spread={p}",
                    crate::store::constraint::PREFERENCES
                )));
            }
        }
        Ok(())
    }

    /// `depends_on`: other services, by valid names.
    fn validate_depends_on(&self) -> Result<()> {
        for d in &self.depends_on {
            if d.service == self.name {
                return Err(Error::InvalidInput(format!(
                    "depends_on: service {} cannot depend on itself",
                    self.name
                )));
            }
            if !valid_name(&d.service) {
                return Err(Error::InvalidInput(format!(
                    "depends_on: {:?} is not a valid service name",
                    d.service
                )));
            }
        }
        Ok(())
    }
}
