//! A `docker save` tar from another node, made safe to `docker load`.
//!
//! `docker load` applies every tag the tar names (`RepoTags` in its `manifest.json`, and
//! the legacy `repositories` file): a node sending the image asked for could retag any
//! other reference of this engine (`postgres:15` → content of its choosing) in the same
//! tar. The id check after the load ([`super::images::load`]) protects the task being
//! prepared and every pinned service, not the references it did not ask for. So the tar
//! passes through [`untagged`] as it streams: it keeps the entries of one saved image
//! only and drops every tag, and the runner tags the image itself once its id is
//! checked.
//!
//! Only the layout `docker save` writes is accepted, entry by entry, in plain ustar
//! headers (checked against Docker 20.10's output):
//!
//! | entry | kind |
//! |---|---|
//! | `<64 hex>/` | directory (a layer) |
//! | `<64 hex>/VERSION`, `<64 hex>/json`, `<64 hex>/layer.tar` | file |
//! | `<64 hex>/layer.tar` → `../<64 hex>/layer.tar` | symbolic link (a layer saved twice) |
//! | `<64 hex>.json` | file (the image config) |
//! | `manifest.json` | file, at most [`MAX_MANIFEST`] bytes, one image: rewritten without `RepoTags` |
//! | `repositories` | file: dropped |
//!
//! Anything else (other names, `..`, PAX or GNU extension headers, hard links, devices)
//! ends the stream with an error, so `docker load` loads nothing. The first all-zero
//! block ends the parsing; what follows is passed as it is (the end of the archive).

use futures::StreamExt;

use super::executor::{Bytes, ImageStream};
use crate::error::Error;

/// The largest `manifest.json` accepted (one image's is a few hundred bytes).
pub const MAX_MANIFEST: usize = 1024 * 1024;

const BLOCK: usize = 512;

/// `tar` as it streams, with its tags removed and anything but one saved image refused
/// (see the module doc). `from` names the sender in errors.
pub fn untagged(tar: ImageStream, from: &str) -> ImageStream {
    let from = from.to_string();
    let state = (tar, Untagger::default(), false);
    futures::stream::unfold(state, move |(mut tar, mut u, done)| {
        let from = from.clone();
        async move {
            if done {
                return None;
            }
            loop {
                match tar.next().await {
                    Some(Ok(chunk)) => match u.push(&chunk) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Some((Ok(Bytes::from(out)), (tar, u, false))),
                        Err(e) => return Some((Err(bad(&from, e)), (tar, u, true))),
                    },
                    Some(Err(e)) => return Some((Err(e), (tar, u, true))),
                    None => {
                        let out = u.finish();
                        return if out.is_empty() {
                            None
                        } else {
                            Some((Ok(Bytes::from(out)), (tar, u, true)))
                        };
                    }
                }
            }
        }
    })
    .boxed()
}

fn bad(from: &str, why: String) -> Error {
    Error::InvalidInput(format!(
        "the image {from} sent is not a plain `docker save` tar: {why}"
    ))
}

/// Where the parser stands.
#[derive(Default)]
enum State {
    /// At an entry's header.
    #[default]
    Header,
    /// Passing this many bytes of an entry (its body and padding).
    Pass(u64),
    /// Dropping this many bytes.
    Skip(u64),
    /// Reading `manifest.json`: its header, its size and its padded size.
    Manifest {
        header: Box<[u8; BLOCK]>,
        size: usize,
        padded: usize,
        body: Vec<u8>,
    },
    /// After the first zero block: everything passes.
    Trailer,
}

/// The streaming rewriter behind [`untagged`].
#[derive(Default)]
struct Untagger {
    pending: Vec<u8>,
    state: State,
}

