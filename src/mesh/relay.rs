//! Moving bytes between a client and a backend once the mesh has paired them.

use tokio::net::TcpStream;

/// Buffer size of each direction.
pub const BUF: usize = 64 * 1024;

/// Copies both ways until both sides have closed; returns the bytes sent each way
/// (client → backend, backend → client).
pub async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
) -> std::io::Result<(u64, u64)> {
    tokio::io::copy_bidirectional_with_sizes(client, upstream, BUF, BUF).await
}
