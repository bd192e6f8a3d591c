//! Image pins: the content a service's image reference stands for.
//!
//! A tag names whatever an engine last tagged under it; a node that loads an image from
//! another node, or finds a stale one of its own, could run other content under the
//! same name. So a service's image is pinned, as Swarm pins it to a registry digest,
//! the first time one of its tasks runs: no registry is reachable here, so the pin is
//! the engine's image id (`sha256:` and the digest of the image's config, which `docker
//! save` and `docker load` keep), with a registry digest beside it when the engine knows
//! one. From then on every node checks the image it finds, loads or pulls against the
//! pin before it starts a task ([`crate::agent::images`]).
//!
//! Ownership: the agent reports the id it resolved in its task's status
//! ([`TaskStatus::image_id`](super::TaskStatus::image_id)); the dispatcher's status
//! command ([`Command::UpdateTaskStatus`](super::Command::UpdateTaskStatus)) applies the
//! pin on the leader's behalf when the service has none for its current image
//! ([`pin_from_report`]); a spec change of the image (update, rollback, stack deploy)
//! drops it at apply time, so the new image is pinned again. The pins live beside the
//! services (key `pin/<service id>`), as update statuses do: the control
//! API replaces whole services, and must not clobber the dispatcher's field.

use serde::{Deserialize, Serialize};

use super::service::Service;
use super::task::{Task, TaskState, TaskStatus};
use crate::error::{Error, Result};

/// The longest image reference accepted on the wire (`ImageSave`, `CheckImageGrant`)
/// and in a pin.
pub const MAX_REFERENCE: usize = 512;

/// What a service's image reference is pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePin {
    /// The reference the pin is for (the spec's image when it was pinned): a pin whose
    /// reference is not the spec's image no longer counts.
    pub image: String,
    /// The engine's image id, `sha256:<64 hex>`.
    pub id: String,
    /// A registry digest (`repo@sha256:...`) the engine knew for it; empty if none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo_digest: String,
}

/// True for an engine image id: `sha256:` and 64 lower-case hex digits.
pub fn is_image_id(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// True for a registry digest: `REPO@sha256:<64 hex>`, at most [`MAX_REFERENCE`] bytes.
pub fn is_repo_digest(s: &str) -> bool {
    s.len() <= MAX_REFERENCE
        && s.split_once('@')
            .is_some_and(|(repo, d)| !repo.is_empty() && is_image_id(d))
}

/// Checks an image reference that came over the wire: present, at most
/// [`MAX_REFERENCE`] bytes, printable ASCII without spaces.
pub fn check_reference(image: &str) -> Result<()> {
    if image.is_empty() {
        return Err(Error::InvalidInput("image: a reference is required".into()));
    }
    if image.len() > MAX_REFERENCE {
        return Err(Error::InvalidInput(format!(
            "image: a reference of {} bytes is longer than the {MAX_REFERENCE} allowed",
            image.len()
        )));
    }
    if !image.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidInput(
            "image: a reference is printable ASCII without spaces".into(),
        ));
    }
    Ok(())
}

/// Checks `image` against Docker's reference grammar (`[DOMAIN[:PORT]/]PATH[:TAG][@DIGEST]`,
/// as `docker service create` and `docker stack deploy` do), so that a reference Docker
/// would refuse (an empty tag left by an unset variable, upper case in a repository) is
/// refused at the door, not by every node's engine later. The error is Docker's words
/// and the reason.
pub fn check_docker_reference(image: &str) -> Result<()> {
    check_reference(image)?;
    reference_problem(image).map_or(Ok(()), |why| {
        Err(Error::InvalidInput(format!(
            "image: invalid reference format: {image:?}: {why}"
        )))
    })
}