impl Untagger {
    /// Takes a chunk; returns the bytes ready to go on. One loop over the tar's state
    /// machine, each arm a state of [`State`]; what a header block leads to is decided
    /// apart ([`after_header`]). The other arms stay here: cut apart, they would share
    /// `pending`, `out` and `at` through arguments.
    fn push(&mut self, chunk: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut at = 0;
        loop {
            let avail = self.pending.len() - at;
            match &mut self.state {
                State::Trailer => {
                    out.extend_from_slice(&self.pending[at..]);
                    at = self.pending.len();
                    break;
                }
                State::Pass(n) | State::Skip(n) => {
                    if avail == 0 {
                        break;
                    }
                    let take = (*n).min(avail as u64) as usize;
                    *n -= take as u64;
                    let left = *n;
                    if matches!(self.state, State::Pass(_)) {
                        out.extend_from_slice(&self.pending[at..at + take]);
                    }
                    at += take;
                    if left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Manifest {
                    header,
                    size,
                    padded,
                    body,
                } => {
                    let take = (*padded - body.len()).min(avail);
                    body.extend_from_slice(&self.pending[at..at + take]);
                    at += take;
                    if body.len() < *padded {
                        break;
                    }
                    body.truncate(*size);
                    let manifest = strip_tags(body)?;
                    let mut h = **header;
                    set_size(&mut h, manifest.len());
                    out.extend_from_slice(&h);
                    out.extend_from_slice(&manifest);
                    out.resize(out.len() + pad(manifest.len() as u64) as usize, 0);
                    self.state = State::Header;
                }
                State::Header => {
                    if avail < BLOCK {
                        break;
                    }
                    let block: [u8; BLOCK] =
                        self.pending[at..at + BLOCK].try_into().expect("a block");
                    at += BLOCK;
                    self.state = after_header(block, &mut out)?;
                }
            }
        }
        self.pending.drain(..at);
        Ok(out)
    }

    /// The end of the input: what is left (a truncated tar stays truncated, and
    /// `docker load` refuses it).
    fn finish(&mut self) -> Vec<u8> {
        match self.state {
            State::Trailer | State::Pass(_) => std::mem::take(&mut self.pending),
            _ => vec![],
        }
    }
}

/// The state after a header block, whose header goes to `out` when its entry passes:
/// the trailer (a zero block), an entry to pass or drop, or the manifest to rewrite.
fn after_header(block: [u8; BLOCK], out: &mut Vec<u8>) -> std::result::Result<State, String> {
    if block.iter().all(|b| *b == 0) {
        out.extend_from_slice(&block);
        return Ok(State::Trailer);
    }
    let entry = Entry::parse(&block)?;
    let padded = entry.size + pad(entry.size);
    Ok(match entry.action()? {
        Action::Pass => {
            out.extend_from_slice(&block);
            if padded == 0 {
                State::Header
            } else {
                State::Pass(padded)
            }
        }
        Action::Drop => {
            if padded == 0 {
                State::Header
            } else {
                State::Skip(padded)
            }
        }
        Action::Rewrite => {
            if entry.size > MAX_MANIFEST as u64 {
                return Err(format!(
                    "manifest.json of {} bytes (at most {MAX_MANIFEST})",
                    entry.size
                ));
            }
            State::Manifest {
                header: Box::new(block),
                size: entry.size as usize,
                padded: padded as usize,
                body: Vec::new(),
            }
        }
    })
}

/// Zero bytes after a body of `size` up to the next block.
fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// One header, as far as the check needs it.
struct Entry {
    name: String,
    link: String,
    kind: u8,
    size: u64,
}

/// What happens to an entry.
enum Action {
    Pass,
    Drop,
    Rewrite,
}

fn field(b: &[u8]) -> std::result::Result<String, String> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8(b[..end].to_vec()).map_err(|_| "a name that is not UTF-8".to_string())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Entry {
    fn parse(h: &[u8; BLOCK]) -> std::result::Result<Entry, String> {
        if &h[257..262] != b"ustar" {
            return Err("a header that is not ustar".into());
        }
        if h[345..500].iter().any(|b| *b != 0) {
            return Err("a name with a ustar prefix".into());
        }
        let size_field = &h[124..136];
        if size_field[0] & 0x80 != 0 {
            return Err("an entry of 8 GiB or more".into());
        }
        let size_text = field(size_field)?;
        let size_text = size_text.trim_matches(|c: char| c == ' ' || c == '\0');
        let size = if size_text.is_empty() {
            0
        } else {
            u64::from_str_radix(size_text, 8).map_err(|_| format!("a size of {size_text:?}"))?
        };
        Ok(Entry {
            name: field(&h[0..100])?,
            link: field(&h[157..257])?,
            kind: h[156],
            size,
        })
    }

    /// Checks the entry against the layout of `docker save` (module doc).
    fn action(&self) -> std::result::Result<Action, String> {
        let name = self.name.as_str();
        let refused = || Err(format!("entry {name:?} (type {:?})", self.kind as char));
        match self.kind {
            b'5' => {
                let dir = name.strip_suffix('/').unwrap_or(name);
                if is_hex64(dir) {
                    Ok(Action::Pass)
                } else {
                    refused()
                }
            }
            b'0' | 0 => match name {
                "manifest.json" => Ok(Action::Rewrite),
                "repositories" => Ok(Action::Drop),
                _ => {
                    let layer_file = name.split_once('/').is_some_and(|(dir, file)| {
                        is_hex64(dir) && matches!(file, "VERSION" | "json" | "layer.tar")
                    });
                    let config = name.strip_suffix(".json").is_some_and(is_hex64);
                    if layer_file || config {
                        Ok(Action::Pass)
                    } else {
                        refused()
                    }
                }
            },
            b'2' => {
                let ok = name.strip_suffix("/layer.tar").is_some_and(is_hex64)
                    && self
                        .link
                        .strip_prefix("../")
                        .and_then(|l| l.strip_suffix("/layer.tar"))
                        .is_some_and(is_hex64)
                    && self.size == 0;
                if ok {
                    Ok(Action::Pass)
                } else {
                    refused()
                }
            }
            _ => refused(),
        }
    }
}

/// `manifest.json` of one image, without its tags.
fn strip_tags(body: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("manifest.json: {e}"))?;
    let Some([image]) = v.as_array_mut().map(|a| a.as_mut_slice()) else {
        return Err("manifest.json names other than one image".into());
    };
    let Some(obj) = image.as_object_mut() else {
        return Err("manifest.json: an entry that is not an object".into());
    };
    obj.insert("RepoTags".into(), serde_json::Value::Null);
    let mut out = serde_json::to_vec(&v).map_err(|e| format!("manifest.json: {e}"))?;
    out.push(b'\n');
    Ok(out)
}

