//! SASL on the Kafka listener over TLS (issue 18): confluent-kafka (librdkafka) with
//! SASL/OAUTHBEARER, fetching its token from the broker's built-in authorization server
//! itself (OIDC client credentials), and with SASL/PLAIN (client id and secret); the
//! ACLs of the gRPC API apply: a topic the client may write is written and read by a
//! group, one it may not is TOPIC_AUTHORIZATION_FAILED; a wrong secret fails
//! authentication.

use std::collections::BTreeMap;
use std::sync::Arc;

use rafka_broker::auth::{AuthSettings, ConfigClient};
use rafka_broker::tls::dev::DevCa;
use rafka_broker::tls::TlsSettings;
use rafka_client::{Admin, AdminConfig, Credentials, TlsConfig};
use rafka_proto::v1::AclEntry;
use rafka_tests::kafka::python_script;
use rafka_tests::TestBroker;

const ADMIN_SECRET: &str = "the-admin-secret-of-t84";

fn acl(principal: &str, ty: &str, name: &str, op: &str) -> AclEntry {
    AclEntry {
        principal: principal.into(),
        resource_type: ty.into(),
        pattern: "literal".into(),
        name: name.into(),
        operation: op.into(),
        permission: "allow".into(),
    }
}

const CLIENT: &str = r#"
import sys, time
from confluent_kafka import Producer, Consumer, KafkaException
kafka, token_url, ca, cid, secret, mech = sys.argv[1:7]
base = {"bootstrap.servers": kafka, "security.protocol": "SASL_SSL", "ssl.ca.location": ca}
if mech == "OAUTHBEARER":
    base.update({"sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
                 "sasl.oauthbearer.client.id": cid, "sasl.oauthbearer.client.secret": secret,
                 "sasl.oauthbearer.token.endpoint.url": token_url, "https.ca.location": ca})
else:
    base.update({"sasl.mechanism": "PLAIN", "sasl.username": cid, "sasl.password": secret})
errors = []
base["error_cb"] = lambda e: errors.append(e)
results = {}
def report(err, msg):
    results[msg.topic()] = err.name() if err else "ok"
p = Producer(dict(base, **{"enable.idempotence": True, "acks": "all", "message.timeout.ms": 20000}))
p.produce("sasl-ok", mech.encode(), on_delivery=report)
if secret == "wrong":
    deadline = time.time() + 30
    while not any(e.code() == -169 for e in errors):  # _AUTHENTICATION
        assert time.time() < deadline, f"no authentication error: {errors} {results}"
        p.poll(0.2)
    print("refused")
    sys.exit(0)
p.produce("sasl-denied", mech.encode(), on_delivery=report)
p.flush(30)
assert results == {"sasl-ok": "ok", "sasl-denied": "TOPIC_AUTHORIZATION_FAILED"}, (results, errors)
c = Consumer(dict(base, **{"group.id": "sasl-group", "auto.offset.reset": "earliest",
                           "enable.auto.commit": False}))
c.subscribe(["sasl-ok"])
deadline = time.time() + 30
got = None
while got is None:
    assert time.time() < deadline, f"nothing consumed: {errors}"
    m = c.poll(0.5)
    if m is not None and not m.error():
        got = m.value().decode()
c.commit(asynchronous=False)
c.close()
print("ok", got)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_oauthbearer_and_plain_over_tls_with_acls() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let tls_dir = dir.path().join("tls");
    let ca = DevCa::create(&tls_dir, "ca").unwrap();
    let cert = ca.issue(&tls_dir, "node-1", &[]).unwrap();
    let ca_file = ca.cert_file.clone();
    let broker = TestBroker::start_with(dir.clone(), move |c| {
        c.tls = TlsSettings {
            cert_file: cert.cert_file,
            key_file: cert.key_file,
            ca_file,
        };
        c.auth = AuthSettings {
            enabled: true,
            builtin_issuer: true,
            super_users: vec!["admin".into()],
            clients: BTreeMap::from([(
                "admin".to_string(),
                ConfigClient {
                    secret_hash: rafka_broker::auth::issuer::hash_secret(ADMIN_SECRET).unwrap(),
                    roles: vec![],
                },
            )]),
            ..Default::default()
        };
    })
    .await;
    let token_url = format!("https://{}/oauth/token", broker.http);
    let tls = TlsConfig {
        ca_pem: std::fs::read(&ca.cert_file).unwrap(),
        ..Default::default()
    };
    // The admin waits for the cluster's first signing key through its own token.
    let deadline = std::time::Instant::now() + rafka_tests::cluster::WAIT;
    let admin = loop {
        let attempt = Admin::connect_with(
            &broker.addr,
            AdminConfig {
                credentials: Some(Credentials::ClientSecret {
                    token_url: token_url.clone(),
                    client_id: "admin".into(),
                    client_secret: ADMIN_SECRET.into(),
                }),
                tls: Some(tls.clone()),
            },
        )
        .await;
        match attempt {
            Ok(a)
                if a.create_topic("sasl-ok", 1, 1, BTreeMap::new())
                    .await
                    .is_ok() =>
            {
                break a
            }
            _ => {
                assert!(std::time::Instant::now() < deadline, "no admin");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    admin
        .create_topic("sasl-denied", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let secret = admin.create_client("app", vec![]).await.unwrap();
    admin
        .create_acls(vec![
            acl("User:app", "topic", "sasl-ok", "write"),
            acl("User:app", "topic", "sasl-ok", "read"),
            acl("User:app", "topic", "sasl-ok", "describe"),
            acl("User:app", "group", "sasl-group", "read"),
        ])
        .await
        .unwrap();
    let ca_path = ca.cert_file.to_str().unwrap().to_string();
    for mech in ["OAUTHBEARER", "PLAIN"] {
        let out = python_script(
            CLIENT,
            &[&broker.kafka, &token_url, &ca_path, "app", &secret, mech],
        );
        assert!(out.trim().starts_with("ok "), "{mech}: {out}");
        let out = python_script(
            CLIENT,
            &[&broker.kafka, &token_url, &ca_path, "app", "wrong", mech],
        );
        assert_eq!(out.trim(), "refused", "{mech}");
    }
}
