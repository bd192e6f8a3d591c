//! The CLI's names for the fields of a service spec and of a node update.
//!
//! The control API checks a spec at its door and names the field at fault
//! (`ports: port 8080/tcp is already published by service web`), as a compose file or
//! any other client would read it. The service commands show the flag the user typed
//! instead (`--publish: ...`): this table is the one place the two names meet. The
//! service and node commands pass their errors through [`with_flags`].

use crate::error::Error;

/// Field → flag (a service spec's, then a node update's).
const FLAGS: &[(&str, &str)] = &[
    ("name", "--name"),
    ("mode.replicas", "--replicas"),
    ("mode.total_completions", "--replicas"),
    ("mode.max_concurrent", "--max-concurrent"),
    ("mode", "--mode"),
    ("ports", "--publish"),
    ("task.container.env", "--env"),
    ("task.container.mounts", "--mount"),
    ("task.placement.preferences", "--placement-pref"),
    ("update.max_failure_ratio", "--update-max-failure-ratio"),
    ("rollback.max_failure_ratio", "--rollback-max-failure-ratio"),
    ("availability", "--availability"),
    ("labels_add", "--label-add"),
    ("labels_rm", "--label-rm"),
];

/// The flag for `field`, if a service flag sets it.
pub fn flag_of(field: &str) -> Option<&'static str> {
    FLAGS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, flag)| *flag)
}

/// `e` with a leading field name (`ports: ...`) replaced by its flag (`--publish: ...`).
pub fn with_flags(e: Error) -> Error {
    let rename = |m: String| match m
        .split_once(": ")
        .and_then(|(f, rest)| Some((flag_of(f)?, rest)))
    {
        Some((flag, rest)) => format!("{flag}: {rest}"),
        None => m,
    };
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(rename(m)),
        Error::Conflict(m) => Error::Conflict(rename(m)),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_field_becomes_its_flag_and_the_rest_stays() {
        let e = with_flags(Error::Conflict(
            "ports: port 8080/tcp is already published by service web".into(),
        ));
        assert_eq!(
            e.to_string(),
            "--publish: port 8080/tcp is already published by service web"
        );
        let e = with_flags(Error::InvalidInput(
            "mode.replicas: at most 100000, found 100001".into(),
        ));
        assert_eq!(e.to_string(), "--replicas: at most 100000, found 100001");
        let e = with_flags(Error::InvalidInput(
            "availability: expected active, pause or drain, found \"x\"".into(),
        ));
        assert_eq!(
            e.to_string(),
            "--availability: expected active, pause or drain, found \"x\""
        );
        // no field, or one no flag sets: unchanged
        for m in [
            "service web already exists",
            "image: must not be empty",
            "x",
        ] {
            assert_eq!(with_flags(Error::InvalidInput(m.into())).to_string(), m);
        }
    }
}
