use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Mutex;

use super::*;
use crate::store::fixtures;

/// Serves the volume at `dir` in-process; the first `breaks` streams break off after
/// `after` chunks. Records the offset of every request.
struct Local {
    dir: PathBuf,
    breaks: Mutex<u32>,
    after: usize,
    offsets: Mutex<Vec<u64>>,
}

impl Local {
    fn new(dir: &Path, breaks: u32, after: usize) -> Local {
        Local {
            dir: dir.to_path_buf(),
            breaks: Mutex::new(breaks),
            after,
            offsets: Mutex::new(vec![]),
        }
    }
}

#[tonic::async_trait]
impl VolumeFetcher for Local {
    async fn fetch(&self, _addr: &str, req: VolumeRequest) -> Result<VolumeStream> {
        self.offsets.lock().unwrap().push(req.offset);
        let expect = (req.offset > 0).then_some(req.fingerprint.clone());
        let s = serve(self.dir.clone(), req.offset, expect).await?;
        let mut breaks = self.breaks.lock().unwrap();
        if *breaks > 0 {
            *breaks -= 1;
            let cut =
                futures::stream::iter(vec![Err(Error::Unavailable("connection reset".into()))]);
            return Ok(s.take(self.after).chain(cut).boxed());
        }
        Ok(s)
    }
}

fn req() -> VolumeRequest {
    VolumeRequest {
        service_id: "id-db".into(),
        slot: 1,
        volume: "pgdata".into(),
        offset: 0,
        fingerprint: String::new(),
    }
}

/// A volume with nested directories, modes, a symlink, an empty file and `big` bytes
/// of a file that deflates poorly.
fn fill(dir: &Path, big: usize) {
    std::fs::create_dir_all(dir.join("base/16384")).unwrap();
    std::fs::write(dir.join("PG_VERSION"), b"16\n").unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    let mut x: u32 = 7;
    let noise: Vec<u8> = (0..big)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("base/16384/rows"), &noise).unwrap();
    std::fs::write(dir.join("base/16384/zeros"), vec![0u8; big]).unwrap();
    std::fs::set_permissions(
        dir.join("PG_VERSION"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(dir.join("base"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("base/16384/rows", dir.join("latest")).unwrap();
    std::os::unix::fs::chown(dir.join("empty"), Some(999), Some(999)).unwrap();
}

/// Every entry under `dir`: path, kind, mode, owner, size, mtime, content hash.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in walk(dir).unwrap() {
        let m = &e.meta;
        let content = if m.is_file() {
            hex::encode(Sha256::digest(std::fs::read(dir.join(&e.rel)).unwrap()))
        } else if m.file_type().is_symlink() {
            std::fs::read_link(dir.join(&e.rel))
                .unwrap()
                .display()
                .to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {} {} {content}",
            e.rel.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.len() },
            if m.file_type().is_symlink() {
                0
            } else {
                m.mtime()
            },
        ));
    }
    out
}

#[tokio::test]
async fn a_volume_arrives_whole_with_modes_owners_times_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fill(&src, 3 * CHUNK + 123);
    std::fs::create_dir_all(&dst).unwrap();
    // Whatever the target held before goes.
    std::fs::write(dst.join("stale"), b"old").unwrap();
    let f = Local::new(&src, 0, 0);
    let p = Arc::new(Progress::default());
    copy_in(&f, "a", req(), &dst, p.clone()).await.unwrap();
    assert_eq!(listing(&dst), listing(&src));
    assert!(!dst.join("stale").exists());
    let want = 3 + 2 * (3 * CHUNK as u64 + 123);
    assert_eq!(p.total.load(Ordering::Relaxed), want);
    assert_eq!(p.done.load(Ordering::Relaxed), want);
    assert_eq!(*f.offsets.lock().unwrap(), vec![0]);
    assert_eq!(
        progress_message("pgdata", "host1", &p),
        "copying volume pgdata from host1 (1.6 MB of 1.6)"
    );
}

async fn chunks_of(dir: &Path) -> Vec<VolumeChunk> {
    serve(dir.to_path_buf(), 0, None)
        .await
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
        .await
}

