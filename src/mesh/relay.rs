//! Moving bytes between a client and a backend once the mesh has paired them.
//!
//! Each direction is its own loop; both run in the connection's task until both have
//! ended. When one side sends its FIN, the loop reading it shuts down the write side of
//! the other (so the other sees the FIN too) and the opposite direction goes on until
//! its own FIN: half-closed connections work as they would without the mesh.
//!
//! A direction starts by copying: `read` into a buffer of [`BUF`] bytes, `write` it all
//! out. Once a read brings at least [`BULK`] bytes, the data is flowing in bulk and, on
//! Linux, the direction switches to `splice(2)`: a pipe of its own ([`PIPE`] bytes,
//! larger than the kernel's default 64 KiB) receives the socket's pages and hands them
//! to the other socket, so the payload never enters user space (two system calls per
//! pipe-full, no copy). A splice that brings less than [`BULK`] switches back to
//! copying. Small request/response exchanges thus cost no pipe (nor its two
//! descriptors), and a pipe is only made for connections that carry bulk data. Each
//! step ends with the buffer or the pipe empty, so switching never reorders bytes. A
//! direction whose pipe cannot be made (out of descriptors) or whose sockets the kernel
//! refuses to splice keeps copying.
//!
//! Readiness comes from tokio's reactor: each call is made in `async_io`, where a call
//! that would block clears the readiness and waits for the next. Both directions use
//! the sockets through shared references, so one task drives both.

use std::io;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Buffer size of each direction when bytes are copied through user space.
pub const BUF: usize = 64 * 1024;

/// A read or splice of at least this many bytes means bulk data: the next step splices.
pub const BULK: usize = 16 * 1024;

/// Size asked for each direction's pipe when splicing (if the kernel refuses it, the
/// pipe keeps its default, 64 KiB).
pub const PIPE: usize = 1024 * 1024;

/// Copies both ways until both sides have closed; returns the bytes sent each way
/// (client → backend, backend → client).
pub async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
) -> std::io::Result<(u64, u64)> {
    let (up, down) = relay_with(client, upstream, Method::Splice).await?;
    Ok((up.total, down.total))
}

/// How a direction may move its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// Copy small reads, splice bulk data where the system can.
    Splice,
    /// Always `read` and `write` through a buffer (tests compare the two).
    #[cfg_attr(not(test), allow(dead_code))]
    Copy,
}

/// What one direction moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Moved {
    /// Bytes in all.
    total: u64,
    /// Of which spliced.
    spliced: u64,
}

async fn relay_with(
    client: &TcpStream,
    upstream: &TcpStream,
    method: Method,
) -> io::Result<(Moved, Moved)> {
    tokio::try_join!(
        one_way(client, upstream, method),
        one_way(upstream, client, method)
    )
}

/// Moves `src`'s bytes to `dst` until `src`'s FIN, then shuts down `dst`'s write side.
async fn one_way(src: &TcpStream, dst: &TcpStream, method: Method) -> io::Result<Moved> {
    let mut buf = vec![0u8; BUF];
    let mut moved = Moved::default();
    let mut pipe: Option<splice::Pipe> = None;
    let mut may_splice = method == Method::Splice;
    let mut bulk = false;
    loop {
        if bulk && may_splice {
            if pipe.is_none() {
                match splice::Pipe::new(PIPE) {
                    Ok(p) => pipe = Some(p),
                    Err(e) => {
                        tracing::debug!("mesh relay: no pipe ({e}); copying");
                        may_splice = false;
                        continue;
                    }
                }
            }
            let p = pipe.as_ref().expect("pipe just made");
            match p.transfer(src, dst).await? {
                None => {
                    tracing::debug!("mesh relay: splice refused; copying");
                    may_splice = false;
                }
                Some(0) => break,
                Some(n) => {
                    moved.total += n as u64;
                    moved.spliced += n as u64;
                    bulk = n >= BULK;
                }
            }
            continue;
        }
        let n = copy_once(src, dst, &mut buf).await?;
        if n == 0 {
            break;
        }
        moved.total += n as u64;
        bulk = n >= BULK;
    }
    match socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write) {
        // the peer is gone already: nothing left to tell it
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
        r => r?,
    }
    Ok(moved)
}

