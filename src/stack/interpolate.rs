//! Compose's variable interpolation and `.env` files.
//!
//! `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
//! `${VAR:?message}` / `${VAR?message}` (an error), `${VAR:+alt}` / `${VAR+alt}`, and
//! `$$` for a literal `$`. As `docker stack deploy` reads them (Docker's CLI, not
//! `docker compose`): a braced variable ends at the first `}`, and a default or an
//! error message is taken as it is written, `$` included (`${PW:-$2y$05$...}` is a
//! bcrypt hash, not three variables). `:+`/`+` (compose's) interpolate their text.

use std::collections::BTreeMap;

/// Where variables come from: the process environment over the `.env` file.
pub type Vars = BTreeMap<String, String>;

/// What went wrong in one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `${VAR:?message}` with VAR unset (or empty).
    Required(String, String),
    /// Not a valid interpolation (e.g. `${` without `}`).
    Syntax(String),
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Interpolates `s`. `unset` collects variables used without a value and without a
/// default (they become empty strings, as in compose).
pub fn interpolate(
    s: &str,
    vars: &Vars,
    unset: &mut Vec<String>,
) -> std::result::Result<String, Problem> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                // up to the first closing brace, as Docker's CLI reads it
                let start = i + 2;
                let j = chars[start..]
                    .iter()
                    .position(|c| *c == '}')
                    .map_or(chars.len(), |k| start + k);
                if j >= chars.len() {
                    return Err(Problem::Syntax(format!(
                        "{s:?}: \"${{\" without a closing \"}}\""
                    )));
                }
                let inner: String = chars[start..j].iter().collect();
                out.push_str(&braced(&inner, s, vars, unset)?);
                i = j + 1;
            }
            Some(&n) if is_name_start(n) => {
                let mut j = i + 1;
                while j < chars.len() && is_name(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                match vars.get(&name) {
                    Some(v) => out.push_str(v),
                    None => unset.push(name),
                }
                i = j;
            }
            _ => {
                return Err(Problem::Syntax(format!(
                    "{s:?}: a \"$\" must start a variable (${{VAR}}) or be doubled (\"$$\")"
                )))
            }
        }
    }
    Ok(out)
}

fn braced(
    inner: &str,
    whole: &str,
    vars: &Vars,
    unset: &mut Vec<String>,
) -> std::result::Result<String, Problem> {
    let name_len = inner.find(|c: char| !is_name(c)).unwrap_or(inner.len());
    let name = &inner[..name_len];
    if name.is_empty() || !name.chars().next().is_some_and(is_name_start) {
        return Err(Problem::Syntax(format!(
            "{whole:?}: \"${{{inner}}}\" is not a valid variable"
        )));
    }
    let rest = &inner[name_len..];
    let value = vars.get(name);
    let empty = value.is_none_or(|v| v.is_empty());
    let (op, arg) = if rest.is_empty() {
        ("", "")
    } else if let Some(op) = [":-", ":?", ":+", "-", "?", "+"]
        .into_iter()
        .find(|op| rest.starts_with(op))
    {
        (op, &rest[op.len()..])
    } else {
        return Err(Problem::Syntax(format!(
            "{whole:?}: \"${{{inner}}}\" is not a valid variable"
        )));
    };
    // `:+`'s text (compose's, which Docker's CLI lacks) is interpolated, or taken as
    // written when it is no valid interpolation (`${PASS:+$2y$05$...}`).
    let sub = |unset: &mut Vec<String>| {
        let before = unset.len();
        match interpolate(arg, vars, unset) {
            Err(Problem::Syntax(_)) => {
                unset.truncate(before);
                Ok(arg.to_string())
            }
            r => r,
        }
    };
    Ok(match op {
        "" => match value {
            Some(v) => v.clone(),
            None => {
                unset.push(name.to_string());
                String::new()
            }
        },
        ":-" if empty => arg.to_string(),
        "-" if value.is_none() => arg.to_string(),
        ":?" | "?" if (op == ":?" && empty) || value.is_none() => {
            return Err(Problem::Required(name.to_string(), arg.to_string()));
        }
        ":+" if !empty => sub(unset)?,
        "+" if value.is_some() => sub(unset)?,
        ":+" | "+" => String::new(),
        _ => value.cloned().unwrap_or_default(),
    })
}

