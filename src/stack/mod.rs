//! Stacks: compose files as users write them, loaded into service specs.
//!
//! The CLI loads the files (`load`): YAML with anchors and merge keys ([`yaml`]),
//! `${VAR}` interpolation from the shell and a `.env` beside the first file
//! ([`interpolate`]), several `-c` files merged by compose's override rules
//! ([`merge`]), then each service converted to a [`ServiceSpec`] named `STACK_service`
//! with the stack label ([`compose`]). Nothing is written before the whole stack has
//! loaded; a bad file is refused with one line naming the file, line, column and field.
//! Keys orc does not honour come back as warnings, each naming its key.
//!
//! The leader then compares the specs with what runs ([`plan`]) and applies the
//! whole stack in one Raft entry, so a refused deploy leaves nothing behind.

mod compose;
pub mod interpolate;
mod merge;
pub mod plan;
pub mod yaml;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::{NetworkSpec, ServiceSpec};
use interpolate::{parse_env_file, Problem, Vars};
use yaml::{Node, Pos, Value};

/// A loaded stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Its name.
    pub name: String,
    /// The services, by name; their `networks` name the networks by name (the control
    /// API resolves them to ids).
    pub services: Vec<ServiceSpec>,
    /// The networks its services are on, by name.
    pub networks: Vec<StackNetwork>,
    /// One line per key orc does not honour, and per variable used but not set.
    pub warnings: Vec<String>,
    /// Its secrets and configs.
    pub secrets: Vec<StackSecret>,
}

/// A network of a stack: made by the deploy (named `STACK_key`, or its `name:`, with
/// the stack label), or external (it must exist; never made nor removed by the stack).
/// A secret or config of a stack file (`compose::secrets`): made (or given a new
/// content) by the deploy unless external. Its `Debug` never shows the content.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSecret {
    /// Secret or config.
    pub kind: crate::store::secret::Kind,
    /// Its full name (`STACK_KEY`, or `name:`).
    pub name: String,
    /// Must exist; never made, changed nor removed by the stack.
    pub external: bool,
    /// The content (none when external).
    pub data: Option<crate::store::secret::Plain>,
    /// Labels (a stack-owned one carries the stack label).
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StackNetwork {
    /// Its spec (the name it has in the cluster).
    pub spec: NetworkSpec,
    /// Must exist at deploy.
    pub external: bool,
}

/// Reads a file (a function, so that tests load from memory).
pub type Read<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

pub(crate) struct Loader<'a> {
    name: &'a str,
    vars: Vars,
    read: Read<'a>,
    warnings: Vec<String>,
    /// Secrets and configs, gathered while reading.
    secrets: compose::Gathered,
    /// Where a string used variables that were not set, and which.
    unset_at: Vec<(Pos, Vec<String>)>,
}

impl Loader<'_> {
    fn warn(&mut self, pos: &Pos, path: &str, msg: impl std::fmt::Display) {
        let w = format!("{pos}: {path}: {msg}");
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }
}

/// Checks a stack name (`docker stack deploy` rules: lower-case letters, digits, `-`
/// and `_`, starting with a letter or digit).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "NAME: {name:?} is not a valid stack name (lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 32)"
        )))
    }
}

/// Loads the stack `name` from `files` (merged in order). `env` is the deploying
/// shell's environment; a `.env` file beside the first file adds to it (the shell
/// wins).
pub fn load(files: &[PathBuf], name: &str, env: &Vars, read: Read<'_>) -> Result<Stack> {
    load_reporting(files, name, env, read).0
}

/// [`load`], and the warnings found on the way, also when the stack is then refused (a
/// warning may explain the refusal: `the variable PGDATA is not set`). On success they
/// are the stack's own [`Stack::warnings`].
pub fn load_reporting(
    files: &[PathBuf],
    name: &str,
    env: &Vars,
    read: Read<'_>,
) -> (Result<Stack>, Vec<String>) {
    if let Err(e) = check_name(name) {
        return (Err(e), vec![]);
    }
    let Some(first) = files.first() else {
        return (
            Err(Error::InvalidInput(
                "--compose-file: at least one stack file is needed (-c stack.yml)".into(),
            )),
            vec![],
        );
    };
    let mut vars = Vars::new();
    let dir = first.parent().unwrap_or(Path::new(""));
    let dotenv = if dir.as_os_str().is_empty() {
        PathBuf::from(".env")
    } else {
        dir.join(".env")
    };
    if let Ok(text) = read(&dotenv) {
        match parse_env_file(&text) {
            Ok(v) => vars = v,
            Err((line, m)) => {
                let e = Error::InvalidInput(format!("{}:{line}: {m}", dotenv.display()));
                return (Err(e), vec![]);
            }
        }
    }
    for (k, v) in env {
        vars.insert(k.clone(), v.clone());
    }
    let mut loader = Loader {
        name,
        vars,
        read,
        warnings: vec![],
        unset_at: vec![],
        secrets: Default::default(),
    };
    loader.secrets.dir = dir.to_path_buf();
    let loaded = loader.load_files(files);
    let loaded = loaded.map_err(|e| loader.naming_unset(e));
    let secrets = std::mem::take(&mut loader.secrets.out);
    let warnings = loader.warnings;
    let stack = loaded.map(|(services, networks)| Stack {
        name: name.to_string(),
        services,
        networks,
        warnings: warnings.clone(),
        secrets,
    });
    (stack, warnings)
}

