//! `orc dashboard token`: the web dashboard's token, and the address to open.
//!
//! The token is the same on every manager and changes with `orc ca rotate`. Scripts:
//! `--format json` gives `{"token": ..., "url": ...}` (`url` empty when this daemon
//! does not serve the dashboard; open another manager's with `/?token=TOKEN`).

use std::path::Path;

use clap::{Args, Subcommand};

use super::{connect, Format};
use crate::error::Result;
use crate::proto::local_client::LocalClient;
use crate::proto::Empty;

/// `orc dashboard` commands.
#[derive(Debug, Subcommand)]
pub enum DashboardCommand {
    /// Print the dashboard's token and the address that opens it.
    Token(TokenArgs),
}

/// `orc dashboard token` flags.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Print only the token.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Runs an `orc dashboard` command.
pub async fn run(socket: &Path, c: DashboardCommand) -> Result<()> {
    match c {
        DashboardCommand::Token(a) => {
            let r = LocalClient::new(connect(socket).await?)
                .dashboard_token(Empty {})
                .await?
                .into_inner();
            if a.format == Format::Json {
                let v = serde_json::json!({ "token": r.token, "url": r.url });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if a.quiet {
                println!("{}", r.token);
            } else if r.url.is_empty() {
                println!("{}", r.token);
                eprintln!(
                    "this daemon serves no dashboard (orc daemon --dashboard-addr); open a manager's that does at http://ADDR/?token={}",
                    r.token
                );
            } else {
                println!("{}", r.token);
                println!("open: {}", r.url);
            }
            Ok(())
        }
    }
}
