//! ACLs kept in the cluster (issue 16, part 3), on three brokers with bearer-token
//! auth: what no entry allows is PERMISSION_DENIED with the principal and resource
//! named; deny wins over allow; prefixes and roles match; internal topics are for super
//! users; a change is in force on every broker within a second; a revoked entry stops
//! a running consumer at its next fetch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use rafka_broker::auth::jwt::{KeySet, Signer};
use rafka_broker::auth::AuthSettings;
use rafka_broker::config::BrokerConfig;
use rafka_broker::server::Server;
use rafka_client::{
    Admin, AdminConfig, ClientError, Consumer, ConsumerConfig, Credentials, Producer,
    ProducerConfig, ProducerRecord, SeekTo, TopicPartition,
};
use rafka_proto::v1::AclEntry;
use rafka_tests::cluster::{free_addresses, peer_list, WAIT};
use serde_json::json;
use tonic::Code;

struct Cluster {
    addrs: Vec<String>,
    signer: Signer,
    _dir: tempfile::TempDir,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Cluster {
    async fn start() -> Self {
        rafka_tests::init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let (signer, _) = Signer::generate_es256().unwrap();
        let jwks = dir.path().join("jwks.json");
        let set = KeySet {
            keys: vec![signer.jwk("k")],
        };
        std::fs::write(&jwks, set.to_json().to_string()).unwrap();
        let addrs = free_addresses(3);
        let peers = peer_list(&addrs);
        let mut stops = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            let config = BrokerConfig {
                node_id: i as u32 + 1,
                listen: listener.local_addr().unwrap(),
                data_dir: dir.path().join(format!("node-{}", i + 1)),
                peers: peers.clone(),
                auth: AuthSettings {
                    enabled: true,
                    jwks_file: jwks.clone(),
                    super_users: vec!["admin".into()],
                    ..Default::default()
                },
                ..Default::default()
            };
            let server = Server::open(config).await.expect("open");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(server.serve(listener, async {
                let _ = stopped.await;
            }));
            stops.push(stop);
        }
        Self {
            addrs,
            signer,
            _dir: dir,
            _stops: stops,
        }
    }

    fn bootstrap(&self) -> String {
        self.addrs.join(",")
    }

    fn token(&self, sub: &str, roles: &[&str]) -> Credentials {
        let exp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let claims = json!({"sub": sub, "exp": exp, "roles": roles});
        Credentials::Token(self.signer.sign("k", &claims).unwrap())
    }