impl Loader<'_> {
    /// Reads, interpolates and merges `files`, then converts the result.
    fn load_files(&mut self, files: &[PathBuf]) -> Result<(Vec<ServiceSpec>, Vec<StackNetwork>)> {
        let mut merged: Option<Node> = None;
        for f in files {
            let shown = f.display().to_string();
            let text = (self.read)(f).map_err(|e| {
                Error::InvalidInput(format!("--compose-file: cannot read {shown}: {e}"))
            })?;
            let mut doc = yaml::parse(&shown, &text)?;
            if !matches!(doc.value, Value::Map(_)) {
                return Err(Error::InvalidInput(format!(
                    "{}: expected a mapping with services:, found {}",
                    doc.pos,
                    doc.kind()
                )));
            }
            let mut unset = vec![];
            let mut unset_at = vec![];
            let done = self.interpolate(&mut doc, &mut String::new(), &mut unset, &mut unset_at);
            self.unset_at.extend(unset_at);
            // Warned about even when the interpolation then fails.
            unset.dedup();
            for v in unset {
                let w = format!("{shown}: the variable {v} is not set: an empty string is used");
                if !self.warnings.contains(&w) {
                    self.warnings.push(w);
                }
            }
            done?;
            merge::normalize(&mut doc);
            merged = Some(match merged {
                None => doc,
                Some(base) => merge::merge(base, doc, &mut vec![]),
            });
        }
        let doc = merged.unwrap_or_else(|| Node::new(Value::Null, Pos::default()));
        self.convert(&doc)
    }

    /// The variables that were not set in the string at `pos` (it became shorter, or
    /// empty, where they stood).
    fn unset_vars(&self, pos: &Pos) -> Vec<String> {
        let mut out: Vec<String> = self
            .unset_at
            .iter()
            .filter(|(p, _)| p == pos)
            .flat_map(|(_, vars)| vars.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `e`, saying which variables were not set when the refused value had some: a
    /// refusal caused by an unset variable names it.
    fn naming_unset(&self, e: Error) -> Error {
        let Error::InvalidInput(m) = &e else {
            return e;
        };
        if m.contains(" is not set") {
            return e;
        }
        for (pos, _) in &self.unset_at {
            if pos.line != 0 && m.starts_with(&format!("{pos}: ")) {
                let vars = self.unset_vars(pos);
                return Error::InvalidInput(format!("{m} ({} not set)", unset_phrase(&vars)));
            }
        }
        e
    }
}

/// `the variable A is` / `the variables A, B are`.
pub(crate) fn unset_phrase(vars: &[String]) -> String {
    let list: Vec<String> = vars.iter().map(|v| format!("${{{v}}}")).collect();
    if vars.len() == 1 {
        format!("{} is", list[0])
    } else {
        format!("{} are", list.join(", "))
    }
}

impl Loader<'_> {
    /// Interpolates every string value under `n` (keys are left alone).
    fn interpolate(
        &self,
        n: &mut Node,
        path: &mut String,
        unset: &mut Vec<String>,
        unset_at: &mut Vec<(Pos, Vec<String>)>,
    ) -> Result<()> {
        match &mut n.value {
            Value::Str(s) => {
                let before = unset.len();
                let out = interpolate::interpolate(s, &self.vars, unset);
                if unset.len() > before {
                    unset_at.push((n.pos.clone(), unset[before..].to_vec()));
                }
                let out = out.map_err(|p| match p {
                    Problem::Required(var, msg) => compose::err(
                        &n.pos,
                        path,
                        if msg.is_empty() {
                            format!("the variable {var} is required")
                        } else {
                            format!("the variable {var} is required: {msg}")
                        },
                    ),
                    Problem::Syntax(m) => {
                        compose::err(&n.pos, path, format!("bad interpolation in {m}"))
                    }
                })?;
                *s = out;
            }
            Value::Seq(items) => {
                for (i, it) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.interpolate(it, path, unset, unset_at)?;
                    path.truncate(len);
                }
            }
            Value::Map(m) => {
                for (k, v) in m.iter_mut() {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&k.name);
                    self.interpolate(v, path, unset, unset_at)?;
                    path.truncate(len);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
