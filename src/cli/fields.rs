//! The CLI's names for the fields of a service spec and of a node update.
//!
//! The control API checks a spec at its door and names the field at fault
//! (`ports: port 8080/tcp is already published by service web`), as a compose file or
//! any other client would read it. The service commands show the flag the user typed
//! instead (`--publish: ...`): this table is the one place the two names meet. The
//! service, node, init, join, cluster and ca commands pass their errors through
//! [`with_flags`].
//!
//! A field with an index (`task.placement.constraints[1]`) names one value of a flag
//! given several times, and the message goes on with that value, quoted; the CLI shows
//! it as the flag was typed: `--constraint "node.labels.zone=a": expected ...`.

use crate::error::Error;

/// Field → flag (a service spec's, a node update's, then the cluster settings').
const FLAGS: &[(&str, &str)] = &[
    ("name", "--name"),
    ("mode.replicas", "--replicas"),
    ("mode.total_completions", "--replicas"),
    ("mode.max_concurrent", "--max-concurrent"),
    ("mode", "--mode"),
    ("ports", "--publish"),
    ("task.container.env", "--env"),
    ("task.container.mounts", "--mount"),
    ("task.placement.constraints", "--constraint"),
    ("task.placement.preferences", "--placement-pref"),
    ("task.container.options.hostname", "--hostname"),
    ("task.container.options.cap_add", "--cap-add"),
    ("task.container.options.cap_drop", "--cap-drop"),
    ("task.container.options.sysctls", "--sysctl"),
    ("task.container.options.ulimits", "--ulimit"),
    ("task.container.options.stop_signal", "--stop-signal"),
    ("task.container.options.extra_hosts", "--add-host"),
    ("task.container.options.dns", "--dns"),
    ("task.container.options.dns_search", "--dns-search"),
    ("task.container.options.group_add", "--group"),
    ("task.resources.generic_resources", "--generic-resource"),
    ("networks", "--network"),
    ("update.max_failure_ratio", "--update-max-failure-ratio"),
    ("rollback.max_failure_ratio", "--rollback-max-failure-ratio"),
    ("availability", "--availability"),
    ("labels_add", "--label-add"),
    ("labels_rm", "--label-rm"),
    ("cert_validity_secs", "--cert-expiry"),
    ("autolock", "--autolock"),
    ("advertise_addr", "--advertise-addr"),
    ("listen_addr", "--listen-addr"),
    ("vip_range", "--vip-range"),
];

/// The flag for `field`, if a service flag sets it.
pub fn flag_of(field: &str) -> Option<&'static str> {
    FLAGS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, flag)| *flag)
}

/// A field without its index: `task.placement.constraints[1]` is
/// `task.placement.constraints`, with an index.
fn strip_index(field: &str) -> (&str, bool) {
    match field.strip_suffix(']').and_then(|f| f.rsplit_once('[')) {
        Some((name, i)) if !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) => (name, true),
        _ => (field, false),
    }
}

/// `e` with a leading field name (`ports: ...`) replaced by its flag (`--publish: ...`);
/// an indexed field's value follows its flag (`--constraint "a=b": ...`).
pub fn with_flags(e: Error) -> Error {
    let rename = |m: String| {
        let Some((field, rest)) = m.split_once(": ") else {
            return m;
        };
        let (name, indexed) = strip_index(field);
        match flag_of(name) {
            Some(flag) if indexed => format!("{flag} {rest}"),
            Some(flag) => format!("{flag}: {rest}"),
            None => m,
        }
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
    fn init_and_join_fields_become_their_flags() {
        for (field, flag) in [
            (
                "advertise_addr: expected IP[:PORT], found \"x\"",
                "--advertise-addr: expected IP[:PORT], found \"x\"",
            ),
            (
                "listen_addr: cannot listen on 0.0.0.0:1: denied",
                "--listen-addr: cannot listen on 0.0.0.0:1: denied",
            ),
            (
                "vip_range: \"x\": expected an IPv4 network",
                "--vip-range: \"x\": expected an IPv4 network",
            ),
        ] {
            assert_eq!(
                with_flags(Error::InvalidInput(field.into())).to_string(),
                Error::InvalidInput(flag.into()).to_string()
            );
        }
    }

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
        // an indexed field: its flag, then the value as typed
        let e = with_flags(Error::InvalidInput(
            "task.placement.constraints[1]: \"node.labels.zone=a\": expected KEY==VALUE".into(),
        ));
        assert_eq!(
            e.to_string(),
            "--constraint \"node.labels.zone=a\": expected KEY==VALUE"
        );
        let e = with_flags(Error::InvalidInput(
            "cert_validity_secs: must be at least 3600 s (12 s given)".into(),
        ));
        assert_eq!(
            e.to_string(),
            "--cert-expiry: must be at least 3600 s (12 s given)"
        );
        // no field, or one no flag sets: unchanged
        for m in [
            "service web already exists",
            "image: must not be empty",
            "x",
            "ports[x]: y",
            "name[]: y",
        ] {
            assert_eq!(with_flags(Error::InvalidInput(m.into())).to_string(), m);
        }
    }
}
