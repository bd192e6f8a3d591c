//! `orc secret create|ls|inspect|update|rm` and `orc config ...` (the same commands).
//!
//! The JSON of `ls` is a contract: `id`, `name`, `labels`, `created` (RFC 3339),
//! `created_ms`, `updated`, `updated_ms`, `version`, `services` (names); `inspect` adds
//! `size` and `digest`, and, for a config, `data` (its content as text). A secret's
//! content is never shown.
//!
//! `--secret` and `--config` of `service create` (and `--secret-add`, `--config-add` of
//! `service update`) take `NAME` or `source=NAME[,target=T,uid=U,gid=G,mode=0400]`
//! ([`parse_ref`]).

use std::io::Read;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::service::client;
use super::{print_table, Format};
use crate::error::{Error, Result};
use crate::proto;
use crate::store::secret::{Kind, SecretRef, MAX_SIZE};

/// `orc secret ...` / `orc config ...`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create one from a file (`-`: standard input).
    Create(CreateArgs),
    /// List them.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show them (never a secret's content).
    Inspect {
        /// Names or ids.
        #[arg(required = true)]
        names: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Give one a new content (`-`: standard input): the services that use it roll to
    /// it under their update settings.
    Update {
        /// Name or id.
        name: String,
        /// The file with the new content, or `-`.
        file: String,
    },
    /// Remove ones no service uses.
    #[command(alias = "remove")]
    Rm {
        /// Names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Label k=v; repeatable.
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// The name.
    pub name: String,
    /// The file with the content, or `-` for standard input.
    pub file: String,
}

/// Reads the content of `file` (`-`: standard input), at most [`MAX_SIZE`] bytes.
fn read_content(kind: Kind, file: &str) -> Result<Vec<u8>> {
    let mut data = vec![];
    let limit = MAX_SIZE as u64 + 1;
    let r = if file == "-" {
        std::io::stdin().take(limit).read_to_end(&mut data)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut data))
    };
    r.map_err(|e| Error::InvalidInput(format!("{file}: {e}")))?;
    crate::store::secret::validate_data(kind, &data)
        .map_err(|e| Error::InvalidInput(format!("{file}: {e}")))?;
    Ok(data)
}

/// Parses `--secret` / `--config`: `NAME`, or `source=NAME[,target=T,uid=U,gid=G,mode=M]`
/// (`src=` too; the mode in octal, as Docker reads it).
pub fn parse_ref(flag: &str, s: &str) -> Result<SecretRef> {
    if !s.contains('=') {
        if s.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{flag}: expected NAME or source=NAME,target=..."
            )));
        }
        return Ok(SecretRef::to(s));
    }
    let mut r = SecretRef::to("");
    for part in s.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(Error::InvalidInput(format!(
                "{flag}: expected key=value, found {part:?} in {s:?}"
            )));
        };
        let num = |radix: u32| {
            u32::from_str_radix(v, radix).map_err(|_| {
                Error::InvalidInput(format!("{flag}: {k}: expected a number, found {v:?}"))
            })
        };
        match k {
            "source" | "src" => r.name = v.to_string(),
            "target" => r.target = v.to_string(),
            "uid" => r.uid = num(10)?,
            "gid" => r.gid = num(10)?,
            "mode" => r.mode = num(8)?,
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{flag}: unknown option {k:?} in {s:?} (source, target, uid, gid, mode)"
                )))
            }
        }
    }
    if r.name.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{flag}: source= is required in {s:?}"
        )));
    }
    Ok(r)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The `ls` JSON of one (see the module doc).
pub fn to_json(v: &proto::SecretView) -> Value {
    json!({
        "id": v.id,
        "name": v.name,
        "labels": v.labels,
        "created": rfc3339(v.created_ms),
        "created_ms": v.created_ms,
        "updated": rfc3339(v.updated_ms),
        "updated_ms": v.updated_ms,
        "version": v.version,
        "services": v.services,
    })
}

/// The `inspect` JSON: the `ls` keys, `size`, `digest`, and a config's `data`.
pub fn to_inspect_json(v: &proto::SecretView) -> Value {
    let mut j = to_json(v);
    j["size"] = json!(v.size);
    j["digest"] = json!(v.digest);
    if let Some(d) = &v.data {
        j["data"] = json!(d);
    }
    j
}

