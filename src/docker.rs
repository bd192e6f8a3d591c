//! The Docker engine connection (bollard).

use bollard::Docker;

use crate::error::{Error, Result};

/// Connects to the engine at `host` (`unix:///path`, `tcp://h:p`), or to the default
/// (`DOCKER_HOST`, then `/var/run/docker.sock`). Connecting is lazy: errors appear on the
/// first call.
pub fn connect(host: Option<&str>) -> Result<Docker> {
    let host = host
        .map(str::to_string)
        .or_else(|| std::env::var("DOCKER_HOST").ok());
    let r = match host.as_deref() {
        Some(h) if h.starts_with("unix://") => {
            Docker::connect_with_unix(h, 30, bollard::API_DEFAULT_VERSION)
        }
        Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => {
            Docker::connect_with_http(h, 30, bollard::API_DEFAULT_VERSION)
        }
        Some(h) if h.starts_with('/') => {
            Docker::connect_with_unix(h, 30, bollard::API_DEFAULT_VERSION)
        }
        Some(h) => {
            return Err(Error::InvalidInput(format!(
                "--docker-host: expected unix:///path or tcp://host:port, found {h:?}"
            )))
        }
        None => Docker::connect_with_local_defaults(),
    };
    r.map_err(|e| Error::Unavailable(format!("docker: {e}")))
}