/// Writes `size` into a ustar header and recomputes its checksum.
fn set_size(h: &mut [u8; BLOCK], size: usize) {
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;

    const L: &str = "83e406d245de9f705b6de4cdccf5e6179be73de2852285b7aa91b68833eb7585";
    const C: &str = "8fe9324adef6e403acfba512ba86317738374fde941ec2d8c0ce4beeb995f38d";

    /// A ustar header as Go's archive/tar writes one.
    fn header(name: &str, kind: u8, size: usize, link: &str) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[156] = kind;
        h[257..265].copy_from_slice(b"ustar\x0000");
        set_size(&mut h, size);
        h
    }

    fn entry(tar: &mut Vec<u8>, name: &str, kind: u8, body: &[u8], link: &str) {
        tar.extend_from_slice(&header(name, kind, body.len(), link));
        tar.extend_from_slice(body);
        tar.resize(tar.len() + pad(body.len() as u64) as usize, 0);
    }

    fn image_tar(manifest: &str, extra: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut t = vec![];
        entry(&mut t, &format!("{L}/"), b'5', b"", "");
        entry(&mut t, &format!("{L}/VERSION"), b'0', b"1.0", "");
        entry(&mut t, &format!("{L}/json"), b'0', b"{}", "");
        entry(&mut t, &format!("{L}/layer.tar"), b'0', &[7u8; 3000], "");
        entry(&mut t, &format!("{C}.json"), b'0', b"{\"config\":{}}", "");
        extra(&mut t);
        entry(&mut t, "manifest.json", b'0', manifest.as_bytes(), "");
        entry(
            &mut t,
            "repositories",
            b'0',
            b"{\"evil\":{\"1\":\"x\"}}",
            "",
        );
        t.extend_from_slice(&[0u8; 2 * BLOCK]);
        t
    }

    /// Runs the rewriter over `tar` cut into chunks of `step` bytes.
    fn run(tar: &[u8], step: usize) -> std::result::Result<Vec<u8>, String> {
        let mut u = Untagger::default();
        let mut out = vec![];
        for c in tar.chunks(step) {
            out.extend(u.push(c)?);
        }
        out.extend(u.finish());
        Ok(out)
    }

    /// The entries of a tar: (name, type, body).
    fn entries(tar: &[u8]) -> Vec<(String, u8, Vec<u8>)> {
        let mut out = vec![];
        let mut at = 0;
        while at + BLOCK <= tar.len() {
            let h: &[u8; BLOCK] = tar[at..at + BLOCK].try_into().unwrap();
            if h.iter().all(|b| *b == 0) {
                break;
            }
            let e = Entry::parse(h).unwrap();
            // The checksum is right.
            let mut c = *h;
            c[148..156].fill(b' ');
            let sum: u32 = c.iter().map(|b| u32::from(*b)).sum();
            assert_eq!(
                field(&h[148..154]).unwrap(),
                format!("{sum:06o}"),
                "{}",
                e.name
            );
            let body = tar[at + BLOCK..at + BLOCK + e.size as usize].to_vec();
            at += BLOCK + (e.size + pad(e.size)) as usize;
            out.push((e.name, e.kind, body));
        }
        out
    }

    #[test]
    fn tags_are_dropped_and_the_rest_passes_in_any_chunking() {
        let manifest = format!(
            "[{{\"Config\":\"{C}.json\",\"RepoTags\":[\"orc-test/busybox:1\",\"postgres:15\"],\
             \"Layers\":[\"{L}/layer.tar\"]}}]\n"
        );
        let tar = image_tar(&manifest, |_| {});
        let whole = run(&tar, tar.len()).unwrap();
        for step in [1, 7, 511, 512, 513, 4096] {
            assert_eq!(run(&tar, step).unwrap(), whole, "chunks of {step}");
        }
        let got = entries(&whole);
        let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        let layer_dir = format!("{L}/");
        let layer_version = format!("{L}/VERSION");
        let layer_json = format!("{L}/json");
        let layer_tar = format!("{L}/layer.tar");
        let config = format!("{C}.json");
        assert_eq!(
            names,
            [
                layer_dir.as_str(),
                &layer_version,
                &layer_json,
                &layer_tar,
                &config,
                "manifest.json"
            ],
            "repositories dropped"
        );
        assert_eq!(got[3].2, vec![7u8; 3000], "a layer passes as it is");
        let m: serde_json::Value = serde_json::from_slice(&got[5].2).unwrap();
        assert_eq!(m[0]["RepoTags"], serde_json::Value::Null);
        assert_eq!(m[0]["Config"], format!("{C}.json"));
        assert_eq!(m[0]["Layers"][0], format!("{L}/layer.tar"));
        // The end of the archive follows.
        assert!(whole.ends_with(&[0u8; 2 * BLOCK]));
        assert_eq!(whole.len() % BLOCK, 0);
    }

    #[test]
    fn a_tar_saved_by_id_and_a_layer_saved_twice_pass() {
        let manifest = format!(
            "[{{\"Config\":\"{C}.json\",\"RepoTags\":null,\"Layers\":[\"{L}/layer.tar\"]}}]\n"
        );
        let tar = image_tar(&manifest, |t| {
            let other = "a".repeat(64);
            entry(t, &format!("{other}/"), b'5', b"", "");
            entry(
                t,
                &format!("{other}/layer.tar"),
                b'2',
                b"",
                &format!("../{L}/layer.tar"),
            );
        });
        let got = entries(&run(&tar, 1000).unwrap());
        assert_eq!(got.len(), 8);
        assert_eq!(got[6].1, b'2');
    }

    #[test]
    fn anything_but_one_saved_image_is_refused() {
        let one = format!("[{{\"Config\":\"{C}.json\",\"RepoTags\":[\"a:1\"],\"Layers\":[]}}]");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                image_tar(&format!("[{0},{0}]", &one[1..one.len() - 1]), |_| {}),
                "other than one image",
            ),
            (image_tar("not json", |_| {}), "manifest.json"),
            (
                image_tar(&one, |t| entry(t, "x/../manifest.json", b'0', b"[]", "")),
                "x/../manifest.json",
            ),
            (
                image_tar(&one, |t| entry(t, "etc/passwd", b'0', b"x", "")),
                "etc/passwd",
            ),
            (
                image_tar(&one, |t| {
                    entry(t, &format!("{L}/layer.tar"), b'2', b"", "/etc/shadow")
                }),
                "layer.tar",
            ),
            (
                image_tar(&one, |t| entry(t, "manifest.json", b'1', b"", "other")),
                "type '1'",
            ),
            (
                image_tar(&one, |t| {
                    entry(t, "PaxHeaders/x", b'x', b"30 path=manifest.json\n", "")
                }),
                "type 'x'",
            ),
        ];
        for (tar, why) in cases {
            let e = run(&tar, 700).expect_err(why);
            assert!(e.contains(why), "{e} (wanted {why:?})");
        }
        // Control: the same image, well formed.
        assert!(run(&image_tar(&one, |_| {}), 700).is_ok());
        // A huge manifest is refused before it is held.
        let mut t = vec![];
        t.extend_from_slice(&header("manifest.json", b'0', MAX_MANIFEST + 1, ""));
        let e = run(&t, 512).expect_err("huge");
        assert!(e.contains("at most"), "{e}");
    }

    #[tokio::test]
    async fn the_stream_ends_with_an_error_naming_the_sender() {
        let tar = image_tar("[]", |_| {});
        let chunks: Vec<Result<Bytes>> = tar
            .chunks(1000)
            .map(|c| Ok(Bytes::from(c.to_vec())))
            .collect();
        let out: Vec<Result<Bytes>> = untagged(futures::stream::iter(chunks).boxed(), "host2")
            .collect()
            .await;
        let err = out
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("an error")
            .to_string();
        assert!(
            err.starts_with("the image host2 sent is not a plain `docker save` tar: "),
            "{err}"
        );
        assert!(out.last().expect("items").is_err(), "the error ends it");
    }
}
