//! `orc ca`: the cluster's root CA, and its rotation.

use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{connect, parse_duration, Format};
use crate::error::{Error, Result};
use crate::proto::{control_client::ControlClient, Empty, RotateCaRequest};

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

async fn status(
    client: &mut ControlClient<tonic::transport::Channel>,
) -> Result<serde_json::Value> {
    let json = client.ca_status(Empty {}).await?.into_inner().json;
    Ok(serde_json::from_str(&json)?)
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
    let json = client
        .rotate_ca(RotateCaRequest { cert_validity_secs })
        .await?
        .into_inner()
        .json;
    let started: serde_json::Value = serde_json::from_str(&json)?;
    let new_root = started["new_root_digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
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
        let done = v["root_digest"] == new_root.as_str() && v["rotating"] == false;
        let progress = (v["moved"].as_u64(), v["total"].as_u64());
        if table && (last != Some(progress) || done) {
            let (moved, total) = (progress.0.unwrap_or(0), progress.1.unwrap_or(0));
            println!("nodes moved {moved} of {total}");
            last = Some(progress);
        }
        if done {
            if table {
                println!("root CA rotated: {}", short(&new_root));
            } else {
                println!("{v}");
            }
            return Ok(());
        }
        if v["rotating"] == false || v["new_root_digest"] != new_root.as_str() {
            return Err(Error::Conflict(
                "the rotation was replaced or abandoned by another".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn print(v: &serde_json::Value, format: Format) {
    if format == Format::Json {
        println!("{v}");
        return;
    }
    println!(
        "Root CA:          {}",
        v["root_digest"].as_str().unwrap_or_default()
    );
    println!(
        "Cert validity:    {} s",
        v["cert_validity_secs"].as_u64().unwrap_or_default()
    );
    if v["rotating"] == true {
        println!(
            "Rotating to:      {}",
            v["new_root_digest"].as_str().unwrap_or_default()
        );
        println!(
            "Nodes moved:      {} of {}",
            v["moved"].as_u64().unwrap_or_default(),
            v["total"].as_u64().unwrap_or_default()
        );
        for p in v["pending"].as_array().into_iter().flatten() {
            println!(
                "  waiting for {} ({}, {})",
                p["id"].as_str().unwrap_or_default(),
                p["hostname"].as_str().unwrap_or_default(),
                p["status"].as_str().unwrap_or_default()
            );
        }
    } else {
        println!("Rotation:         none in progress");
    }
}
