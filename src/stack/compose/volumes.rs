//! Volumes: the top-level `volumes:` (named Docker volumes, external or made by the
//! stack) and a service's `volumes:` entries, short (`data:/var/lib/data:ro`) or long
//! (`type: bind`), read into mounts.

use std::collections::BTreeMap;

use super::fields::*;
use super::keys::*;
use crate::error::Result;
use crate::stack::yaml::{Node, Value};
use crate::stack::Loader;
use crate::store::service::{Mount, MountKind};
use crate::store::volume::MountPolicy;

/// A top-level volume.
pub(super) struct VolumeDef {
    /// The Docker volume name.
    name: String,
    driver: String,
    driver_opts: BTreeMap<String, String>,
    /// `x-orc-volume:` ([`crate::store::volume`]).
    policy: Option<MountPolicy>,
}

impl Loader<'_> {
    /// `x-orc-volume: {follow: BOOL, keep: BOOL}`.
    pub(super) fn volume_policy(&mut self, n: &Node, path: &str) -> Result<MountPolicy> {
        let mut p = MountPolicy {
            follow: false,
            keep: false,
        };
        for (k, v) in entries(n, path)? {
            let kp = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "follow" => p.follow = boolean(v, &kp)?,
                "keep" => p.keep = boolean(v, &kp)?,
                _ => return Err(unknown_key(k, path, &["follow", "keep"])),
            }
        }
        if p.keep && !p.follow {
            return Err(err(&n.pos, path, "keep: true needs follow: true"));
        }
        Ok(p)
    }
}

