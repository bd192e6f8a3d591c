//! Secrets and configs of a compose file: the top-level `secrets:` and `configs:` and
//! each service's `secrets:` / `configs:` (short `- NAME` or long `source`, `target`,
//! `uid`, `gid`, `mode`).
//!
//! A declared secret `pw` is made as `STACK_pw` with the stack label, its content from
//! `file:` (relative to the first stack file's directory), `environment:` (a variable
//! of the deploying shell, or the `.env` file) or, for a config, `content:`; unless it is
//! `external: true` (it must exist at deploy; named by `name:` or its key). A `name:`
//! names a stack-owned one otherwise. `template_driver` is warned about and ignored.
//! A service names only declared ones.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::fields::*;
use super::keys::unknown_key;
use crate::error::Result;
use crate::stack::yaml::{Node, Pos, Value};
use crate::stack::{Loader, StackSecret};
use crate::store::secret::{validate_data, validate_name, Kind, Plain, SecretRef, MAX_OBJECTS};
use crate::store::service::STACK_LABEL;

const TOP_KEYS: &[&str] = &[
    "file",
    "environment",
    "content",
    "external",
    "name",
    "labels",
    "driver",
    "driver_opts",
    "template_driver",
];

const USE_KEYS: &[&str] = &["source", "target", "uid", "gid", "mode"];

/// What the loader gathers of secrets and configs while it reads the file.
#[derive(Default)]
pub(crate) struct Gathered {
    /// The directory `file:` is relative to.
    pub(crate) dir: PathBuf,
    /// Declared ones by kind and key, with where.
    declared: BTreeMap<(Kind, String), (StackSecret, Pos)>,
    /// Each service's uses (by its path `services.NAME`), names still keys.
    uses: Vec<(String, Kind, SecretRef, Pos)>,
    /// What the stack declares, once the services are read.
    pub(crate) out: Vec<StackSecret>,
}