/// One `read` from `src` into `buf`, all of it written to `dst`: the bytes, 0 at FIN.
async fn copy_once(src: &TcpStream, dst: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let n = src
        .async_io(Interest::READABLE, || src.try_read(buf))
        .await?;
    let mut done = 0;
    while done < n {
        let m = dst
            .async_io(Interest::WRITABLE, || dst.try_write(&buf[done..n]))
            .await?;
        if m == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += m;
    }
    Ok(n)
}

/// Elsewhere than Linux: no pipe, so every direction copies.
#[cfg(not(target_os = "linux"))]
mod splice {
    use std::io;

    use tokio::net::TcpStream;

    pub(super) struct Pipe;

    impl Pipe {
        pub(super) fn new(_size: usize) -> io::Result<Pipe> {
            Err(io::ErrorKind::Unsupported.into())
        }

        pub(super) async fn transfer(
            &self,
            _src: &TcpStream,
            _dst: &TcpStream,
        ) -> io::Result<Option<usize>> {
            Ok(None)
        }
    }
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// One direction's pipe: pages go from the source socket into it, and from it into
    /// the destination socket. It is empty between transfers.
    pub(super) struct Pipe {
        r: OwnedFd,
        w: OwnedFd,
        /// Bytes the pipe holds when full.
        size: usize,
    }

    impl Pipe {
        /// A non-blocking pipe of `size` bytes if the kernel allows it, else its default.
        pub(super) fn new(size: usize) -> io::Result<Pipe> {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: pipe2 writes two descriptors into the array it is given.
            let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: both descriptors were just opened and nothing else owns them.
            let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
            // SAFETY: fcntl on a descriptor we own; a refusal leaves the pipe as it was.
            let mut got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
            if got <= 0 {
                // SAFETY: as above.
                got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
            }
            let size = usize::try_from(got)
                .ok()
                .filter(|&s| s > 0)
                .unwrap_or(64 * 1024);
            Ok(Pipe { r, w, size })
        }

        /// Bytes the pipe holds when full.
        #[cfg(test)]
        pub(super) fn size(&self) -> usize {
            self.size
        }

        /// Moves what `src` has received, up to a pipe-full, into `dst`: the bytes moved
        /// (0 at `src`'s FIN), or `None` when the kernel refuses to splice `src` (the
        /// pipe is still empty then, so the caller may copy instead).
        pub(super) async fn transfer(
            &self,
            src: &TcpStream,
            dst: &TcpStream,
        ) -> io::Result<Option<usize>> {
            // Fill: the pipe is empty, so "would block" can only mean that `src` has
            // nothing yet.
            let r = src
                .async_io(Interest::READABLE, || {
                    splice(src.as_raw_fd(), self.w.as_raw_fd(), self.size)
                })
                .await;
            let n = match r {
                Ok(n) => n,
                Err(e) if refused(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            // Drain: all of it into the other socket; "would block" means `dst` is full.
            let mut left = n;
            while left > 0 {
                let m = dst
                    .async_io(Interest::WRITABLE, || {
                        splice(self.r.as_raw_fd(), dst.as_raw_fd(), left)
                    })
                    .await?;
                if m == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                left -= m;
            }
            Ok(Some(n))
        }
    }

    /// Errors that say this kind of descriptor cannot be spliced.
    fn refused(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
        )
    }

