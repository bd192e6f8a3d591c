//! The firewall as orc touches it: `iptables -w`, and rules added only where missing
//! (so a restarted daemon, or two of its parts, never stack copies of a rule).

use std::io;

/// Runs `iptables -w ARGS`: whether it succeeded.
pub fn run(args: &[&str]) -> io::Result<bool> {
    let o = std::process::Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()?;
    Ok(o.status.success())
}

/// Where [`ensure`] puts a missing rule in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Appended (`-A`).
    End,
    /// Inserted at this 1-based position (`-I CHAIN N`).
    Position(usize),
}

/// Adds `rule` (its chain first, then the match and target words) unless `iptables -C`
/// finds it already.
pub fn ensure(rule: &[String], at: At) -> io::Result<()> {
    let words: Vec<&str> = rule.iter().map(String::as_str).collect();
    let Some((chain, rest)) = words.split_first() else {
        return Err(io::Error::other("an empty iptables rule"));
    };
    let check: Vec<&str> = std::iter::once("-C").chain(words.iter().copied()).collect();
    if run(&check)? {
        return Ok(());
    }
    let pos = match at {
        At::End => None,
        At::Position(n) => Some(n.to_string()),
    };
    let add: Vec<&str> = match &pos {
        None => std::iter::once("-A").chain(words.iter().copied()).collect(),
        Some(n) => ["-I", chain, n.as_str()]
            .into_iter()
            .chain(rest.iter().copied())
            .collect(),
    };
    if !run(&add)? {
        return Err(io::Error::other(format!(
            "iptables refused: {}",
            add.join(" ")
        )));
    }
    Ok(())
}