/// Why `image` is no reference Docker takes ([`check_docker_reference`]), if it is not.
pub fn reference_problem(image: &str) -> Option<&'static str> {
    let bad = Some;
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if digest == Some("") {
        return bad("an empty digest");
    }
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else {
            return bad("a digest is ALGORITHM:HEX");
        };
        let alg_ok = !alg.is_empty()
            && alg.starts_with(|c: char| c.is_ascii_alphabetic())
            && alg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c));
        if !alg_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad("a digest is ALGORITHM:HEX (at least 32 hex digits)");
        }
    }
    // A tag follows the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if tag == Some("") {
        return bad("an empty tag");
    }
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return bad("a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with . or -");
        }
    }
    if name.is_empty() || name.len() > 255 {
        return bad("a repository name is 1 to 255 characters");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    if parts.len() > 1
        && (first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase()))
    {
        let (host, port) = match first.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        let host_ok =
            (host.starts_with('[') && host.ends_with(']')) || host.split('.').all(label_ok);
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !host_ok || !port_ok {
            return bad("a registry is HOST[:PORT]");
        }
        parts.remove(0);
    }
    for c in parts {
        if c.chars().any(|c| c.is_ascii_uppercase()) {
            return bad("repository name must be lowercase");
        }
        if !path_component(c) {
            return bad(
                "each part of a repository name is [a-z0-9] words joined by '.', '_', '__' or '-'",
            );
        }
    }
    None
}