#[tokio::test]
async fn chunks_are_deflated_when_that_pays_and_the_tar_is_the_same_either_way() {
    let tmp = tempfile::tempdir().unwrap();
    // Zeros: every full chunk deflates.
    let zeros = tmp.path().join("zeros");
    std::fs::create_dir_all(&zeros).unwrap();
    std::fs::write(zeros.join("z"), vec![0u8; 4 * CHUNK]).unwrap();
    let chunks = chunks_of(&zeros).await;
    assert!(chunks.len() >= 4);
    assert!(chunks.iter().all(|c| c.deflated), "zeros deflate");
    // Noise: the first chunk is tried, the next ones go plain.
    let noisy = tmp.path().join("noisy");
    fill(&noisy, 2 * CHUNK);
    let chunks = chunks_of(&noisy).await;
    assert!(chunks.len() >= 3);
    assert!(chunks[1..].iter().all(|c| !c.deflated), "not tried again");
    assert!(chunks.iter().all(|c| c.data.len() <= CHUNK));
    assert!(!chunks[0].fingerprint.is_empty());
    assert!(chunks[1..].iter().all(|c| c.fingerprint.is_empty()));
    for (dir, chunks) in [(&zeros, chunks_of(&zeros).await), (&noisy, chunks)] {
        let tar: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| inflate(c).unwrap())
            .collect();
        let mut plain = vec![];
        write_tar(dir, None, &mut plain).unwrap();
        assert_eq!(tar, plain);
    }
    // A deflated chunk that inflates past the limit is refused.
    let bomb = deflate(vec![0u8; CHUNK + 1]);
    assert!(bomb.deflated);
    assert!(inflate(bomb).is_err());
}

#[tokio::test]
async fn a_broken_copy_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fill(&src, 4 * CHUNK);
    std::fs::create_dir_all(&dst).unwrap();
    let f = Local::new(&src, 2, 3);
    copy_in(&f, "a", req(), &dst, Arc::new(Progress::default()))
        .await
        .unwrap();
    assert_eq!(listing(&dst), listing(&src));
    let offsets = f.offsets.lock().unwrap().clone();
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    assert_eq!(offsets[0], 0);
    assert!(
        offsets[1] > 0 && offsets[2] > offsets[1],
        "each resume goes on from what arrived: {offsets:?}"
    );
    // Past the limit of resumes the copy fails.
    let dst2 = tmp.path().join("dst2");
    std::fs::create_dir_all(&dst2).unwrap();
    let f = Local::new(&src, RESUMES + 1, 1);
    let e = copy_in(&f, "a", req(), &dst2, Arc::new(Progress::default()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("connection reset"), "{e}");
}

#[tokio::test]
async fn a_volume_that_changes_during_a_copy_is_not_stitched_together() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fill(&src, 2 * CHUNK);
    std::fs::create_dir_all(&dst).unwrap();
    // The serving side refuses a resume whose fingerprint is not the volume's now.
    let (fp, _) = manifest(&src).unwrap();
    let _ = serve(src.clone(), 10, Some(fp.clone())).await.unwrap();
    std::fs::write(src.join("PG_VERSION"), b"17\n").unwrap();
    let e = serve(src.clone(), 10, Some(fp)).await.err().unwrap();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    // And the copy then fails rather than mixing two states.
    struct Changing(Local);
    #[tonic::async_trait]
    impl VolumeFetcher for Changing {
        async fn fetch(&self, addr: &str, req: VolumeRequest) -> Result<VolumeStream> {
            if req.offset > 0 {
                std::fs::write(self.0.dir.join("new"), b"x").unwrap();
            }
            self.0.fetch(addr, req).await
        }
    }
    let f = Changing(Local::new(&src, 1, 2));
    let e = copy_in(&f, "a", req(), &dst, Arc::new(Progress::default()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("changed"), "{e}");
}

/// A fetcher that sends a tar written by hand.
struct Hostile(Vec<u8>);

#[tonic::async_trait]
impl VolumeFetcher for Hostile {
    async fn fetch(&self, _addr: &str, _req: VolumeRequest) -> Result<VolumeStream> {
        let chunk = VolumeChunk {
            data: self.0.clone(),
            fingerprint: "f".into(),
            ..Default::default()
        };
        Ok(futures::stream::iter(vec![Ok(chunk)]).boxed())
    }
}

fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &[u8],
    kind: tar::EntryType,
    link: &[u8],
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path);
    h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[tokio::test]
