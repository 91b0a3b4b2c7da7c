//! The peer link against a real peer service over real TCP, through a proxy that can
//! cut the network the way a partition does: bytes vanish, connections stay open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rafka_proto::peer::raft_peer_server::RaftPeerServer;
use rafka_proto::peer::{self as pb, peer_call::Body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

use super::*;
use crate::raft::network::{AddressDialer, PeerService, RaftGroups};

/// A peer service with no groups: every call is answered NOT_FOUND, which is enough to
/// see calls go out and answers come back.
async fn peer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = RaftPeerServer::new(PeerService::new(RaftGroups::default()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// A TCP proxy to `target`. While `cut` is set, it forwards nothing: bytes read from
/// either side are dropped, and new connections are accepted but lead nowhere.
async fn proxy(target: SocketAddr, cut: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let cut = cut.clone();
            tokio::spawn(async move {
                if cut.load(Ordering::SeqCst) {
                    // A black hole: the peer cannot be reached, nothing says so.
                    let (mut read, _write) = client.into_split();
                    drain(&mut read).await;
                    return;
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, cut.clone()));
                tokio::spawn(pipe(server_read, client_write, cut));
            });
        }
    });
    addr
}

async fn drain(read: &mut tokio::net::tcp::OwnedReadHalf) {
    let mut buf = vec![0u8; 64 << 10];
    while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Copies `from` to `to`, dropping what arrives while `cut` is set.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !cut.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn vote(group: u64) -> Body {
    Body::Vote(pb::RaftRequest {
        group,
        json: bytes::Bytes::from_static(b"{}"),
    })
}

#[tokio::test]
async fn calls_of_many_groups_share_messages_and_each_gets_its_own_answer() {
    let addr = peer().await;
    let link = Link::start(Arc::new(AddressDialer::alone(&addr.to_string())));
    let calls = (0..2_000u64).map(|group| {
        let link = link.clone();
        async move {
            let answer = link.call(vote(group), 16, Duration::from_secs(20)).await;
            (group, answer)
        }
    });
    for (group, answer) in futures::future::join_all(calls).await {
        let status = answer.expect_err("no group runs on this peer");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
        assert!(
            status.message().contains(&format!("raft group {group} ")),
            "group {group} got another call's answer: {status}"
        );
    }
    let stats = link.stats();
    let (calls, messages) = (
        stats.calls.load(Ordering::Relaxed),
        stats.messages.load(Ordering::Relaxed),
    );
    assert_eq!(calls, 2_000);
    assert!(
        messages < calls / 4,
        "2,000 calls waiting together went in {messages} messages"
    );
    assert_eq!(stats.streams.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_link_cut_without_a_word_redials_and_works_within_a_second_of_the_heal() {
    let cut = Arc::new(AtomicBool::new(false));
    let addr = proxy(peer().await, cut.clone()).await;
    let link = Link::start(Arc::new(AddressDialer::alone(&addr.to_string())));
    let short = Duration::from_millis(300);
    let answered = |r: &Result<bytes::Bytes, tonic::Status>| matches!(r, Err(s) if s.code() == tonic::Code::NotFound);
    assert!(answered(
        &link.call(vote(1), 16, Duration::from_secs(10)).await
    ));

    cut.store(true, Ordering::SeqCst);
    // Calls keep going out (as Raft's would) until the link gives the silent stream up.
    let deadline = Instant::now() + STALL * 4;
    while link.stats().stalls.load(Ordering::Relaxed) == 0 {
        assert!(
            !answered(&link.call(vote(2), 16, short).await),
            "answered through a cut link"
        );
        assert!(
            Instant::now() < deadline,
            "the link never gave up a stream silent for {STALL:?}"
        );
    }

    // One more call starts a dial the cut network swallows; the heal comes while the
    // link still waits on it.
    assert!(!answered(&link.call(vote(2), 16, short).await));
    cut.store(false, Ordering::SeqCst);
    let healed = Instant::now();
    loop {
        if answered(&link.call(vote(3), 16, short).await) {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(1),
            "no answer within a second of the heal"
        );
    }
}
