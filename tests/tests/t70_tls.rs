//! TLS on the listener and the peer links (issue 16, part 1).
//!
//! - a three-broker cluster speaking only TLS replicates a topic and serves a producer
//!   and a consumer that trust its CA; plaintext clients and clients trusting another CA
//!   are refused;
//! - the peer service needs a client certificate of the cluster CA: without one a call
//!   is UNAUTHENTICATED, with one of another CA the handshake fails, so no process
//!   without the cluster's certificate can join, vote or replicate;
//! - new certificates (of a new CA) are served without a restart once the files change,
//!   while connections made before keep working.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rafka_broker::config::BrokerConfig;
use rafka_broker::server::Server;
use rafka_broker::tls::dev::{DevCa, DevCert};
use rafka_broker::tls::TlsSettings;
use rafka_client::{
    Admin, AdminConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
    TlsConfig, TopicPartition,
};
use rafka_proto::peer::raft_peer_client::RaftPeerClient;
use rafka_proto::peer::NodeStatus;
use rafka_tests::cluster::{free_addresses, peer_list, WAIT};
use rafka_tests::eventually;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A broker serving in this process until dropped.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn launch(id: u32, addr: &str, dir: &Path, peers: &str, tls: TlsSettings) -> Running {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let config = BrokerConfig {
        node_id: id,
        listen: listener.local_addr().expect("local addr"),
        data_dir: dir.to_path_buf(),
        peers: peers.to_string(),
        tls,
        ..Default::default()
    };
    let server = Server::open(config).await.expect("open broker");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        stop: Some(stop),
        task: Some(task),
    }
}

fn settings(ca: &DevCa, cert: &DevCert) -> TlsSettings {
    TlsSettings {
        cert_file: cert.cert_file.clone(),
        key_file: cert.key_file.clone(),
        ca_file: ca.cert_file.clone(),
    }
}

fn client_tls(ca_pem: &str, identity: Option<&DevCert>) -> TlsConfig {
    TlsConfig {
        ca_pem: ca_pem.as_bytes().to_vec(),
        identity: identity.map(|c| {
            (
                std::fs::read(&c.cert_file).unwrap(),
                std::fs::read(&c.key_file).unwrap(),
            )
        }),
        domain: None,
    }
}