impl Loader<'_> {
    /// A service's `volumes:`, as mounts.
    pub(super) fn mounts(
        &mut self,
        v: &Node,
        p: &str,
        volumes: &BTreeMap<String, VolumeDef>,
    ) -> Result<Vec<Mount>> {
        let Value::Seq(items) = &v.value else {
            return Err(expected(v, p, "a list of volumes"));
        };
        let mut out = vec![];
        for (i, it) in items.iter().enumerate() {
            out.push(self.mount(it, &format!("{p}[{i}]"), volumes)?);
        }
        Ok(out)
    }

    /// A service's `tmpfs:` (absolute paths; options are warned about and ignored).
    pub(super) fn tmpfs(&mut self, v: &Node, p: &str) -> Result<Vec<Mount>> {
        let mut out = vec![];
        for (i, t) in strings(v, p)?.into_iter().enumerate() {
            let target = t.split(':').next().unwrap_or("").to_string();
            if !target.starts_with('/') {
                return Err(err(
                    &v.pos,
                    &format!("{p}[{i}]"),
                    format!("expected an absolute path, found {t:?}"),
                ));
            }
            if t.contains(':') {
                self.warn(
                    &v.pos,
                    &format!("{p}[{i}]"),
                    "tmpfs options are not supported by orc, ignored",
                );
            }
            out.push(Mount::new(MountKind::Tmpfs, "", target));
        }
        Ok(out)
    }

    pub(super) fn volumes(&mut self, n: &Node) -> Result<BTreeMap<String, VolumeDef>> {
        let mut out = BTreeMap::new();
        for (k, v) in entries(n, "volumes")? {
            let path = format!("volumes.{}", k.name);
            let mut def = VolumeDef {
                name: format!("{}_{}", self.name, k.name),
                driver: String::new(),
                driver_opts: BTreeMap::new(),
                policy: None,
            };
            let mut external = false;
            let mut explicit_name = None;
            for (fk, fv) in entries(v, &path)? {
                let p = format!("{path}.{}", fk.name);
                match fk.name.as_str() {
                    "driver" => def.driver = string(fv, &p)?,
                    "driver_opts" => {
                        for (ok, ov) in kv_map(fv, &p)? {
                            def.driver_opts.insert(ok, ov.unwrap_or_default());
                        }
                    }
                    "external" => external = boolean(fv, &p)?,
                    "name" => explicit_name = Some(string(fv, &p)?),
                    "labels" => self.warn(
                        &fk.pos,
                        &p,
                        "volume labels are not supported by orc, ignored",
                    ),
                    "x-orc-volume" => def.policy = Some(self.volume_policy(fv, &p)?),
                    x if x.starts_with("x-") => {}
                    _ => {
                        return Err(unknown_key(
                            fk,
                            &path,
                            &["driver", "driver_opts", "external", "name", "labels"],
                        ))
                    }
                }
            }
            if let Some(n) = explicit_name {
                def.name = n;
            } else if external {
                def.name = k.name.clone();
            }
            out.insert(k.name.clone(), def);
        }
        Ok(out)
    }

    pub(super) fn mount(
        &mut self,
        n: &Node,
        path: &str,
        volumes: &BTreeMap<String, VolumeDef>,
    ) -> Result<Mount> {
        let mut m = Mount::new(MountKind::Volume, "", "");
        match &n.value {
            Value::Str(s) => self.mount_short(&mut m, s, n, path)?,
            Value::Map(_) => self.mount_long(&mut m, n, path)?,
            _ => return Err(expected(n, path, "a volume such as data:/var/lib/data")),
        }
        if !m.target.starts_with('/') {
            return Err(err(
                &n.pos,
                path,
                format!("the target must be an absolute path, found {:?}", m.target),
            ));
        }
        if m.kind == MountKind::Volume && !m.source.is_empty() {
            let Some(def) = volumes.get(&m.source) else {
                return Err(err(
                    &n.pos,
                    path,
                    format!(
                        "volume {:?} is not declared under the top-level volumes:",
                        m.source
                    ),
                ));
            };
            m.source = def.name.clone();
            m.driver = def.driver.clone();
            m.driver_opts = def.driver_opts.clone();
            if let Some(p) = def.policy {
                if p.follow && !m.is_named_local_volume() {
                    return Err(err(
                        &n.pos,
                        path,
                        format!(
                            "volume {:?} has x-orc-volume follow, but only a volume of the local driver can follow its task",
                            m.source
                        ),
                    ));
                }
                m.follow = p.follow;
                m.keep = p.keep;
            }
        }
        Ok(m)
    }

    /// The short form: `SOURCE:TARGET[:MODE]` or `TARGET`; a source that is a path
    /// binds it, a name is a declared volume.
    fn mount_short(&mut self, m: &mut Mount, s: &str, n: &Node, path: &str) -> Result<()> {
        let parts: Vec<&str> = s.split(':').collect();
        let (src, target, opts) = match parts.as_slice() {
            [t] => ("", *t, ""),
            [s, t] => (*s, *t, ""),
            [s, t, o] => (*s, *t, *o),
            _ => return Err(expected(n, path, "SOURCE:TARGET[:MODE] or TARGET")),
        };
        // Docker refuses an empty part ("empty section between colons"): `${UNSET}:/data`
        // must not become an anonymous volume.
        let empty = match parts.as_slice() {
            [s, ..] if parts.len() > 1 && s.is_empty() => Some("source"),
            [_, "", ..] => Some("target"),
            [_, _, ""] => Some("mode"),
            [""] => Some("target"),
            _ => None,
        };
        if let Some(what) = empty {
            let vars = self.unset_vars(&n.pos);
            let msg = if vars.is_empty() {
                format!(
                    "the volume {what} is empty in {s:?} (expected SOURCE:TARGET[:MODE] or TARGET)"
                )
            } else {
                format!(
                    "{} not set, so the volume {what} is empty in {s:?}",
                    crate::stack::unset_phrase(&vars)
                )
            };
            return Err(err(&n.pos, path, msg));
        }
        m.target = target.to_string();
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => m.readonly = true,
                "rw" => m.readonly = false,
                "z" | "Z" | "nocopy" | "cached" | "delegated" | "consistent" => self.warn(
                    &n.pos,
                    path,
                    format!("the mode {o:?} is not supported by orc, ignored"),
                ),
                _ => {
                    return Err(err(
                        &n.pos,
                        path,
                        format!("unknown mode {o:?} (expected ro or rw)"),
                    ))
                }
            }
        }
        if src.starts_with('/') || src.starts_with('.') || src.starts_with('~') {
            m.kind = MountKind::Bind;
            m.source = self.relative_to(&n.pos, src).display().to_string();
        } else {
            m.source = src.to_string();
        }
        Ok(())
    }

    /// The long form: `type:`, `source:`, `target:`, `read_only:`.
    fn mount_long(&mut self, m: &mut Mount, n: &Node, path: &str) -> Result<()> {
        let mut kind = None;
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "type" => kind = Some(word::<MountKind>(v, &p)?),
                "source" => m.source = string(v, &p)?,
                "target" => m.target = string(v, &p)?,
                "read_only" => m.readonly = boolean(v, &p)?,
                "bind" | "volume" | "tmpfs" | "image" => {
                    for (ok, _) in entries(v, &p)? {
                        self.warn(
                            &ok.pos,
                            &format!("{p}.{}", ok.name),
                            "not supported by orc, ignored",
                        );
                    }
                }
                "consistency" => self.warn(&k.pos, &p, "not supported by orc, ignored"),
                x if x.starts_with("x-") => {}
                _ => {
                    return Err(unknown_key(
                        k,
                        path,
                        &[
                            "type",
                            "source",
                            "target",
                            "read_only",
                            "bind",
                            "volume",
                            "tmpfs",
                            "consistency",
                        ],
                    ))
                }
            }
        }
        let Some(kind) = kind else {
            return Err(err(
                &n.pos,
                &format!("{path}.type"),
                "missing: bind, volume or tmpfs",
            ));
        };
        m.kind = kind;
        if kind == MountKind::Bind {
            if m.source.is_empty() {
                return Err(err(
                    &n.pos,
                    &format!("{path}.source"),
                    "missing: a bind mount needs a host path",
                ));
            }
            m.source = self
                .relative_to(&n.pos, &m.source.clone())
                .display()
                .to_string();
        }
        Ok(())
    }
}
