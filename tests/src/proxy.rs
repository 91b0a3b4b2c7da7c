//! A TCP proxy in front of a broker that can lose the broker's answers or the client's
//! requests: while held, nothing the broker (or the client) sends gets through; a cut
//! then closes every connection, and what was held is gone, as when a network drops a
//! response (or a request) and the connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// See the module doc.
pub struct LossyProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    listener: Option<TcpListener>,
    holding: Arc<AtomicBool>,
    holding_requests: Arc<AtomicBool>,
    held_bytes: Arc<std::sync::atomic::AtomicU64>,
    cuts: watch::Sender<u64>,
}

impl LossyProxy {
    /// Binds a free port (so its address can be advertised before the target starts).
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Self {
            addr: listener.local_addr().expect("proxy address"),
            listener: Some(listener),
            holding: Arc::default(),
            holding_requests: Arc::default(),
            held_bytes: Arc::default(),
            cuts: watch::channel(0).0,
        }
    }

    /// Starts forwarding new connections to `target`.
    pub fn start(&mut self, target: String) {
        let listener = self.listener.take().expect("started once");
        let (holding, holding_requests, held, cuts) = (
            self.holding.clone(),
            self.holding_requests.clone(),
            self.held_bytes.clone(),
            self.cuts.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                tokio::spawn(pipe(
                    client,
                    server,
                    [holding.clone(), holding_requests.clone()],
                    held.clone(),
                    cuts.subscribe(),
                ));
            }
        });
    }

    /// From now on the broker's bytes are held back, not forwarded.
    pub fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
    }

    /// From now on the clients' bytes are held back, not forwarded: requests never
    /// reach the broker.
    pub fn hold_requests(&self) {
        self.holding_requests.store(true, Ordering::SeqCst);
    }

    /// Bytes held back since the last cut.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes.load(Ordering::SeqCst)
    }

    /// Closes every connection (dropping what was held) and forwards again.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
        self.holding.store(false, Ordering::SeqCst);
        self.holding_requests.store(false, Ordering::SeqCst);
        self.held_bytes.store(0, Ordering::SeqCst);
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    [holding, holding_requests]: [Arc<AtomicBool>; 2],
    held: Arc<std::sync::atomic::AtomicU64>,
    mut cuts: watch::Receiver<u64>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = forward(&mut client_rx, &mut server_tx, &holding_requests, &held);
    let down = forward(&mut server_rx, &mut client_tx, &holding, &held);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cuts.changed() => {}
    }
}

/// Copies `from` to `to`, dropping (and counting) what arrives while `holding`.
async fn forward(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    holding: &AtomicBool,
    held: &std::sync::atomic::AtomicU64,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if holding.load(Ordering::SeqCst) {
            held.fetch_add(n as u64, Ordering::SeqCst);
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