/// `[a-z0-9]+` words joined by one `.`, one or two `_`, or any number of `-`.
fn path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let word = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !word(b[0]) || !word(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if word(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !word(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Clears the image fields of an agent's report that are not well formed (an image id,
/// a registry digest), so that nothing unchecked reaches the store (at the dispatcher's
/// door).
pub fn drop_malformed(status: &mut TaskStatus) {
    if !status.image_id.is_empty() && !is_image_id(&status.image_id) {
        status.image_id.clear();
    }
    if !status.image_digest.is_empty() && !is_repo_digest(&status.image_digest) {
        status.image_digest.clear();
    }
}

/// The pin that `status`, reported by the agent for task `t` of `svc`, sets, if any
/// (pure; applied with the status). A pin is set when the task's container exists
/// (STARTING or later, not rejected), the task runs the service's current image, the
/// report names a well-formed image id, and the service has no pin for that image yet:
/// the first report wins and later ones never move it.
pub fn pin_from_report(
    svc: &Service,
    current: Option<&ImagePin>,
    t: &Task,
    status: &TaskStatus,
) -> Option<ImagePin> {
    let image = &svc.spec.task.container.image;
    let started = status.state >= TaskState::Starting && status.state != TaskState::Rejected;
    if !started || t.spec.container.image != *image || !is_image_id(&status.image_id) {
        return None;
    }
    if current.is_some_and(|p| p.image == *image) {
        return None;
    }
    Some(ImagePin {
        image: image.clone(),
        id: status.image_id.clone(),
        repo_digest: if is_repo_digest(&status.image_digest) {
            status.image_digest.clone()
        } else {
            String::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::service::{ServiceId, ServiceMode, ServiceSpec, TaskSpec};
    use crate::store::{NodeId, TaskId};

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn svc(image: &str) -> Service {
        let mut task = TaskSpec::default();
        task.container.image = image.into();
        let spec = ServiceSpec {
            name: "web".into(),
            labels: Default::default(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task,
            ports: vec![],
            expose: vec![],
            update: Default::default(),
            rollback: Default::default(),
            depends_on: vec![],
            endpoint_mode: Default::default(),
            networks: Default::default(),
        };
        Service {
            id: ServiceId("s1".into()),
            spec,
            previous_spec: None,
            version: 1,
            vip: String::new(),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn task(image: &str) -> Task {
        let mut spec = TaskSpec::default();
        spec.container.image = image.into();
        Task {
            id: TaskId("t1".into()),
            service_id: ServiceId("s1".into()),
            service_name: "web".into(),
            slot: 1,
            node_id: Some(NodeId(1)),
            spec_version: 1,
            spec: spec.into(),
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Preparing, "", 0),
            created_ms: 0,
            vip: String::new(),
            endpoint: None,
        }
    }

    fn report(state: TaskState, id: &str) -> TaskStatus {
        let mut st = TaskStatus::new(state, "", 1);
        st.image_id = id.into();
        st
    }

    #[test]
    fn the_first_started_task_pins_the_image() {
        let s = svc("app:1");
        let t = task("app:1");
        let pin = pin_from_report(&s, None, &t, &report(TaskState::Starting, A));
        assert_eq!(
            pin,
            Some(ImagePin {
                image: "app:1".into(),
                id: A.into(),
                repo_digest: String::new()
            })
        );
        // A registry digest is kept when well formed, dropped when not.
        let mut st = report(TaskState::Running, A);
        st.image_digest = format!("reg.example/app@{A}");
        let pin = pin_from_report(&s, None, &t, &st).expect("pinned");
        assert_eq!(pin.repo_digest, format!("reg.example/app@{A}"));
        st.image_digest = "garbage".into();
        let pin = pin_from_report(&s, None, &t, &st).expect("pinned");
        assert_eq!(pin.repo_digest, "");
    }

    #[test]
    fn a_pin_is_not_moved_nor_set_from_doubtful_reports() {
        let s = svc("app:1");
        let t = task("app:1");
        let pinned = ImagePin {
            image: "app:1".into(),
            id: A.into(),
            repo_digest: String::new(),
        };
        // Already pinned for this image: a different id does not move it.
        assert_eq!(
            pin_from_report(&s, Some(&pinned), &t, &report(TaskState::Running, B)),
            None
        );
        // A pin for another image (the spec changed) is replaced.
        let old = ImagePin {
            image: "app:0".into(),
            ..pinned.clone()
        };
        assert_eq!(
            pin_from_report(&s, Some(&old), &t, &report(TaskState::Running, B)).map(|p| p.id),
            Some(B.to_string())
        );
        // Not started yet, rejected, no id, a malformed id, an old task's image: nothing.
        assert_eq!(
            pin_from_report(&s, None, &t, &report(TaskState::Preparing, A)),
            None
        );
        assert_eq!(
            pin_from_report(&s, None, &t, &report(TaskState::Rejected, A)),
            None
        );
        assert_eq!(
            pin_from_report(&s, None, &t, &report(TaskState::Running, "")),
            None
        );
        assert_eq!(
            pin_from_report(&s, None, &t, &report(TaskState::Running, "sha256:xyz")),
            None
        );
        assert_eq!(
            pin_from_report(&s, None, &task("app:0"), &report(TaskState::Running, A)),
            None
        );
    }

    #[test]
    fn malformed_image_fields_of_a_report_are_dropped() {
        let mut st = report(TaskState::Running, &"x".repeat(3_000_000));
        st.image_digest = format!("repo@{A}");
        drop_malformed(&mut st);
        assert_eq!(
            (st.image_id.as_str(), st.image_digest.as_str()),
            ("", &*format!("repo@{A}"))
        );
        let mut st = report(TaskState::Running, A);
        st.image_digest = format!("{}@{A}", "r".repeat(MAX_REFERENCE));
        drop_malformed(&mut st);
        assert_eq!((st.image_id.as_str(), st.image_digest.as_str()), (A, ""));
    }

    #[test]
    fn references_are_bounded() {
        assert!(check_reference("reg.example:5000/team/app:1.2").is_ok());
        for good in [
            "busybox",
            "orc-test/web:1",
            "reg.example:5000/team/app:1.2",
            "localhost/a_b__c-d.e:latest",
            "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "traefik:v2.10",
            "[::1]:5000/x",
        ] {
            assert!(check_docker_reference(good).is_ok(), "{good}");
        }
        for bad in [
            "owncloud/server:",
            ":8080",
            "owncloud/Server",
            "Busybox",
            "a//b",
            "a/-b",
            "x:1:2",
            "a@sha256:12",
            "reg:port/x",
            "a___b",
        ] {
            let e = check_docker_reference(bad).expect_err(bad).to_string();
            assert!(e.contains("invalid reference format"), "{bad}: {e}");
        }
        assert!(check_reference("").is_err());
        assert!(check_reference("app 1").is_err());
        assert!(check_reference(&"a".repeat(MAX_REFERENCE)).is_ok());
        let e = check_reference(&"a".repeat(MAX_REFERENCE + 1)).expect_err("too long");
        assert!(e.to_string().contains("513 bytes"), "{e}");
        assert!(is_image_id(A) && !is_image_id("sha256:AB") && !is_image_id(&A[7..]));
    }
}
