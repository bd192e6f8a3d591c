//! `orc network create|ls|inspect|rm`.
//!
//! The JSON of `ls` and `inspect` is a contract, with Docker's names where Docker has
//! one: `id`, `name`, `driver`, `scope` (always `swarm`), `internal`, `attachable`,
//! `encrypted`, `labels`, `created` (RFC 3339; empty for the built-in network),
//! `created_ms`, `services` (names); `inspect` adds `tasks`, each `id`, `service`,
//! `node` (hostname), `node_id`, `vip`, `state`.
//!
//! `--network` of `service create` and `--network-add` of `service update` take a name
//! or Docker's long form `name=NAME,alias=X,alias=Y` ([`parse_attachment`]).

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::service::client;
use super::{print_table, Format};
use crate::error::{Error, Result};
use crate::proto;
use crate::store::network::{NetworkDriver, DEFAULT_NETWORK};
use crate::store::task::TaskState;
use crate::store::{Network, NetworkAttachment, NetworkId, NetworkSpec};

/// `orc network ...`.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List the networks (the built-in `default` first).
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show networks, their services and tasks (JSON; `--format table`: a short text).
    Inspect {
        /// Network names or ids.
        #[arg(required = true)]
        networks: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Remove networks no service is on.
    #[command(alias = "remove")]
    Rm {
        /// Network names or ids.
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

/// `orc network create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// overlay or bridge (both span the cluster).
    #[arg(short, long, default_value = "overlay")]
    pub driver: String,
    /// No route out of the cluster; its services publish no port.
    #[arg(long)]
    pub internal: bool,
    /// Recorded, as Docker records it.
    #[arg(long)]
    pub attachable: bool,
    /// Driver option: encrypted[=true|false] (traffic between nodes encrypted).
    #[arg(short, long = "opt")]
    pub opt: Vec<String>,
    /// Network label k=v; repeatable.
    #[arg(long = "label")]
    pub label: Vec<String>,
    /// The network's name.
    pub name: String,
}

/// The spec `network create` asks for; each error names its flag (or `NAME`).
pub fn create_spec(a: &CreateArgs) -> Result<NetworkSpec> {
    let driver: NetworkDriver = a.driver.parse().map_err(|_| {
        Error::InvalidInput(format!(
            "--driver: expected overlay or bridge, found {:?}",
            a.driver
        ))
    })?;
    let mut spec = NetworkSpec {
        name: a.name.clone(),
        driver,
        internal: a.internal,
        attachable: a.attachable,
        ..Default::default()
    };
    for o in &a.opt {
        let (k, v) = o.split_once('=').unwrap_or((o, ""));
        match (k, v) {
            ("encrypted", "" | "true" | "1") => spec.encrypted = true,
            ("encrypted", "false" | "0") => spec.encrypted = false,
            ("encrypted", v) => {
                return Err(Error::InvalidInput(format!(
                    "--opt: encrypted takes true or false, found {v:?}"
                )))
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "--opt: unknown option {k:?} (orc knows encrypted)"
                )))
            }
        }
    }
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        if k.is_empty() {
            return Err(Error::InvalidInput(format!(
                "--label: expected key=value, found {l:?}"
            )));
        }
        spec.labels.insert(k.to_string(), v.to_string());
    }
    spec.validate().map_err(flag_names)?;
    Ok(spec)
}

/// The fields of a network spec as the flags of `network create` name them.
fn flag_names(e: Error) -> Error {
    let rename = |m: String| {
        for (field, flag) in [("name: ", "NAME: "), ("labels: ", "--label: ")] {
            if let Some(rest) = m.strip_prefix(field) {
                return format!("{flag}{rest}");
            }
        }
        m
    };
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(rename(m)),
        Error::Conflict(m) => Error::Conflict(rename(m)),
        e => e,
    }
}