/// Parses a `.env` file: `KEY=VALUE` lines, `#` comments, blank lines, an optional
/// `export ` prefix, values optionally in single or double quotes. Returns the
/// variables, or the 1-based line of the first bad line.
pub fn parse_env_file(text: &str) -> std::result::Result<Vars, (usize, String)> {
    let mut vars = Vars::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").map(str::trim_start).unwrap_or(l);
        let Some((k, v)) = l.split_once('=') else {
            return Err((n + 1, format!("expected KEY=VALUE, found {l:?}")));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(is_name) {
            return Err((n + 1, format!("{k:?} is not a variable name")));
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            let inner = &v[1..v.len() - 1];
            if v.starts_with('"') {
                inner.replace("\\n", "\n").replace("\\\"", "\"")
            } else {
                inner.to_string()
            }
        } else {
            // an unquoted value ends at " #"
            match v.find(" #") {
                Some(i) => v[..i].trim_end().to_string(),
                None => v.to_string(),
            }
        };
        vars.insert(k.to_string(), v);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "a"), ("EMPTY", ""), ("N", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(s: &str) -> std::result::Result<String, Problem> {
        interpolate(s, &vars(), &mut vec![])
    }

    #[test]
    fn every_form_of_compose_interpolation() {
        assert_eq!(run("x${A}y").unwrap(), "xay");
        assert_eq!(run("$A-$N").unwrap(), "a-3");
        assert_eq!(run("$$A").unwrap(), "$A");
        assert_eq!(run("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(run("${EMPTY-d}").unwrap(), "");
        assert_eq!(run("${NOPE-d}").unwrap(), "d");
        // as `docker stack config` prints them: the default is literal, the variable
        // ends at the first `}`
        assert_eq!(run("${NOPE:-${A}x}").unwrap(), "${Ax}");
        assert_eq!(run("${NOPE:-$2y$05$abc}").unwrap(), "$2y$05$abc");
        assert_eq!(run("${NOPE:-$$2y}").unwrap(), "$$2y");
        assert_eq!(run("${NOPE:-{x}}").unwrap(), "{x}");
        assert_eq!(run("${A:+$2y}").unwrap(), "$2y");
        assert!(matches!(run("$2y"), Err(Problem::Syntax(_))));
        assert_eq!(run("${A:+yes}").unwrap(), "yes");
        assert_eq!(run("${EMPTY:+yes}").unwrap(), "");
        assert_eq!(run("${EMPTY+yes}").unwrap(), "yes");
        assert_eq!(run("${REDIS:-redis:7-alpine}").unwrap(), "redis:7-alpine");
        assert_eq!(
            run("${NOPE:?set NOPE}"),
            Err(Problem::Required("NOPE".into(), "set NOPE".into()))
        );
        assert_eq!(
            run("${EMPTY:?must}"),
            Err(Problem::Required("EMPTY".into(), "must".into()))
        );
        assert_eq!(run("${EMPTY?must}").unwrap(), "");
        assert!(matches!(run("${A"), Err(Problem::Syntax(_))));
        assert!(matches!(run("${1A}"), Err(Problem::Syntax(_))));
        assert!(matches!(run("a $ b"), Err(Problem::Syntax(_))));
        let mut unset = vec![];
        assert_eq!(interpolate("${X}$Y", &vars(), &mut unset).unwrap(), "");
        assert_eq!(unset, ["X", "Y"]);
    }

    #[test]
    fn env_files_as_compose_reads_them() {
        let v = parse_env_file(
            "# comment\n\nA=1\nexport B = two words\nC=\"q # not a comment\"\nD='$x'\nE=v # c\n",
        )
        .unwrap();
        assert_eq!(v["A"], "1");
        assert_eq!(v["B"], "two words");
        assert_eq!(v["C"], "q # not a comment");
        assert_eq!(v["D"], "$x");
        assert_eq!(v["E"], "v");
        assert_eq!(parse_env_file("A=1\nnope\n").unwrap_err().0, 2);
    }
}