    /// One non-blocking `splice(2)` of at most `len` bytes; `WouldBlock` when the source
    /// has nothing or the destination has no room.
    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        loop {
            // SAFETY: both descriptors are open for the duration of the call (owned by
            // the caller's sockets and pipe); null offsets mean "the current position".
            let n = unsafe {
                libc::splice(
                    from,
                    std::ptr::null_mut(),
                    to,
                    std::ptr::null_mut(),
                    len,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair through the relay: (client end, backend end, the relay's task).
    async fn through_relay(
        method: Method,
    ) -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<io::Result<(Moved, Moved)>>,
    ) {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (fa, ba) = (front.local_addr().unwrap(), back.local_addr().unwrap());
        let relay = tokio::spawn(async move {
            let (c, _) = front.accept().await.unwrap();
            let u = TcpStream::connect(ba).await.unwrap();
            relay_with(&c, &u, method).await
        });
        let client = TcpStream::connect(fa).await.unwrap();
        let (backend, _) = back.accept().await.unwrap();
        (client, backend, relay)
    }

    /// Deterministic bytes that differ from one chunk to the next.
    fn chunk(seed: u64, i: u64, len: usize) -> Vec<u8> {
        let mut x = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Writes `chunks` chunks of odd sizes, then shuts down: the digest and byte count.
    async fn send(
        mut w: tokio::net::tcp::OwnedWriteHalf,
        seed: u64,
        chunks: u64,
    ) -> (Vec<u8>, u64) {
        let mut h = Sha256::new();
        let mut n = 0u64;
        for i in 0..chunks {
            let c = chunk(seed, i, 1 + (i as usize * 7919) % 200_000);
            h.update(&c);
            n += c.len() as u64;
            w.write_all(&c).await.unwrap();
        }
        w.shutdown().await.unwrap();
        (h.finalize().to_vec(), n)
    }

    /// Reads until EOF: the digest and byte count.
    async fn receive(mut r: tokio::net::tcp::OwnedReadHalf) -> (Vec<u8>, u64) {
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 100_000];
        loop {
            let k = r.read(&mut buf).await.unwrap();
            if k == 0 {
                return (h.finalize().to_vec(), n);
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
    }

    /// Fails a test that hangs (a lost FIN, a lost byte) instead of waiting forever.
    async fn in_time(f: impl std::future::Future<Output = ()>) {
        in_time_value(f).await
    }

    async fn large_both_ways(method: Method) {
        let (client, backend, relay) = through_relay(method).await;
        let (cr, cw) = client.into_split();
        let (br, bw) = backend.into_split();
        // tens of MiB each way at the same time, in chunks of odd sizes
        let up = tokio::spawn(send(cw, 1, 640));
        let down = tokio::spawn(send(bw, 2, 400));
        let got_up = tokio::spawn(receive(br));
        let got_down = tokio::spawn(receive(cr));
        let (up, down) = (up.await.unwrap(), down.await.unwrap());
        assert_eq!(got_up.await.unwrap(), up, "client → backend differs");
        assert_eq!(got_down.await.unwrap(), down, "backend → client differs");
        let (m_up, m_down) = relay.await.unwrap().unwrap();
        assert_eq!((m_up.total, m_down.total), (up.1, down.1));
        assert!(
            up.1 > 32 << 20 && down.1 > 16 << 20,
            "sizes {up:?} {down:?}"
        );
        if method == Method::Copy || cfg!(not(target_os = "linux")) {
            assert_eq!((m_up.spliced, m_down.spliced), (0, 0));
        } else {
            // bulk data is spliced, most of it
            assert!(
                m_up.spliced > m_up.total / 2 && m_down.spliced > m_down.total / 2,
                "spliced {m_up:?} {m_down:?}"
            );
        }
    }

    #[tokio::test]
    async fn large_transfers_both_ways_arrive_intact_spliced() {
        in_time(large_both_ways(Method::Splice)).await;
    }

    #[tokio::test]
    async fn large_transfers_both_ways_arrive_intact_copied() {
        in_time(large_both_ways(Method::Copy)).await;
    }

    async fn half_close(method: Method) {
        let (mut client, mut backend, relay) = through_relay(method).await;
        // The client sends a request and its FIN; the backend sees both, then answers
        // at length (long after the FIN) and closes.
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut req = vec![];
        backend.read_to_end(&mut req).await.unwrap();
        assert_eq!(req, b"request");
        let answer = chunk(3, 0, 3 << 20);
        backend.write_all(&answer).await.unwrap();
        backend.shutdown().await.unwrap();
        let mut got = vec![];
        client.read_to_end(&mut got).await.unwrap();
        assert!(got == answer, "the answer after the client's FIN differs");
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up.total, down.total), (7, 3 << 20));

        // The other way round: the backend closes first, the client goes on sending.
        let (mut client, mut backend, relay) = through_relay(method).await;
        backend.write_all(b"banner").await.unwrap();
        backend.shutdown().await.unwrap();
        let mut banner = vec![];
        client.read_to_end(&mut banner).await.unwrap();
        assert_eq!(banner, b"banner");
        let upload = chunk(4, 0, 2 << 20);
        client.write_all(&upload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = vec![];
        backend.read_to_end(&mut got).await.unwrap();
        assert!(got == upload, "the upload after the backend's FIN differs");
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up.total, down.total), (2 << 20, 6));
    }

    #[tokio::test]
    async fn a_fin_is_passed_on_and_the_other_way_goes_on_spliced() {
        in_time(half_close(Method::Splice)).await;
    }

    #[tokio::test]
    async fn a_fin_is_passed_on_and_the_other_way_goes_on_copied() {
        in_time(half_close(Method::Copy)).await;
    }

    #[tokio::test]
    async fn small_exchanges_are_not_held_back() {
        in_time(small_exchanges()).await;
    }

    async fn small_exchanges() {
        // request/response over one connection: each answer must come without the
        // next request (nothing waits for a buffer to fill)
        let (mut client, mut backend, relay) = through_relay(Method::Splice).await;
        let echo = tokio::spawn(async move {
            let mut b = [0u8; 32];
            while backend.read_exact(&mut b).await.is_ok() {
                backend.write_all(&b).await.unwrap();
            }
        });
        for i in 0..200u8 {
            let req = [i; 32];
            client.write_all(&req).await.unwrap();
            let mut ans = [0u8; 32];
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                client.read_exact(&mut ans),
            )
            .await
            .expect("answer in time")
            .unwrap();
            assert_eq!(ans, req);
        }
        client.shutdown().await.unwrap();
        echo.await.unwrap();
        drop(client);
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up.total, down.total), (200 * 32, 200 * 32));
        // small exchanges are copied: no pipe is made for them
        assert_eq!((up.spliced, down.spliced), (0, 0));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn sockets_are_spliced_through_a_larger_pipe() {
        // the fast path is really taken: no fallback to copying
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l2.local_addr().unwrap()).await.unwrap();
        let (mut d, _) = l2.accept().await.unwrap();
        let pipe = splice::Pipe::new(PIPE).unwrap();
        assert!(pipe.size() > 64 * 1024, "pipe of {} bytes", pipe.size());
        let data = chunk(5, 0, 5 << 20);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![];
            d.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut moved = 0;
        loop {
            match in_time_value(pipe.transfer(&b, &c)).await.unwrap() {
                Some(0) => break,
                Some(n) => moved += n,
                None => panic!("splice refused"),
            }
        }
        assert_eq!(moved, 5 << 20);
        writer.await.unwrap();
        drop(c);
        let got = in_time_value(reader).await.unwrap();
        assert!(got == data);
    }

    async fn in_time_value<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(60), f)
            .await
            .expect("finished within 60 s")
    }

    #[tokio::test]
    async fn a_reset_ends_the_relay_with_an_error() {
        let (client, mut backend, relay) = through_relay(Method::Splice).await;
        // SO_LINGER 0: close sends RST
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(client);
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), relay)
            .await
            .expect("the relay ends")
            .unwrap();
        assert!(r.is_err(), "a reset is an error: {r:?}");
        // and the backend sees its connection end
        let mut rest = vec![];
        let _ = backend.read_to_end(&mut rest).await;
    }
}
