//! Control API operations on autolock, run on the leader: `orc cluster update
//! --autolock`, `orc unlock-key [--rotate]`. The unlock key goes into the cluster object
//! sealed with the data key; every manager follows it and re-wraps its data key file
//! (see [`crate::keys`]).

use crate::error::{Error, Result};
use crate::keys::UnlockKey;
use crate::manager::Manager;
use crate::proto;
use crate::store::Command;

/// `cluster update`: turns autolock on (answering the new key) or off; unchanged when
/// the flag is absent or already has that value.
pub async fn update_cluster(
    m: &Manager,
    req: proto::UpdateClusterRequest,
) -> Result<proto::UpdateClusterResponse> {
    let want = match req.autolock.as_str() {
        "" => None,
        "true" => Some(true),
        "false" => Some(false),
        other => {
            return Err(Error::InvalidInput(format!(
                "autolock: expected true or false, found {other:?}"
            )))
        }
    };
    let on = m.cluster()?.unlock_key.is_some();
    let mut key = String::new();
    match want {
        Some(true) if !on => {
            let u = UnlockKey::generate()?;
            m.propose(Command::SetUnlockKey {
                unlock_key: Some(u.seal_with(m.data_key())?),
            })
            .await?;
            tracing::info!("autolock turned on");
            key = u.reveal();
        }
        Some(false) if on => {
            m.propose(Command::SetUnlockKey { unlock_key: None })
                .await?;
            tracing::info!("autolock turned off");
        }
        _ => {}
    }
    Ok(proto::UpdateClusterResponse {
        autolock: m.cluster()?.unlock_key.is_some(),
        unlock_key: key,
    })
}

/// `unlock-key`: the current unlock key, or a new one with `rotate`.
pub async fn unlock_key(m: &Manager, rotate: bool) -> Result<proto::UnlockKeyResponse> {
    if m.unlock_key()?.is_none() {
        return Err(Error::Conflict(
            "autolock is not enabled: `orc cluster update --autolock=true` turns it on".into(),
        ));
    }
    if rotate {
        let u = UnlockKey::generate()?;
        m.propose(Command::SetUnlockKey {
            unlock_key: Some(u.seal_with(m.data_key())?),
        })
        .await?;
        tracing::info!("unlock key rotated");
        return Ok(proto::UnlockKeyResponse { key: u.reveal() });
    }
    let key = m
        .unlock_key()?
        .ok_or_else(|| Error::Conflict("autolock was turned off meanwhile".into()))?;
    Ok(proto::UnlockKeyResponse { key: key.reveal() })
}
