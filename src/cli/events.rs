//! `orc events`: the events of the manager this node is, like `docker events`.
//!
//! Without `--until` it follows until interrupted; `--since` first replays this
//! manager's history (its last [`crate::store::events::HISTORY`] events, in memory).
//! One line per event, or one JSON object per line with `--format json` (keys:
//! `time`, `time_nano`, `type`, `action`, `id`, `name`, `attributes`).

use std::path::Path;

use clap::Args;

use super::{connect, Format};
use crate::error::{Error, Result};
use crate::proto::control_client::ControlClient;
use crate::proto::{EventFilter, EventsRequest};
use crate::store::events::{now_nano, parse_time, Event, Filters};

/// `orc events` flags.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Replay events from this time on: a duration back from now (10m, 2h), an RFC 3339
    /// time or unix seconds.
    #[arg(long)]
    pub since: Option<String>,
    /// Stop at this time (same forms); without it, follow until interrupted.
    #[arg(long)]
    pub until: Option<String>,
    /// Only events that match KEY=VALUE: type (node, service, task, update, network,
    /// secret, config, membership, leader, certificate, join, cluster), event (the
    /// action), name, id (or a prefix), node. Repeat: one key's values are alternatives,
    /// different keys must all match.
    #[arg(long = "filter", short = 'f')]
    pub filter: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// The request `a` asks for, given the time now (pure, for tests).
pub fn request(a: &EventsArgs, now_nano: u64) -> Result<EventsRequest> {
    let since = a
        .since
        .as_deref()
        .map(|s| parse_time("--since", s, now_nano))
        .transpose()?;
    let until = a
        .until
        .as_deref()
        .map(|s| parse_time("--until", s, now_nano))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if u < s {
            return Err(Error::InvalidInput("--until: earlier than --since".into()));
        }
    }
    let filters = Filters::parse(&a.filter)?;
    Ok(EventsRequest {
        // 0 on the wire means "not given": the epoch itself becomes 1 ns after it.
        since_nano: since.map(|s| s.max(1)).unwrap_or(0),
        until_nano: until.map(|u| u.max(1)).unwrap_or(0),
        filters: filters
            .pairs()
            .into_iter()
            .map(|(key, value)| EventFilter { key, value })
            .collect(),
    })
}

/// Runs `orc events`.
pub async fn run(socket: &Path, a: EventsArgs) -> Result<()> {
    let req = request(&a, now_nano())?;
    let mut stream = ControlClient::new(connect(socket).await?)
        .events(req)
        .await?
        .into_inner();
    while let Some(m) = stream.message().await? {
        if !m.notice.is_empty() {
            eprintln!("warning: {}", m.notice);
            continue;
        }
        let e = Event::from(m);
        match a.format {
            Format::Json => println!("{}", serde_json::to_string(&e)?),
            Format::Table => println!("{}", e.line()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(since: Option<&str>, until: Option<&str>, filter: &[&str]) -> EventsArgs {
        EventsArgs {
            since: since.map(String::from),
            until: until.map(String::from),
            filter: filter.iter().map(|s| s.to_string()).collect(),
            format: Format::Table,
        }
    }

    #[test]
    fn flags_become_a_request_and_bad_ones_one_line_naming_them() {
        let now = 1_000 * 1_000_000_000;
        let r = request(&args(Some("10s"), Some("0"), &[]), now);
        assert_eq!(r.unwrap_err().to_string(), "--until: earlier than --since");
        let r = request(&args(Some("10s"), None, &["type=task", "name=web"]), now).unwrap();
        assert_eq!(r.since_nano, now - 10_000_000_000);
        assert_eq!(r.until_nano, 0);
        assert_eq!(r.filters.len(), 2);
        let r = request(&args(None, None, &[]), now).unwrap();
        assert_eq!((r.since_nano, r.until_nano), (0, 0), "live only");
        let e = request(&args(None, None, &["size=big"]), now).unwrap_err();
        assert!(
            e.to_string().starts_with("--filter: unknown key \"size\""),
            "{e}"
        );
        let e = request(&args(Some("soon"), None, &[]), now).unwrap_err();
        assert!(e.to_string().starts_with("--since: expected"), "{e}");
    }
}
