//! Stack files from public projects, each beside the outcome Docker gave it
//! (`tests/stacks/real/`: `NAME.docker` names the stack file, the variables of the
//! deploying shell and Docker's outcome; `SOURCES.md` says where each file came from and
//! how the outcomes were recorded). orc's loader, run in process on the same file with
//! the same variables, must accept what Docker accepts and refuse what Docker refuses;
//! and every warning orc prints for an accepted file must be about a key Docker also
//! ignored for that file, or one the README lists as not honoured (between the
//! `not-honoured` markers).
//!
//! A case orc does not yet agree on is named in [`KNOWN_GAPS`] with the missing feature
//! of issue 15; a case listed there that agrees fails the test too, so that the list
//! shrinks as the features land.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use orc::stack::interpolate::Vars;

/// The cases orc does not agree with Docker on today, and why (the missing feature).
/// (dogvscat-elk left it when configs were read: its missing `file:` is refused.)
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// One `NAME.docker`.
#[derive(Debug, Default)]
struct Case {
    name: String,
    stack: String,
    env: Vars,
    accepted: bool,
    ignored: BTreeSet<String>,
    message: String,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/real")
}

fn read_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let mut c = Case {
        name: path.file_stem().unwrap().to_string_lossy().into_owned(),
        ..Case::default()
    };
    let mut outcome = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(": ").or_else(|| line.split_once(':')) else {
            panic!("{}: not `key: value`: {line:?}", path.display());
        };
        let v = v.trim();
        match k {
            "stack" => c.stack = v.to_string(),
            "env" => {
                let (k, v) = v
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{}: env: expected K=V", path.display()));
                c.env.insert(k.to_string(), v.to_string());
            }
            "outcome" => outcome = Some(v == "accepted"),
            "ignored" => c.ignored = v.split_whitespace().map(String::from).collect(),
            "message" => c.message = v.to_string(),
            "setup" | "docker" => {}
            _ => panic!("{}: unknown key {k:?}", path.display()),
        }
    }
    assert!(!c.stack.is_empty(), "{}: no stack:", path.display());
    c.accepted = outcome.unwrap_or_else(|| panic!("{}: no outcome:", path.display()));
    c
}

fn cases() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "docker"))
        .collect();
    paths.sort();
    paths.iter().map(|p| read_case(p)).collect()
}

/// The README's list of keys orc warns about and does not honour: the first word in
/// backquotes of each `- ` line between `<!-- not-honoured:begin -->` and
/// `<!-- not-honoured:end -->`.
fn readme_not_honoured() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let begin = readme
        .find("<!-- not-honoured:begin -->")
        .expect("README.md has no <!-- not-honoured:begin --> marker");
    let end = readme
        .find("<!-- not-honoured:end -->")
        .expect("README.md has no <!-- not-honoured:end --> marker");
    readme[begin..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
        .collect()
}

/// The key a warning is about, as the README lists it: its field path with the
/// position cut off, the service (network, volume, ...) name and list indices replaced,
/// and `services.*.` left off (`stack.yml:4:5: services.web.restart: ...` → `restart`;
/// `networks.proxy.ipam` → `networks.*.ipam`). A warning without a field path (an
/// unset variable) is kept whole.
fn warning_key(w: &str) -> String {
    // "FILE:LINE:COL: PATH: message" (a file name has no ": ").
    let mut parts = w.splitn(3, ": ");
    let (Some(_pos), Some(path), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return w.to_string();
    };
    if path.contains(' ') {
        return w.to_string();
    }
    let mut segs: Vec<String> = path
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s).to_string())
        .collect();
    let top_named = ["services", "networks", "volumes", "secrets", "configs"];
    if top_named.contains(&segs[0].as_str()) && segs.len() > 1 {
        segs[1] = "*".into();
    }
    if segs[0] == "services" && segs.len() > 2 {
        segs.drain(..2);
        // A service's networks and dependencies are named by the file, too.
        if ["networks", "depends_on"].contains(&segs[0].as_str()) && segs.len() > 1 {
            segs[1] = "*".into();
        }
    }
    segs.join(".")
}

/// Whether `key` is `listed` or lies under it (`deploy.resources` covers
/// `deploy.resources.reservations.devices`).
fn covered(key: &str, listed: &BTreeSet<String>) -> bool {
    listed
        .iter()
        .any(|l| key == l || key.starts_with(&format!("{l}.")))
}