async fn a_hostile_tar_writes_nothing_outside_the_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("vol");
    std::fs::create_dir_all(&dst).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();

    // Positive control: a plain entry of the same hand-made kind lands.
    let mut b = tar::Builder::new(vec![]);
    raw_entry(&mut b, b"ok", tar::EntryType::Regular, b"", b"fine");
    copy_in(
        &Hostile(b.into_inner().unwrap()),
        "a",
        req(),
        &dst,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(dst.join("ok")).unwrap(), b"fine");

    // `..` in a path, an absolute path, a link out then a file through it.
    let mut b = tar::Builder::new(vec![]);
    raw_entry(
        &mut b,
        b"../outside/dotdot",
        tar::EntryType::Regular,
        b"",
        b"x",
    );
    // A device node and a hard link to a file outside are skipped, not made.
    raw_entry(&mut b, b"sda", tar::EntryType::Block, b"", b"");
    raw_entry(
        &mut b,
        b"passwd",
        tar::EntryType::Link,
        victim.display().to_string().as_bytes(),
        b"",
    );
    raw_entry(
        &mut b,
        format!("{}/abs", outside.display()).as_bytes(),
        tar::EntryType::Regular,
        b"",
        b"x",
    );
    raw_entry(
        &mut b,
        b"out",
        tar::EntryType::Symlink,
        outside.display().to_string().as_bytes(),
        b"",
    );
    raw_entry(&mut b, b"out/through", tar::EntryType::Regular, b"", b"x");
    let r = copy_in(
        &Hostile(b.into_inner().unwrap()),
        "a",
        req(),
        &dst,
        Arc::new(Progress::default()),
    )
    .await;
    assert!(r.is_err(), "the write through the link is refused");
    assert!(!dst.join("sda").exists() && !dst.join("passwd").exists());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was written outside"
    );
}

#[test]
fn names_are_docker_volume_names_never_paths() {
    for ok in ["pgdata", "stack_pgdata", "a.b-c_1"] {
        check_name(ok).unwrap();
    }
    let long = "a".repeat(MAX_NAME + 1);
    for bad in [
        "",
        "../etc",
        "a/b",
        "/abs",
        ".hidden",
        "-x",
        "a b",
        long.as_str(),
    ] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

/// Node 1 holds slot 1 of `db` (its volume `pgdata` follows); node 2 has the slot's
/// new task to start; node 3 has nothing.
fn granting() -> State {
    use crate::store::volume::VolumeHome;
    let mut s = State {
        cluster: Some(fixtures::cluster()),
        ..Default::default()
    };
    for id in 1..=3 {
        let mut n = fixtures::node(id);
        n.status = crate::store::NodeStatus::Ready;
        s.nodes.insert(n.id, n);
    }
    s.nodes.get_mut(&NodeId(1)).unwrap().availability = crate::store::Availability::Drain;
    let mut svc = fixtures::service("db", 1);
    svc.spec.task.container.mounts =
        vec![crate::store::service::Mount::following("pgdata", "/data")];
    let mut t = fixtures::task("t2", &svc, 1);
    t.spec = svc.spec.task.clone().into();
    t.node_id = Some(NodeId(2));
    t.status = crate::store::TaskStatus::new(TaskState::Preparing, "", 1);
    s.volume_homes.insert(
        (svc.id.clone(), 1),
        VolumeHome {
            service_id: svc.id.clone(),
            slot: 1,
            node: NodeId(1),
            task: crate::store::TaskId("t1".into()),
            generation: 0,
            stale: vec![],
            since_ms: 0,
        },
    );
    s.tasks.insert(t.id.clone(), t);
    s.services.insert(svc.id.clone(), svc);
    s
}

#[test]
fn only_the_node_taking_the_slot_over_gets_the_volume_from_its_holder() {
    let s = granting();
    let db = ServiceId("id-db".into());
    let g = |req: u64, holder: u64, slot: u64, vol: &str| {
        grant(&s, NodeId(req), NodeId(holder), &db, slot, vol)
    };
    // Positive control.
    g(2, 1, 1, "pgdata").unwrap();
    // Another node, another holder, another slot, another volume, a stranger.
    assert!(g(3, 1, 1, "pgdata").unwrap_err().contains("no task"));
    assert!(g(2, 3, 1, "pgdata").unwrap_err().contains("not on node"));
    assert!(g(2, 1, 2, "pgdata").is_err());
    assert!(g(2, 1, 1, "other")
        .unwrap_err()
        .contains("no following volume"));
    assert!(g(9, 1, 1, "pgdata")
        .unwrap_err()
        .contains("not part of the cluster"));
    // Once the task's container exists, no more copies.
    let mut started = s.clone();
    started
        .tasks
        .update_all(|t| t.status.state = TaskState::Running);
    assert!(grant(&started, NodeId(2), NodeId(1), &db, 1, "pgdata").is_err());
    // The dispatcher's side says the same.
    let t = s.tasks.values().next().unwrap();
    let src = source_for(&s, t, NodeId(2)).unwrap();
    assert_eq!(
        (src.node, src.addr.as_str(), src.volumes.clone()),
        (NodeId(1), "10.0.0.1:4242", vec!["pgdata".to_string()])
    );
    assert!(source_for(&started, started.tasks.values().next().unwrap(), NodeId(2)).is_none());
}