/// Runs a secret (or config) command.
pub async fn run(socket: &Path, kind: Kind, c: SecretCommand) -> Result<()> {
    let mut client = client(socket).await?;
    let k = proto::SecretKind::from(kind) as i32;
    match c {
        SecretCommand::Create(a) => {
            let mut labels = std::collections::BTreeMap::new();
            for l in &a.label {
                let (key, v) = l.split_once('=').unwrap_or((l, ""));
                if key.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "--label: expected key=value, found {l:?}"
                    )));
                }
                labels.insert(key.to_string(), v.to_string());
            }
            crate::store::secret::validate_name(kind, &a.name)
                .map_err(|e| Error::InvalidInput(e.to_string().replace("name: ", "NAME: ")))?;
            let data = read_content(kind, &a.file)?;
            let v = client
                .create_secret(proto::SecretData {
                    kind: k,
                    name: a.name,
                    labels,
                    data,
                })
                .await?
                .into_inner();
            println!("{}", v.id);
            Ok(())
        }
        SecretCommand::Update { name, file } => {
            let data = read_content(kind, &file)?;
            let v = client
                .update_secret(proto::SecretData {
                    kind: k,
                    name,
                    labels: Default::default(),
                    data,
                })
                .await?
                .into_inner();
            println!("{} version {}", v.id, v.version);
            Ok(())
        }
        SecretCommand::Ls { format } => {
            let all = client
                .list_secrets(proto::SecretKindRequest { kind: k })
                .await?
                .into_inner()
                .secrets;
            match format {
                Format::Json => {
                    let v: Vec<Value> = all.iter().map(to_json).collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|v| {
                            vec![
                                v.id.clone(),
                                v.name.clone(),
                                v.version.to_string(),
                                rfc3339(v.updated_ms),
                                v.services.join(","),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "NAME", "VERSION", "UPDATED", "SERVICES"], &rows);
                }
            }
            Ok(())
        }
        SecretCommand::Inspect { names, format } => {
            let mut out = vec![];
            for name in names {
                out.push(
                    client
                        .inspect_secret(proto::SecretName { kind: k, name })
                        .await?
                        .into_inner(),
                );
            }
            match format {
                Format::Json => {
                    let v: Vec<Value> = out.iter().map(to_inspect_json).collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    for v in &out {
                        println!(
                            "ID:        {}\nName:      {}\nVersion:   {}\nSize:      {}\nServices:  {}",
                            v.id,
                            v.name,
                            v.version,
                            v.size,
                            v.services.join(", ")
                        );
                        if let Some(d) = &v.data {
                            println!("Data:\n{d}");
                        }
                    }
                }
            }
            Ok(())
        }
        SecretCommand::Rm { names } => {
            for name in names {
                client
                    .remove_secret(proto::SecretName {
                        kind: k,
                        name: name.clone(),
                    })
                    .await?;
                println!("{name}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_forms_of_secret() {
        let r = parse_ref("--secret", "db_pw").unwrap();
        assert_eq!(
            (r.name.as_str(), r.target.as_str(), r.uid, r.gid, r.mode),
            ("db_pw", "", 0, 0, 0o444)
        );
        let r = parse_ref("--secret", "src=db_pw,target=pg,uid=70,gid=71,mode=0400").unwrap();
        assert_eq!(
            (r.name.as_str(), r.target.as_str(), r.uid, r.gid, r.mode),
            ("db_pw", "pg", 70, 71, 0o400)
        );
        let r = parse_ref("--config", "source=c,target=/etc/c.conf").unwrap();
        assert_eq!((r.name.as_str(), r.target.as_str()), ("c", "/etc/c.conf"));
        for bad in [
            "",
            "target=x",
            "src=a,mode=9",
            "src=a,uid=-1",
            "src=a,owner=1",
            "src=a,x",
        ] {
            let e = parse_ref("--secret", bad).unwrap_err().to_string();
            assert!(e.contains("--secret"), "{bad}: {e}");
        }
    }
}
