//! The `orc` binary: parse, set up logging, run, and on failure print one
//! `error: ...` line and exit non-zero.

use clap::Parser;

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = orc::cli::Cli::parse();
    let daemon = matches!(cli.command, orc::cli::Command::Daemon(_));
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
        .add_directive("openraft=warn".parse().expect("directive"))
        .add_directive("sled=warn".parse().expect("directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(orc::cli::run(cli)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