    async fn admin_at(&self, addr: &str, who: &Credentials) -> Admin {
        Admin::connect_with(
            addr,
            AdminConfig {
                credentials: Some(who.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("connect")
    }

    /// An idempotent producer (it asks for a producer id as it connects).
    async fn producer(&self, who: &Credentials) -> Result<Producer, ClientError> {
        Producer::connect(
            &self.bootstrap(),
            ProducerConfig {
                credentials: Some(who.clone()),
                retries: 0,
                ..Default::default()
            },
        )
        .await
    }

    /// A producer with acks=leader (no producer id).
    async fn plain_producer(&self, who: &Credentials) -> Producer {
        Producer::connect(
            &self.bootstrap(),
            ProducerConfig {
                credentials: Some(who.clone()),
                acks: rafka_client::Acks::Leader,
                retries: 0,
                ..Default::default()
            },
        )
        .await
        .expect("producer")
    }

    async fn consumer(&self, who: &Credentials, group: Option<&str>) -> Consumer {
        Consumer::connect(
            &self.bootstrap(),
            ConsumerConfig {
                credentials: Some(who.clone()),
                group_id: group.map(String::from),
                auto_commit_interval: None,
                ..Default::default()
            },
        )
        .await
        .expect("consumer")
    }
}

fn entry(principal: &str, ty: &str, pattern: &str, name: &str, op: &str, perm: &str) -> AclEntry {
    AclEntry {
        principal: principal.into(),
        resource_type: ty.into(),
        pattern: pattern.into(),
        name: name.into(),
        operation: op.into(),
        permission: perm.into(),
    }
}

/// PERMISSION_DENIED naming `who` and `what`.
fn denied<T: std::fmt::Debug>(r: Result<T, ClientError>, who: &str, what: &str) {
    let e = r.expect_err("refused");
    let e = match e {
        ClientError::RetriesExhausted { last, .. } => *last,
        e => e,
    };
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    let m = e.to_string();
    assert!(m.contains(&format!("`{who}`")) && m.contains(what), "{m}");
}

async fn produce_one(p: &Producer, topic: &str) -> Result<(), ClientError> {
    p.send(ProducerRecord::new(topic.to_string(), "v").partition(0))
        .await?
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acls_decide_what_each_principal_may_do() {
    let c = Cluster::start().await;
    let admin_token = c.token("admin", &[]);
    let alice = c.token("alice", &[]);
    let bob = c.token("bob", &["reader"]);
    let admin = c.admin_at(&c.bootstrap(), &admin_token).await;
    for t in ["orders", "orders.secret", "private"] {
        admin
            .create_topic(t, 1, 3, BTreeMap::new())
            .await
            .expect("create");
    }

    // Without any entry, alice may do nothing, and is told what she was refused.
    let alice_admin = c.admin_at(&c.bootstrap(), &alice).await;
    denied(
        alice_admin
            .create_topic("mine", 1, 1, BTreeMap::new())
            .await,
        "alice",
        "create topic `mine`",
    );
    denied(
        alice_admin.delete_topic("private").await,
        "alice",
        "delete topic `private`",
    );
    denied(
        alice_admin
            .alter_topic_config(
                "private",
                BTreeMap::from([("retention.ms".into(), "1000".into())]),
            )
            .await,
        "alice",
        "alter topic `private`",
    );
    denied(
        alice_admin.metadata(&["private"]).await,
        "alice",
        "describe topic `private`",
    );
    denied(alice_admin.rebalance(true).await, "alice", "alter cluster");
    denied(
        alice_admin.list_acls("", "").await,
        "alice",
        "describe cluster",
    );
    denied(
        alice_admin
            .create_acls(vec![entry("User:alice", "cluster", "", "", "all", "")])
            .await,
        "alice",
        "alter cluster",
    );
    denied(
        alice_admin.describe_group("g").await,
        "alice",
        "describe group `g`",
    );
    // An idempotent producer needs write on some topic for its producer id.
    denied(
        c.producer(&alice).await.map(|_| ()),
        "alice",
        "write any topic",
    );
    let alice_producer = c.plain_producer(&alice).await;
    denied(
        produce_one(&alice_producer, "orders").await,
        "alice",
        "topic `orders`",
    );
    let mut alice_consumer = c.consumer(&alice, None).await;
    let tp = TopicPartition::new("private", 0);
    alice_consumer.assign([tp.clone()]);
    denied(
        alice_consumer.seek(&tp, SeekTo::Earliest).await,
        "alice",
        "describe topic `private`",
    );

    // Entries: alice writes to topics prefixed `orders`, but never `orders.secret`;
    // the reader role reads every topic and the groups prefixed `app-`.
    admin
        .create_acls(vec![
            entry(
                "User:alice",
                "topic",
                "prefixed",
                "orders",
                "write",
                "allow",
            ),
            entry(
                "User:alice",
                "topic",
                "literal",
                "orders.secret",
                "all",
                "deny",
            ),
            entry("Role:reader", "topic", "literal", "*", "read", "allow"),
            entry("Role:reader", "group", "prefixed", "app-", "read", "allow"),
        ])
        .await
        .expect("create ACLs");
    let added = Instant::now();
    // In force on every broker within a second.
    for addr in &c.addrs {
        let at = c.admin_at(addr, &alice).await;
        let deadline = added + Duration::from_secs(1);
        loop {
            if at.metadata(&["orders"]).await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ACLs not in force on {addr} after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let alice_producer = c
        .producer(&alice)
        .await
        .expect("an idempotent producer now");
    produce_one(&alice_producer, "orders")
        .await
        .expect("alice writes orders");
    denied(
        produce_one(&alice_producer, "orders.secret").await,
        "alice",
        "denied by",
    );
    // A listing of all topics shows those alice may describe.
    let listed: Vec<String> = alice_admin
        .metadata(&[])
        .await
        .unwrap()
        .topics
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(listed, ["orders"], "alice sees what she may describe");
    assert_eq!(admin.list_acls("User:alice", "").await.unwrap().len(), 2);

    // bob reads through his role, in a group of his prefix, and commits.
    denied(c.producer(&bob).await.map(|_| ()), "bob", "write any topic");
    let bob_producer = c.plain_producer(&bob).await;
    denied(
        produce_one(&bob_producer, "orders").await,
        "bob",
        "write topic `orders`",
    );
    let mut bob_consumer = c.consumer(&bob, Some("app-1")).await;
    let orders = TopicPartition::new("orders", 0);
    bob_consumer.assign([orders.clone()]);
    bob_consumer
        .seek(&orders, SeekTo::Earliest)
        .await
        .expect("bob seeks");
    let deadline = Instant::now() + WAIT;
    let mut got = 0;
    while got == 0 {
        assert!(Instant::now() < deadline);
        got = bob_consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .len();
    }
    bob_consumer.commit().await.expect("bob commits in app-1");
    // A group outside his prefix: refused at its first group request.
    let mut other_group = c.consumer(&bob, Some("ops")).await;
    other_group.assign([orders.clone()]);
    let tried = async {
        other_group.committed(std::slice::from_ref(&orders)).await?;
        other_group.seek(&orders, SeekTo::Earliest).await?;
        other_group.poll(Duration::from_millis(200)).await?;
        other_group.commit().await
    };
    denied(tried.await, "bob", "group `ops`");
    // Internal topics: super users only, whatever the entries say.
    let mut internal = c.consumer(&bob, None).await;
    let offsets = TopicPartition::new("__consumer_offsets", 0);
    internal.assign([offsets.clone()]);
    let e = internal
        .seek(&offsets, SeekTo::Earliest)
        .await
        .expect_err("internal topic");
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("internal topic"), "{e}");

    // Revoked: bob's running consumer is refused at its next fetch.
    let more = c.producer(&admin_token).await.unwrap();
    produce_one(&more, "orders").await.unwrap();
    let n = admin
        .delete_acls(vec![entry(
            "Role:reader",
            "topic",
            "literal",
            "*",
            "read",
            "allow",
        )])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let deadline = Instant::now() + WAIT;
    let e = loop {
        assert!(
            Instant::now() < deadline,
            "bob's consumer was never refused"
        );
        if let Err(e) = bob_consumer.poll(Duration::from_millis(100)).await {
            break e;
        }
    };
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("read topic `orders`"), "{e}");
}

#[test]
fn acl_entries_are_validated() {
    // The same checks the broker makes at its edge.
    use rafka_broker::auth::acl::AclEntry as Entry;
    let bad = [
        entry("alice", "topic", "", "t", "read", ""),
        entry("User:alice", "table", "", "t", "read", ""),
        entry("User:alice", "topic", "fuzzy", "t", "read", ""),
        entry("User:alice", "topic", "", "", "read", ""),
        entry("User:alice", "topic", "", "t", "fly", ""),
        entry("User:alice", "topic", "", "t", "read", "maybe"),
        entry("User:alice", "cluster", "", "some", "alter", ""),
    ];
    for e in bad {
        assert!(Entry::from_proto(&e).is_err(), "{e:?}");
    }
    assert!(Entry::from_proto(&entry("Role:ops", "cluster", "", "", "alter", "")).is_ok());
}
