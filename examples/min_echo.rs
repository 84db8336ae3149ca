//! The minimal tokio echo server — the floor any Rust server starts from, and the baseline of
//! `bench/echo.sh`: an accept loop, a task per connection, `read` into a buffer, `write_all` it back.
//!
//! The buffer is the size of sockit echo's first read buffer (4 KiB), so the comparison is fair.
//! No limits, no TLS, no shutdown: exactly what the tutorials write.
//!
//! ```sh
//! cargo run --release --example min_echo -- 127.0.0.1:9101
//! ```

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9101".to_string());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("min_echo: listening on {}", listener.local_addr()?);
    loop {
        let (mut socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if socket.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}