async fn admin(
    bootstrap: &str,
    tls: Option<TlsConfig>,
) -> Result<Admin, rafka_client::ClientError> {
    let admin = Admin::connect_with(
        bootstrap,
        AdminConfig {
            tls,
            ..Default::default()
        },
    )
    .await?;
    // The connection is made; a request shows whether the broker took it.
    admin.metadata(&[]).await?;
    Ok(admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_replicates_and_serves_only_clients_that_trust_it() {
    rafka_tests::init_tracing();
    let pki = tempfile::tempdir().unwrap();
    let ca = DevCa::create(pki.path(), "ca").unwrap();
    let other = DevCa::create(pki.path(), "other-ca").unwrap();
    let addrs = free_addresses(3);
    let peers = peer_list(&addrs);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut brokers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let cert = ca
            .issue(pki.path(), &format!("node-{}", i + 1), &[])
            .unwrap();
        brokers.push(
            launch(
                i as u32 + 1,
                addr,
                dirs[i].path(),
                &peers,
                settings(&ca, &cert),
            )
            .await,
        );
    }
    let bootstrap = addrs.join(",");
    let tls = client_tls(&ca.cert_pem, None);

    let admin = admin(&bootstrap, Some(tls.clone()))
        .await
        .expect("admin over TLS");
    let created = admin
        .create_topic("secure", 2, 3, BTreeMap::new())
        .await
        .expect("create an RF=3 topic over TLS");
    assert!(created.partitions.iter().all(|p| p.replicas.len() == 3));

    let producer = Producer::connect(
        &bootstrap,
        ProducerConfig {
            tls: Some(tls.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("producer");
    let mut acks = Vec::new();
    for i in 0..1000u32 {
        let r = ProducerRecord::new("secure", format!("value-{i}"))
            .key(format!("k{i}"))
            .partition(i % 2);
        acks.push(producer.send(r).await.expect("send"));
    }
    for a in acks {
        a.await
            .expect("acknowledged by a majority over TLS peer links");
    }

    let mut consumer = Consumer::connect(
        &bootstrap,
        ConsumerConfig {
            tls: Some(tls.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("consumer");
    let tps = [
        TopicPartition::new("secure", 0),
        TopicPartition::new("secure", 1),
    ];
    consumer.assign(tps.clone());
    for tp in &tps {
        consumer.seek(tp, SeekTo::Earliest).await.expect("seek");
    }
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen < 1000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read {seen} of 1000"
        );
        for r in consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("poll")
        {
            let i: u32 = std::str::from_utf8(r.value.as_deref().expect("a value")).unwrap()
                ["value-".len()..]
                .parse()
                .unwrap();
            assert_eq!(r.partition, i % 2);
            seen += 1;
        }
    }

    let plain = admin_err(&bootstrap, None).await;
    assert!(!plain.is_empty(), "a plaintext client was served");
    let wrong = admin_err(&bootstrap, Some(client_tls(&other.cert_pem, None))).await;
    assert!(
        wrong.contains("UnknownIssuer"),
        "a client trusting another CA: {wrong}"
    );
    drop(brokers);
}

/// The error of an admin request with `tls`, or "" if it was served.
async fn admin_err(bootstrap: &str, tls: Option<TlsConfig>) -> String {
    match tokio::time::timeout(Duration::from_secs(20), admin(bootstrap, tls)).await {
        Ok(Ok(_)) => String::new(),
        Ok(Err(e)) => format!("{e:?} {e}"),
        Err(_) => "timed out".into(),
    }
}

/// A peer-service client of `addr` over TLS trusting `ca_pem`, showing `identity`.
async fn peer_call(addr: &str, ca_pem: &str, identity: Option<&DevCert>) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(c) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&c.cert_file).unwrap(),
            std::fs::read(&c.key_file).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    RaftPeerClient::new(channel)
        .node_heartbeat(NodeStatus::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_service_needs_a_certificate_of_the_cluster_ca() {
    rafka_tests::init_tracing();
    let pki = tempfile::tempdir().unwrap();
    let ca = DevCa::create(pki.path(), "ca").unwrap();
    let rogue_ca = DevCa::create(pki.path(), "rogue-ca").unwrap();
    let node = ca.issue(pki.path(), "node-1", &[]).unwrap();
    let peer = ca.issue(pki.path(), "node-2", &[]).unwrap();
    let rogue = rogue_ca.issue(pki.path(), "rogue", &[]).unwrap();
    let addr = free_addresses(1).remove(0);
    let dir = tempfile::tempdir().unwrap();
    let _broker = launch(
        1,
        &addr,
        dir.path(),
        &format!("1={addr}"),
        settings(&ca, &node),
    )
    .await;
    admin(&addr, Some(client_tls(&ca.cert_pem, None)))
        .await
        .expect("the broker serves over TLS");

    // A certificate of the cluster CA: the call is answered (whatever its answer).
    let certified = peer_call(&addr, &ca.cert_pem, Some(&peer)).await;
    assert!(
        !certified
            .as_ref()
            .is_err_and(|e| e.starts_with("Unauthenticated") || e.starts_with("connect")),
        "a peer with a certificate of the cluster CA: {certified:?}"
    );
    // No certificate: refused by the broker.
    let none = peer_call(&addr, &ca.cert_pem, None).await.unwrap_err();
    assert!(
        none.starts_with("Unauthenticated") && none.contains("client certificate"),
        "a peer call without a client certificate: {none}"
    );
    // A certificate of another CA: the handshake fails (or the first call on it).
    let other = peer_call(&addr, &ca.cert_pem, Some(&rogue))
        .await
        .unwrap_err();
    assert!(
        !other.starts_with("Unauthenticated") && !other.is_empty(),
        "a peer call with a certificate of another CA: {other}"
    );
    // Plaintext: no gRPC at all.
    let plain = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        RaftPeerClient::new(channel)
            .node_heartbeat(NodeStatus::default())
            .await
            .map_err(|s| s.to_string())
    };
    let plain = tokio::time::timeout(Duration::from_secs(20), plain).await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "a plaintext peer call was answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart() {
    rafka_tests::init_tracing();
    let pki = tempfile::tempdir().unwrap();
    let live = tempfile::tempdir().unwrap();
    let old_ca = DevCa::create(pki.path(), "old-ca").unwrap();
    let new_ca = DevCa::create(pki.path(), "new-ca").unwrap();
    let old = old_ca.issue(pki.path(), "old", &[]).unwrap();
    let new = new_ca.issue(pki.path(), "new", &[]).unwrap();
    // The files the broker reads, replaced in place later.
    let files = TlsSettings {
        cert_file: live.path().join("broker.pem"),
        key_file: live.path().join("broker.key"),
        ca_file: live.path().join("ca.pem"),
    };
    let install = |cert: &DevCert, ca_pem: &str| {
        for (from, to) in [
            (&cert.cert_file, &files.cert_file),
            (&cert.key_file, &files.key_file),
        ] {
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
        let tmp = files.ca_file.with_extension("tmp");
        std::fs::write(&tmp, ca_pem).unwrap();
        std::fs::rename(&tmp, &files.ca_file).unwrap();
    };
    install(&old, &old_ca.cert_pem);
    let addr = free_addresses(1).remove(0);
    let dir = tempfile::tempdir().unwrap();
    let _broker = launch(1, &addr, dir.path(), &format!("1={addr}"), files.clone()).await;

    let before = admin(&addr, Some(client_tls(&old_ca.cert_pem, None)))
        .await
        .expect("served with the old certificate");
    assert!(
        !admin_err(&addr, Some(client_tls(&new_ca.cert_pem, None)))
            .await
            .is_empty(),
        "the new CA was trusted before the rotation"
    );

    // Rotate: the new certificate, and a CA file trusting both CAs while clients move.
    install(&new, &format!("{}{}", old_ca.cert_pem, new_ca.cert_pem));
    eventually("the broker to serve its new certificate", WAIT, || async {
        admin_err(&addr, Some(client_tls(&new_ca.cert_pem, None)))
            .await
            .is_empty()
    })
    .await;
    // The connection made before the rotation still works.
    before
        .metadata(&[])
        .await
        .expect("an old connection after the rotation");
    // New connections trusting only the old CA are refused now.
    assert!(!admin_err(&addr, Some(client_tls(&old_ca.cert_pem, None)))
        .await
        .is_empty());
    // A peer with a certificate of either CA in the new CA file is accepted.
    let old_peer = old_ca.issue(pki.path(), "old-peer", &[]).unwrap();
    let answered = peer_call(&addr, &new_ca.cert_pem, Some(&old_peer)).await;
    assert!(
        !answered
            .as_ref()
            .is_err_and(|e| e.starts_with("Unauthenticated") || e.starts_with("connect")),
        "a peer of the old CA after the rotation: {answered:?}"
    );
}