impl Loader<'_> {
    /// The top-level `secrets:` or `configs:`.
    pub(super) fn declare_secrets(&mut self, kind: Kind, n: &Node) -> Result<()> {
        let top = kind.plural();
        let list = entries(n, top)?;
        if list.len() > MAX_OBJECTS {
            return Err(err(
                &n.pos,
                top,
                format!("at most {MAX_OBJECTS} in a stack"),
            ));
        }
        for (k, v) in list {
            let path = format!("{top}.{}", k.name);
            let mut name = None;
            let mut external = false;
            let mut data: Option<Vec<u8>> = None;
            let mut labels = BTreeMap::new();
            for (fk, fv) in entries(v, &path)? {
                let p = format!("{path}.{}", fk.name);
                match fk.name.as_str() {
                    "name" => name = Some(string(fv, &p)?),
                    "external" => {
                        external = match &fv.value {
                            Value::Map(_) => true,
                            _ => boolean(fv, &p)?,
                        }
                    }
                    "labels" => {
                        for (lk, lv) in kv_map(fv, &p)? {
                            labels.insert(lk, lv.unwrap_or_default());
                        }
                    }
                    "file" => {
                        let f = string(fv, &p)?;
                        let full = if std::path::Path::new(&f).is_absolute() {
                            PathBuf::from(&f)
                        } else {
                            self.secrets.dir.join(&f)
                        };
                        let text = (self.read)(&full).map_err(|e| {
                            err(&fv.pos, &p, format!("cannot read {}: {e}", full.display()))
                        })?;
                        data = Some(text.into_bytes());
                    }
                    "environment" => {
                        let var = string(fv, &p)?;
                        let value = self.vars.get(&var).cloned().ok_or_else(|| {
                            err(&fv.pos, &p, format!("the variable {var} is not set"))
                        })?;
                        data = Some(value.into_bytes());
                    }
                    "content" if kind == Kind::Config => data = Some(string(fv, &p)?.into_bytes()),
                    "template_driver" | "driver" | "driver_opts" => self.warn(
                        &fk.pos,
                        &p,
                        "not supported by orc, ignored (the content is used as it is)",
                    ),
                    _ => return Err(unknown_key(fk, &path, TOP_KEYS)),
                }
            }
            let full = if external {
                name.unwrap_or_else(|| k.name.clone())
            } else {
                name.unwrap_or_else(|| format!("{}_{}", self.name, k.name))
            };
            validate_name(kind, &full).map_err(|e| err(&k.pos, &path, e))?;
            if !external {
                let Some(d) = &data else {
                    return Err(err(
                        &k.pos,
                        &path,
                        if kind == Kind::Config {
                            "one of file:, environment:, content: or external: true is needed"
                        } else {
                            "one of file:, environment: or external: true is needed"
                        },
                    ));
                };
                validate_data(kind, d).map_err(|e| err(&k.pos, &path, e))?;
                labels.insert(STACK_LABEL.into(), self.name.to_string());
            } else if data.is_some() {
                return Err(err(
                    &k.pos,
                    &path,
                    "an external one has no content here (file:, environment:, content:)",
                ));
            }
            let s = StackSecret {
                kind,
                name: full,
                external,
                data: data.map(Plain),
                labels,
            };
            self.secrets
                .declared
                .insert((kind, k.name.clone()), (s, k.pos.clone()));
        }
        Ok(())
    }

    /// A service's `secrets:` or `configs:` (the names still the file's keys).
    pub(super) fn use_secrets(
        &mut self,
        kind: Kind,
        n: &Node,
        service: &str,
        p: &str,
    ) -> Result<()> {
        let Value::Seq(items) = &n.value else {
            return Err(expected(n, p, "a list"));
        };
        for it in items {
            let r = match &it.value {
                Value::Map(_) => {
                    let mut r = SecretRef::to("");
                    for (k, v) in entries(it, p)? {
                        let fp = format!("{p}.{}", k.name);
                        let num = |v: &Node| -> Result<u32> {
                            let s = match &v.value {
                                Value::Str(s) => s.clone(),
                                _ => uint(v, &fp)?.to_string(),
                            };
                            s.parse().map_err(|_| expected(v, &fp, "a number"))
                        };
                        match k.name.as_str() {
                            "source" => r.name = string(v, &fp)?,
                            "target" => r.target = string(v, &fp)?,
                            "uid" => r.uid = num(v)?,
                            "gid" => r.gid = num(v)?,
                            "mode" => {
                                // Docker reads `0440` as octal (YAML 1.1); the YAML reader
                                // here sees a leading-zero number as a float, so that one
                                // is read as octal, a plain integer as decimal (288), and
                                // text as octal.
                                let octal = |t: &str| {
                                    u32::from_str_radix(t.trim_start_matches("0o"), 8)
                                        .map_err(|_| expected(v, &fp, "an octal file mode"))
                                };
                                r.mode = match &v.value {
                                    Value::Str(t) => octal(t)?,
                                    Value::Float(f) if f.fract() == 0.0 && *f >= 0.0 => {
                                        octal(&format!("{}", *f as u64))?
                                    }
                                    _ => u32::try_from(uint(v, &fp)?)
                                        .map_err(|_| expected(v, &fp, "a file mode"))?,
                                }
                            }
                            _ => return Err(unknown_key(k, p, USE_KEYS)),
                        }
                    }
                    if r.name.is_empty() {
                        return Err(err(&it.pos, p, "source: is required"));
                    }
                    r
                }
                _ => SecretRef::to(&string(it, p)?),
            };
            self.secrets
                .uses
                .push((service.to_string(), kind, r, it.pos.clone()));
        }
        Ok(())
    }

    /// The secrets and configs the services use (in the drafts, by their full names),
    /// and the stack's declared ones. Refuses a use of an undeclared one.
    pub(super) fn stack_secrets(
        &mut self,
        drafts: &mut [super::Draft],
    ) -> Result<Vec<StackSecret>> {
        let uses = std::mem::take(&mut self.secrets.uses);
        for (service, kind, mut r, pos) in uses {
            let Some(d) = drafts
                .iter_mut()
                .find(|d| format!("services.{}", d.short) == service)
            else {
                continue;
            };
            let p = format!("{service}.{}", kind.plural());
            let Some((s, _)) = self.secrets.declared.get(&(kind, r.name.clone())) else {
                return Err(err(
                    &pos,
                    &p,
                    format!(
                        "{kind} {} is not declared under the top-level {}:",
                        r.name,
                        kind.plural()
                    ),
                ));
            };
            // The path in the container keeps the file's key, as Docker does.
            if r.target.is_empty() {
                r.target = r.name.clone();
            }
            r.name = s.name.clone();
            d.spec.task.refs_mut(kind).push(r);
        }
        for d in drafts.iter() {
            for kind in [Kind::Secret, Kind::Config] {
                crate::store::secret::validate_refs(kind, d.spec.task.refs(kind)).map_err(|e| {
                    crate::error::Error::InvalidInput(format!("services.{}: {e}", d.short))
                })?;
            }
        }
        let mut out: Vec<StackSecret> = std::mem::take(&mut self.secrets.declared)
            .into_values()
            .map(|(s, _)| s)
            .collect();
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(out)
    }
}
