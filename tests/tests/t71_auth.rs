//! Bearer tokens on every client RPC (issue 16, part 2): tokens of an OIDC-style
//! issuer, verified against its key set (a JWKS file), each refusal UNAUTHENTICATED
//! with its reason; producers and consumers with a token work as before.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rafka_broker::auth::jwt::{KeySet, Signer};
use rafka_broker::auth::AuthSettings;
use rafka_broker::config::BrokerConfig;
use rafka_broker::server::Server;
use rafka_client::{
    Admin, AdminConfig, Consumer, ConsumerConfig, Credentials, Producer, ProducerConfig,
    ProducerRecord, SeekTo, TopicPartition,
};
use rafka_tests::cluster::{free_addresses, WAIT};
use rafka_tests::eventually;
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": "rafka", "sub": sub, "exp": now() + 600, "roles": ["app"]})
}

fn write_keys(path: &Path, keys: &[(&Signer, &str)]) {
    let set = KeySet {
        keys: keys.iter().map(|(s, kid)| s.jwk(kid)).collect(),
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, set.to_json().to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(dir: &Path, jwks: &Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    let addr = free_addresses(1).remove(0);
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let config = BrokerConfig {
        listen: listener.local_addr().unwrap(),
        data_dir: dir.join("data"),
        auth: AuthSettings {
            enabled: true,
            issuer: ISSUER.into(),
            audience: "rafka".into(),
            jwks_file: jwks.to_path_buf(),
            clock_skew_secs: 30,
            // Authorization is t72's subject: here every authenticated principal is a
            // super user.
            super_users: vec!["svc".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let server = Server::open(config).await.expect("open");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Lists topics with `token`; the error's code and message, or `Ok`.
async fn with_token(addr: &str, token: Option<String>) -> Result<(), (tonic::Code, String)> {
    let admin = Admin::connect_with(
        addr,
        AdminConfig {
            credentials: token.map(Credentials::Token),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| (tonic::Code::Unknown, e.to_string()))?;
    admin
        .metadata(&[])
        .await
        .map(|_| ())
        .map_err(|e| (e.code().unwrap_or(tonic::Code::Unknown), e.to_string()))
}

async fn refused(addr: &str, token: Option<String>, reason: &str) {
    match with_token(addr, token).await {
        Err((tonic::Code::Unauthenticated, m)) => {
            assert!(
                m.contains(reason),
                "refused, but `{m}` does not say `{reason}`"
            )
        }
        other => panic!("expected UNAUTHENTICATED ({reason}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_with_its_reason() {
    rafka_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let (ec, _) = Signer::generate_es256().unwrap();
    let ed = Signer::generate_ed25519().unwrap();
    let (stranger, _) = Signer::generate_es256().unwrap();
    write_keys(&jwks, &[(&ec, "ec"), (&ed, "ed")]);
    let (addr, _stop) = start(dir.path(), &jwks).await;

    for (signer, kid) in [(&ec, "ec"), (&ed, "ed")] {
        let token = signer.sign(kid, &claims("svc")).unwrap();
        with_token(&addr, Some(token)).await.expect("a valid token");
    }
    let sign = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("svc");
        f(&mut c);
        ec.sign("ec", &c).unwrap()
    };
    refused(&addr, None, "no bearer token").await;
    refused(
        &addr,
        Some(sign(&|c| c["exp"] = json!(now() - 120))),
        "expired",
    )
    .await;
    refused(
        &addr,
        Some(sign(&|c| c["nbf"] = json!(now() + 600))),
        "not valid for another",
    )
    .await;
    refused(
        &addr,
        Some(sign(&|c| c["iss"] = json!("https://other.test"))),
        "issuer",
    )
    .await;
    refused(
        &addr,
        Some(sign(&|c| c["aud"] = json!("kafka"))),
        "audience",
    )
    .await;
    refused(
        &addr,
        Some(stranger.sign("ec", &claims("svc")).unwrap()),
        "signature",
    )
    .await;
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none"}).to_string()),
        b64(&claims("admin").to_string())
    );
    refused(&addr, Some(none), "algorithm `none`").await;
    refused(&addr, Some("garbage".into()), "malformed").await;

    // A key the issuer adds is taken at once (an unknown kid reads the keys again).
    let (added, _) = Signer::generate_es256().unwrap();
    write_keys(&jwks, &[(&ec, "ec"), (&ed, "ed"), (&added, "added")]);
    with_token(&addr, Some(added.sign("added", &claims("svc")).unwrap()))
        .await
        .expect("a token of a key added to the set");

    // A key the issuer removes stops working, even for a token it verified before.
    let old_token = ed.sign("ed", &claims("svc")).unwrap();
    with_token(&addr, Some(old_token.clone())).await.unwrap();
    write_keys(&jwks, &[(&ec, "ec"), (&added, "added")]);
    eventually("the removed key's token to be refused", WAIT, || async {
        with_token(&addr, Some(old_token.clone())).await.is_err()
    })
    .await;
    refused(&addr, Some(old_token), "unknown key `ed`").await;
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_and_consumers_with_a_token_work_and_without_one_do_not() {
    rafka_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let (ec, _) = Signer::generate_es256().unwrap();
    write_keys(&jwks, &[(&ec, "ec")]);
    let (addr, _stop) = start(dir.path(), &jwks).await;
    let creds = Some(Credentials::Token(ec.sign("ec", &claims("svc")).unwrap()));

    let admin = Admin::connect_with(
        &addr,
        AdminConfig {
            credentials: creds.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    admin
        .create_topic("orders", 1, 1, Default::default())
        .await
        .expect("create with a token");
    let producer = Producer::connect(
        &addr,
        ProducerConfig {
            credentials: creds.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut acks = Vec::new();
    for i in 0..100 {
        acks.push(
            producer
                .send(ProducerRecord::new("orders", format!("o{i}")))
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.expect("acknowledged");
    }
    let mut consumer = Consumer::connect(
        &addr,
        ConsumerConfig {
            credentials: creds,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let tp = TopicPartition::new("orders", 0);
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, SeekTo::Earliest).await.unwrap();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen < 100 {
        assert!(tokio::time::Instant::now() < deadline);
        seen += consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .len();
    }

    // Without a token: the produce fails, UNAUTHENTICATED, and nothing is written.
    // Refused when it connects (its first metadata request), or at the produce.
    let anonymous = Producer::connect(
        &addr,
        ProducerConfig {
            retries: 0,
            ..Default::default()
        },
    )
    .await;
    let err = match anonymous {
        Err(e) => e,
        Ok(p) => match p.send(ProducerRecord::new("orders", "intruder")).await {
            Err(e) => e,
            Ok(ack) => ack.await.expect_err("an anonymous produce"),
        },
    };
    assert!(err.to_string().contains("no bearer token"), "{err}");
    let err = match Consumer::connect(&addr, ConsumerConfig::default()).await {
        Err(e) => e,
        Ok(mut c) => {
            c.assign([tp.clone()]);
            c.seek(&tp, SeekTo::Earliest)
                .await
                .expect_err("an anonymous seek")
        }
    };
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    let end = admin.metadata(&["orders"]).await.unwrap().topics[0].partitions[0].high_watermark;
    assert_eq!(
        end, 100,
        "only the authenticated producer's records were written"
    );
}