/// What orc makes of a case: `Ok(warnings)` or `Err(the refusal)`.
fn orc_outcome(c: &Case) -> Result<Vec<String>, String> {
    let read = |p: &Path| std::fs::read_to_string(p);
    let files = [dir().join(&c.stack)];
    orc::stack::load(&files, &c.name, &c.env, &read)
        .map(|s| s.warnings)
        .map_err(|e| e.to_string())
}

/// The disagreement of one case, if any, in a line or a few.
fn disagreement(c: &Case, not_honoured: &BTreeSet<String>) -> Option<String> {
    let docker = if c.accepted {
        "accepted".to_string()
    } else {
        format!("refused ({})", c.message)
    };
    match orc_outcome(c) {
        Err(e) if c.accepted => Some(format!("orc refused ({e}); Docker {docker}")),
        Err(_) => None,
        Ok(_) if !c.accepted => Some(format!("orc accepted; Docker {docker}")),
        Ok(warnings) => {
            let stray: Vec<&String> = warnings
                .iter()
                .filter(|w| {
                    let k = warning_key(w);
                    !c.ignored.contains(&k) && !covered(&k, not_honoured)
                })
                .collect();
            if stray.is_empty() {
                None
            } else {
                let list: Vec<String> = stray.iter().map(|w| format!("\n    {w}")).collect();
                Some(format!(
                    "both accepted, but orc warned about keys Docker did not ignore (ignored: [{}]) and the README does not list:{}",
                    c.ignored.iter().cloned().collect::<Vec<_>>().join(" "),
                    list.concat()
                ))
            }
        }
    }
}

#[test]
fn public_stack_files_are_accepted_and_refused_as_docker_does() {
    let cases = cases();
    let stacks: BTreeSet<&str> = cases.iter().map(|c| c.stack.as_str()).collect();
    assert!(
        stacks.len() >= 15,
        "only {} stack files in the corpus",
        stacks.len()
    );
    let sources = std::fs::read_to_string(dir().join("SOURCES.md")).unwrap();
    for s in &stacks {
        assert!(
            dir().join(s).is_file(),
            "{s} is named by a case but missing"
        );
        assert!(sources.contains(s), "SOURCES.md does not name {s}");
    }
    let not_honoured = readme_not_honoured();
    assert!(
        !not_honoured.is_empty(),
        "README's not-honoured list is empty"
    );
    let gaps: BTreeMap<&str, &str> = KNOWN_GAPS.iter().copied().collect();
    for g in gaps.keys() {
        assert!(
            cases.iter().any(|c| c.name == *g),
            "KNOWN_GAPS names {g}, which is no case"
        );
    }

    // The whole table, for `--nocapture` and for a failure.
    for c in &cases {
        let (orc, warnings) = match orc_outcome(c) {
            Ok(w) => (format!("accepted, {} warnings", w.len()), w),
            Err(e) => (format!("refused: {e}"), vec![]),
        };
        let docker = if c.accepted { "accepted" } else { "refused" };
        println!("{:<34} docker {docker:<8} orc {orc}", c.name);
        for w in warnings {
            println!("    {w}");
        }
    }

    let mut failures = vec![];
    for c in &cases {
        match (disagreement(c, &not_honoured), gaps.get(c.name.as_str())) {
            (Some(d), None) => failures.push(format!("{} ({}): {d}", c.name, c.stack)),
            (None, Some(why)) => failures.push(format!(
                "{} ({}): now agrees with Docker: take it out of KNOWN_GAPS (it said: {why})",
                c.name, c.stack
            )),
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree with Docker:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_warning_names_its_key_as_the_readme_lists_it() {
    assert_eq!(
        warning_key("f.yml:4:5: services.web.restart: not supported by orc, ignored"),
        "restart"
    );
    assert_eq!(
        warning_key("f.yml:9:7: services.web.deploy.resources.reservations.devices: x"),
        "deploy.resources.reservations.devices"
    );
    assert_eq!(
        warning_key("f.yml:3:1: networks.proxy.ipam: not supported"),
        "networks.*.ipam"
    );
    assert_eq!(
        warning_key("f.yml:7:9: services.web.ports[0]: the host address is ignored"),
        "ports"
    );
    assert_eq!(warning_key("f.yml:1:1: version: obsolete"), "version");
    assert_eq!(
        warning_key("f.yml:8:9: services.web.volumes[1].bind.propagation: not supported"),
        "volumes.bind.propagation"
    );
    assert_eq!(
        warning_key("f.yml:8:9: services.web.depends_on.db.restart: not supported"),
        "depends_on.*.restart"
    );
    let listed: BTreeSet<String> = ["deploy.resources".to_string()].into();
    assert!(covered("deploy.resources.reservations.devices", &listed));
    assert!(!covered("deploy.resources_x", &listed));
}
