//! UDP through a tunnel: each datagram travels as one frame, `[u16 BE length][bytes]`,
//! in either direction; the serving node turns frames into datagrams to the backend
//! and the backend's datagrams back into frames.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// The largest datagram a frame may carry: the most a UDP datagram over IPv4 holds.
pub const MAX_DATAGRAM: usize = 65_507;

/// Sends one datagram as a frame (and flushes, so it leaves at once). Fails on a
/// datagram over [`MAX_DATAGRAM`] bytes.
pub async fn send_datagram<W: AsyncWrite + Unpin>(w: &mut W, datagram: &[u8]) -> Result<()> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(Error::InvalidInput(format!(
            "tunnel: a datagram of {} bytes (at most {MAX_DATAGRAM})",
            datagram.len()
        )));
    }
    let mut frame = Vec::with_capacity(2 + datagram.len());
    frame.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    frame.extend_from_slice(datagram);
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Receives one frame into `buf` (replacing its contents): `false` when the stream
/// ended cleanly between frames. Fails on a frame over [`MAX_DATAGRAM`] bytes or a
/// stream that ends inside a frame.
pub async fn recv_datagram<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<bool> {
    let mut len = [0u8; 2];
    // the first byte tells a clean end from a cut frame
    if r.read(&mut len[..1]).await? == 0 {
        return Ok(false);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_DATAGRAM {
        return Err(Error::InvalidInput(format!(
            "tunnel: a frame of {len} bytes (at most {MAX_DATAGRAM})"
        )));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

/// Serves one UDP tunnel until either side ends, a frame is refused, or nothing has
/// moved for `idle`: frames from `stream` go to `sock` (connected to the backend),
/// datagrams from `sock` come back as frames. Returns the datagrams moved each way.
pub(super) async fn serve<S>(stream: S, sock: UdpSocket, idle: Duration) -> Result<(u64, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let start = Instant::now();
    // milliseconds since `start` of the last datagram either way
    let last = Arc::new(AtomicU64::new(0));
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let to_backend = async {
        let mut buf = Vec::new();
        while recv_datagram(&mut rd, &mut buf).await? {
            touch();
            match sock.send(&buf).await {
                // the backend's port is closed for now (ICMP): the datagram is lost,
                // as it would be without the tunnel
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                r => {
                    r?;
                }
            }
            up.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<(), Error>(())
    };
    let to_client = async {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let n = match sock.recv(&mut buf).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err::<(), Error>(e.into()),
                Ok(n) => n,
            };
            touch();
            send_datagram(&mut wr, &buf[..n]).await?;
            down.fetch_add(1, Ordering::Relaxed);
        }
    };
    let watch = async {
        loop {
            let at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    };
    let r: Result<()> = tokio::select! {
        r = to_backend => r,
        r = to_client => r,
        () = watch => Ok(()),
    };
    r.map(|()| (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed)))
}
