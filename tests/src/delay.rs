//! Delay on a link, without `netem` (this kernel has no `sch_netem`, and nftables here
//! cannot queue packets to userspace): a TCP forwarder inside a broker's network
//! namespace, in front of the broker, that holds every chunk it forwards for a set time
//! (in order, each direction on its own). The other brokers reach the broker through
//! it, so its delay is the link's; set to zero it forwards at once. Being in the
//! broker's namespace, traffic to it still carries the broker's address, so nftables
//! cuts and loss between namespaces apply to it as to the broker itself.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// See the module doc.
pub struct DelayProxy {
    delay_us: Arc<AtomicU64>,
}

impl DelayProxy {
    /// Starts forwarding `listen` to `target`, both in namespace `netns`, on a thread of
    /// its own (moved into the namespace). Panics when the namespace cannot be entered or
    /// the address bound.
    pub fn start(netns: &str, listen: SocketAddr, target: SocketAddr) -> Self {
        let delay_us = Arc::new(AtomicU64::new(0));
        let delay = delay_us.clone();
        let path = format!("/var/run/netns/{netns}");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: setns on this thread only, with a valid descriptor it owns.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind(listen)
                    .await
                    .expect("bind the delay proxy");
                let _ = ready_tx.send(());
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(forward(client, target, delay.clone()));
                }
            });
        });
        ready_rx.recv().expect("the delay proxy started");
        Self { delay_us }
    }

    /// Holds everything forwarded from now on for `delay`, each way.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }
}

async fn forward(client: TcpStream, target: SocketAddr, delay: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    tokio::select! {
        _ = delayed_copy(client_rx, server_tx, delay.clone()) => {}
        _ = delayed_copy(server_rx, client_tx, delay) => {}
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Arc<AtomicU64>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let at = Instant::now() + Duration::from_micros(delay.load(Ordering::SeqCst));
                    if tx.send((at, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The writer drains what was read before the reader's end, then ends too.
    tokio::join!(read, write);
}