/// Parses `--network`: `NAME`, or `name=NAME,alias=X,alias=Y` (Docker's long form; also
/// `target=`). The attachment holds the name; the control API turns it into an id.
pub fn parse_attachment(flag: &str, s: &str) -> Result<NetworkAttachment> {
    if !s.contains('=') {
        if s.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{flag}: expected NAME or name=NAME,alias=ALIAS"
            )));
        }
        return Ok(NetworkAttachment::to(NetworkId(s.to_string())));
    }
    let mut name = None;
    let mut aliases = vec![];
    for part in s.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(Error::InvalidInput(format!(
                "{flag}: expected key=value, found {part:?} in {s:?}"
            )));
        };
        match k {
            "name" | "target" => name = Some(v.to_string()),
            "alias" => {
                crate::store::network::validate_alias(v).map_err(|_| {
                    Error::InvalidInput(format!("{flag}: alias {v:?} is not a DNS name"))
                })?;
                if !aliases.iter().any(|a| a == v) {
                    aliases.push(v.to_string());
                }
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{flag}: unknown option {k:?} in {s:?} (name, alias)"
                )))
            }
        }
    }
    match name {
        Some(n) if !n.is_empty() => Ok(NetworkAttachment {
            network: NetworkId(n),
            aliases,
        }),
        _ => Err(Error::InvalidInput(format!(
            "{flag}: name= is required in {s:?}"
        ))),
    }
}

/// One network as the leader answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Viewed {
    /// The network.
    pub network: Network,
    /// The services on it, by name.
    pub services: Vec<String>,
    /// Its tasks (inspect only).
    pub tasks: Vec<proto::NetworkTask>,
}

impl TryFrom<proto::NetworkView> for Viewed {
    type Error = Error;
    fn try_from(v: proto::NetworkView) -> Result<Self> {
        Ok(Viewed {
            network: v
                .network
                .ok_or_else(|| Error::Internal("network: no network".into()))?
                .try_into()?,
            services: v.services,
            tasks: v.tasks,
        })
    }
}

