//! `orc volume ls`: every node's volumes, their size, the tasks using them, and which
//! hold the data of a following volume ([`crate::store::volume`]).
//!
//! The JSON of `ls` is a contract: `node`, `node_id`, `name`, `driver`, `size_bytes`
//! (null when unknown: not a local volume, or too many files), `tasks`
//! (`SERVICE.SLOT`), `follows` (`data of SERVICE.SLOT`, `copy of SERVICE.SLOT (moving
//! here)`, `old copy of SERVICE.SLOT` or empty). Nodes that did not answer are named on stderr, one line each.

use std::path::Path;

use clap::Subcommand;
use serde_json::{json, Value};

use super::service::client;
use super::{print_table, Format};
use crate::error::Result;
use crate::proto;

/// `orc volume ...`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List the volumes of every node.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// A size for people: `512 B`, `3.2 MB`, `1.1 GB`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The JSON of one row.
pub fn row_json(r: &proto::VolumeRow) -> Value {
    json!({
        "node": r.node,
        "node_id": r.node_id,
        "name": r.name,
        "driver": r.driver,
        "size_bytes": r.size_known.then_some(r.bytes),
        "tasks": r.tasks,
        "follows": r.follows,
    })
}

/// Runs `orc volume ...`.
pub async fn run(socket: &Path, c: VolumeCommand) -> Result<()> {
    let mut client = client(socket).await?;
    match c {
        VolumeCommand::Ls { format } => {
            let r = client.list_volumes(proto::Empty {}).await?.into_inner();
            for n in &r.unreachable {
                eprintln!("node {n} did not answer: its volumes are not listed");
            }
            if format == Format::Json {
                let rows: Vec<Value> = r.volumes.iter().map(row_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = r
                .volumes
                .iter()
                .map(|v| {
                    vec![
                        v.node.clone(),
                        v.name.clone(),
                        v.driver.clone(),
                        if v.size_known {
                            size_text(v.bytes)
                        } else {
                            "-".into()
                        },
                        v.tasks.join(","),
                        v.follows.clone(),
                    ]
                })
                .collect();
            print_table(
                &["NODE", "VOLUME", "DRIVER", "SIZE", "TASKS", "FOLLOWS"],
                &rows,
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them_and_json_keeps_its_keys() {
        assert_eq!(size_text(512), "512 B");
        assert_eq!(size_text(3_200_000), "3.2 MB");
        assert_eq!(size_text(1_100_000_000), "1.1 GB");
        let r = proto::VolumeRow {
            node_id: "00000000000000a1".into(),
            node: "host1".into(),
            name: "pgdata".into(),
            driver: "local".into(),
            bytes: 42,
            size_known: true,
            tasks: vec!["db.1".into()],
            follows: "data of db.1".into(),
        };
        let j = row_json(&r);
        assert_eq!(j["size_bytes"], 42);
        assert_eq!(j["follows"], "data of db.1");
        let unknown = row_json(&proto::VolumeRow {
            size_known: false,
            ..r
        });
        assert!(unknown["size_bytes"].is_null());
    }
}
