//! `orc ca`: the cluster's root CA, and its rotation.

use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{connect, parse_duration, Format};
use crate::error::{Error, Result};
use crate::proto::{control_client::ControlClient, CaStatusResponse, Empty, RotateCaRequest};

/// `orc ca [rotate]`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// What to do; without one, show the root CA and a rotation's progress.
    #[command(subcommand)]
    pub command: Option<CaCommand>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// `orc ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Replace the root CA: every node gets a certificate of a new root, without a
    /// restart; then certificates of the old root are refused.
    Rotate(RotateArgs),
}

/// `orc ca rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Validity of node certificates from now on (at least 1h; default: unchanged).
    #[arg(long)]
    pub cert_expiry: Option<String>,
    /// Return once the rotation has started, without following it.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Runs `orc ca`.
pub async fn run(socket: &Path, a: CaArgs) -> Result<()> {
    let mut client = ControlClient::new(connect(socket).await?);
    match a.command {
        None => {
            let v = status(&mut client).await?;
            print(&v, a.format);
            Ok(())
        }
        Some(CaCommand::Rotate(r)) => rotate(&mut client, r).await,
    }
}

async fn status(client: &mut ControlClient<tonic::transport::Channel>) -> Result<CaStatusResponse> {
    Ok(client.ca_status(Empty {}).await?.into_inner())
}

async fn rotate(
    client: &mut ControlClient<tonic::transport::Channel>,
    a: RotateArgs,
) -> Result<()> {
    let cert_validity_secs = match &a.cert_expiry {
        None => 0,
        Some(s) => {
            let d = parse_duration("--cert-expiry", s)?;
            if d < Duration::from_secs(3600) {
                return Err(Error::InvalidInput(
                    "--cert-expiry: must be at least 1h".into(),
                ));
            }
            d.as_secs()
        }
    };
    let started = client
        .rotate_ca(RotateCaRequest { cert_validity_secs })
        .await?
        .into_inner();
    let new_root = started.new_root_digest.clone();
    if a.detach {
        print(&started, a.format);
        return Ok(());
    }
    let table = a.format == Format::Table;
    if table {
        println!("rotating the root CA to {}", short(&new_root));
    }
    let mut last = None;
    loop {
        let v = status(client).await?;
        let done = v.root_digest == new_root && !v.rotating;
        let progress = (v.moved, v.total);
        if table && (last != Some(progress) || done) {
            println!("nodes moved {} of {}", progress.0, progress.1);
            last = Some(progress);
        }
        if done {
            if table {
                println!("root CA rotated: {}", short(&new_root));
            } else {
                println!("{}", ca_json(&v));
            }
            return Ok(());
        }
        if !v.rotating || v.new_root_digest != new_root {
            return Err(Error::Conflict(
                "the rotation was replaced or abandoned by another".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `--format json` of `orc ca` (`started_ms` only while rotating).
pub fn ca_json(v: &CaStatusResponse) -> serde_json::Value {
    let mut json = serde_json::json!({
        "root_digest": v.root_digest,
        "rotating": v.rotating,
        "new_root_digest": v.new_root_digest,
        "moved": v.moved,
        "total": v.total,
        "pending": v.pending.iter().map(|p| serde_json::json!({
            "id": p.id,
            "hostname": p.hostname,
            "status": p.status,
        })).collect::<Vec<_>>(),
        "cert_validity_secs": v.cert_validity_secs,
    });
    if let Some(started_ms) = v.started_ms {
        json["started_ms"] = started_ms.into();
    }
    json
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn print(v: &CaStatusResponse, format: Format) {
    if format == Format::Json {
        println!("{}", ca_json(v));
        return;
    }
    println!("Root CA:          {}", v.root_digest);
    println!("Cert validity:    {} s", v.cert_validity_secs);
    if v.rotating {
        println!("Rotating to:      {}", v.new_root_digest);
        println!("Nodes moved:      {} of {}", v.moved, v.total);
        for p in &v.pending {
            println!("  waiting for {} ({}, {})", p.id, p.hostname, p.status);
        }
    } else {
        println!("Rotation:         none in progress");
    }
}