/// A time in unix ms as RFC 3339 (empty for 0: the built-in network).
fn rfc3339(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A task state's word (`running`), or `unknown` for a value this client does not know.
fn state_word(state: i32) -> String {
    proto::TaskState::try_from(state)
        .ok()
        .and_then(|s| TaskState::try_from(s).ok())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl Viewed {
    /// The `network ls` JSON (see the module doc).
    pub fn to_json(&self) -> Value {
        let n = &self.network;
        json!({
            "id": n.id.0,
            "name": n.spec.name,
            "driver": n.spec.driver.as_str(),
            "scope": "swarm",
            "internal": n.spec.internal,
            "attachable": n.spec.attachable,
            "encrypted": n.spec.encrypted,
            "labels": n.spec.labels,
            "created": rfc3339(n.created_ms),
            "created_ms": n.created_ms,
            "services": self.services,
        })
    }

    /// The `network inspect` JSON: the `ls` keys and `tasks`.
    pub fn to_inspect_json(&self) -> Value {
        let mut v = self.to_json();
        v["tasks"] = self
            .tasks
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "service": t.service,
                    "node": t.node,
                    "node_id": t.node_id,
                    "vip": t.vip,
                    "state": state_word(t.state),
                })
            })
            .collect();
        v
    }

    /// The options column: `internal`, `attachable`, `encrypted`.
    fn options(&self) -> String {
        let s = &self.network.spec;
        let opts: Vec<&str> = [
            (s.internal, "internal"),
            (s.attachable, "attachable"),
            (s.encrypted, "encrypted"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect();
        opts.join(",")
    }

    /// `network inspect --format table`.
    fn text(&self) -> String {
        let n = &self.network;
        let mut out = format!(
            "ID:        {}\nName:      {}\nDriver:    {}\nOptions:   {}\nServices:  {}\n",
            n.id,
            n.spec.name,
            n.spec.driver,
            self.options(),
            self.services.join(", ")
        );
        for t in &self.tasks {
            out.push_str(&format!(
                "  task {}  {}  {}  {}  {}\n",
                t.id,
                t.service,
                if t.node.is_empty() { "-" } else { &t.node },
                if t.vip.is_empty() { "-" } else { &t.vip },
                state_word(t.state)
            ));
        }
        out
    }
}

/// Runs a network command.
pub async fn run(socket: &Path, c: NetworkCommand) -> Result<()> {
    let mut client = client(socket).await?;
    match c {
        NetworkCommand::Create(a) => {
            let spec = create_spec(&a)?;
            let n = client
                .create_network(proto::NetworkSpec::from(spec))
                .await
                .map_err(|s| flag_names(s.into()))?
                .into_inner();
            println!("{}", n.id);
            Ok(())
        }
        NetworkCommand::Ls { format } => {
            let all: Vec<Viewed> = client
                .list_networks(proto::Empty {})
                .await?
                .into_inner()
                .networks
                .into_iter()
                .map(Viewed::try_from)
                .collect::<Result<_>>()?;
            if format == Format::Json {
                let json: Vec<Value> = all.iter().map(Viewed::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|v| {
                    vec![
                        v.network.id.0.clone(),
                        v.network.spec.name.clone(),
                        v.network.spec.driver.to_string(),
                        "swarm".into(),
                        v.options(),
                        v.services.len().to_string(),
                    ]
                })
                .collect();
            print_table(
                &["ID", "NAME", "DRIVER", "SCOPE", "OPTIONS", "SERVICES"],
                &rows,
            );
            Ok(())
        }
        NetworkCommand::Inspect { networks, format } => {
            let mut out = vec![];
            for n in &networks {
                let v = client
                    .inspect_network(proto::NetworkRef { network: n.clone() })
                    .await?
                    .into_inner();
                out.push(Viewed::try_from(v)?);
            }
            if format == Format::Table {
                let texts: Vec<String> = out.iter().map(Viewed::text).collect();
                print!("{}", texts.join("\n"));
            } else {
                let json: Vec<Value> = out.iter().map(Viewed::to_inspect_json).collect();
                println!("{}", serde_json::to_string_pretty(&json)?);
            }
            Ok(())
        }
        NetworkCommand::Rm { networks } => {
            // Each name its own line of outcome: removed ones on stdout, each refusal
            // one `error:` line naming its network; the exit is non-zero if any failed
            // (the last refusal is the command's error, printed by `main`).
            let mut failed: Vec<Error> = vec![];
            for n in &networks {
                let r = client
                    .remove_network(proto::NetworkRef { network: n.clone() })
                    .await;
                match r {
                    Ok(_) => println!("{n}"),
                    Err(s) => {
                        if let Some(e) = failed.last() {
                            eprintln!("error: {e}");
                        }
                        failed.push(s.into());
                    }
                }
            }
            match failed.pop() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }
}

/// `service update --network-add/--network-rm` on `spec`'s networks, given by name.
/// A service on the built-in network alone (no networks named) stays on it when a
/// network is added: `--network-rm default` takes it off. A network named twice is
/// named once, with the aliases of the last; removing a network the service is not on
/// is refused.
pub fn update_networks(
    current: &[NetworkAttachment],
    add: &[String],
    rm: &[String],
) -> Result<Vec<NetworkAttachment>> {
    let mut nets = if current.is_empty() && !add.is_empty() {
        vec![NetworkAttachment::to(NetworkId(DEFAULT_NETWORK.into()))]
    } else {
        current.to_vec()
    };
    for name in rm {
        let before = nets.len();
        nets.retain(|a| &a.network.0 != name);
        let implicit_default = current.is_empty() && name == DEFAULT_NETWORK;
        if nets.len() == before && !implicit_default {
            return Err(Error::InvalidInput(format!(
                "--network-rm: the service is not on network {name}"
            )));
        }
    }
    for a in add {
        let a = parse_attachment("--network-add", a)?;
        nets.retain(|x| x.network != a.network);
        nets.push(a);
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn create(args: &[&str]) -> Result<NetworkSpec> {
        let cli =
            crate::cli::Cli::try_parse_from(["orc", "network", "create"].iter().chain(args.iter()))
                .map_err(|e| Error::InvalidInput(e.to_string()))?;
        match cli.command {
            crate::cli::Command::Network(NetworkCommand::Create(a)) => create_spec(&a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn network_create_flags_make_the_spec_and_bad_ones_name_their_flag() {
        let s = create(&[
            "--driver",
            "bridge",
            "--internal",
            "--attachable",
            "--opt",
            "encrypted",
            "--label",
            "team=a",
            "--label",
            "x",
            "back",
        ])
        .expect("good flags");
        assert_eq!(s.name, "back");
        assert_eq!(s.driver, NetworkDriver::Bridge);
        assert!(s.internal && s.attachable && s.encrypted);
        assert_eq!(s.labels["team"], "a");
        assert_eq!(s.labels["x"], "");
        let plain = create(&["front"]).expect("defaults");
        assert_eq!(plain.driver, NetworkDriver::Overlay);
        assert!(!plain.internal && !plain.encrypted);
        assert!(
            !create(&["--opt", "encrypted=false", "n"])
                .unwrap()
                .encrypted
        );
        for (args, want) in [
            (
                &["--driver", "macvlan", "n"][..],
                "--driver: expected overlay or bridge, found \"macvlan\"",
            ),
            (
                &["--opt", "encrypted=maybe", "n"][..],
                "--opt: encrypted takes true or false, found \"maybe\"",
            ),
            (
                &["--opt", "mtu=1400", "n"][..],
                "--opt: unknown option \"mtu\" (orc knows encrypted)",
            ),
            (
                &["--label", "=v", "n"][..],
                "--label: expected key=value, found \"=v\"",
            ),
            (
                &["default"][..],
                "NAME: \"default\" is the cluster's built-in network",
            ),
        ] {
            let e = create(args).expect_err("refused");
            assert_eq!(e.to_string(), Error::InvalidInput(want.into()).to_string());
        }
        let e = create(&["a b"]).expect_err("refused");
        assert!(
            e.to_string()
                .contains("NAME: \"a b\" is not a network name"),
            "{e}"
        );
    }

    #[test]
    fn an_attachment_is_a_name_or_the_long_form_with_aliases() {
        let a = parse_attachment("--network", "back").unwrap();
        assert_eq!(a, NetworkAttachment::to(NetworkId("back".into())));
        let a = parse_attachment("--network", "name=back,alias=db,alias=pg.main,alias=db").unwrap();
        assert_eq!(a.network.0, "back");
        assert_eq!(a.aliases, ["db", "pg.main"]);
        for (s, want) in [
            ("", "expected NAME"),
            ("alias=db", "name= is required"),
            (
                "name=back,alias=not a name",
                "alias \"not a name\" is not a DNS name",
            ),
            ("name=back,driver-opt=x", "unknown option \"driver-opt\""),
            ("name=back,alias", "expected key=value"),
        ] {
            let e = parse_attachment("--network", s).unwrap_err().to_string();
            assert!(e.contains(want), "{s:?}: {e}");
            assert!(e.starts_with("--network: "), "{e}");
        }
    }

    #[test]
    fn network_add_keeps_the_default_and_network_rm_refuses_a_network_not_on() {
        let on = |names: &[&str]| -> Vec<NetworkAttachment> {
            names
                .iter()
                .map(|n| NetworkAttachment::to(NetworkId(n.to_string())))
                .collect()
        };
        let names = |v: Vec<NetworkAttachment>| -> Vec<String> {
            v.into_iter().map(|a| a.network.0).collect()
        };
        let add = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(update_networks(&[], &add(&["back"]), &[]).unwrap()),
            ["default", "back"]
        );
        assert_eq!(
            names(update_networks(&[], &add(&["back"]), &add(&["default"])).unwrap()),
            ["back"]
        );
        let v = update_networks(&on(&["a", "b"]), &add(&["name=b,alias=x"]), &add(&["a"])).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].network.0.as_str(), v[0].aliases.clone()),
            ("b", vec!["x".to_string()])
        );
        let e = update_networks(&on(&["a"]), &[], &add(&["zzz"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            Error::InvalidInput("--network-rm: the service is not on network zzz".into())
                .to_string()
        );
        // Nothing named: no change.
        assert!(update_networks(&[], &[], &[]).unwrap().is_empty());
    }
}
