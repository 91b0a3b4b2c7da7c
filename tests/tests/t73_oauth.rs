//! The built-in authorization server (issue 16, part 4): client credentials for
//! tokens on the HTTP port, RFC 6749 errors for bad requests and rate-limited wrong
//! secrets, clients created and deleted through the admin API, signing keys rotated
//! without invalidating issued tokens, and a producer whose tokens expire every few
//! seconds losing and failing nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rafka_broker::auth::{AuthSettings, ConfigClient};
use rafka_broker::config::BrokerConfig;
use rafka_broker::server::Server;
use rafka_broker::tls::dev::DevCa;
use rafka_broker::tls::TlsSettings;
use rafka_client::{
    Admin, AdminConfig, Credentials, Producer, ProducerConfig, ProducerRecord, TlsConfig,
};
use rafka_tests::cluster::free_addresses;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_SECRET: &str = "bootstrap-secret-of-the-admin";

struct Broker {
    addr: String,
    http: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(dir: &Path, ttl: u64, tls: TlsSettings) -> Broker {
    rafka_tests::init_tracing();
    let addr = free_addresses(1).remove(0);
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    let config = BrokerConfig {
        listen: listener.local_addr().unwrap(),
        data_dir: dir.join("data"),
        tls,
        auth: AuthSettings {
            enabled: true,
            builtin_issuer: true,
            token_ttl_secs: ttl,
            // Expired is expired: a token not refreshed in time fails at once.
            clock_skew_secs: 0,
            super_users: vec!["admin".into()],
            clients: BTreeMap::from([(
                "admin".to_string(),
                ConfigClient {
                    secret_hash: rafka_broker::auth::issuer::hash_secret(ADMIN_SECRET).unwrap(),
                    roles: vec![],
                },
            )]),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = Server::open(config).await.expect("open");
    server.serve_http(http);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Broker {
        addr,
        http: http_addr,
        _stop: stop,
    }
}

/// One HTTP/1.1 request; the status and the body as JSON (Null if not JSON).
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A bad token request: its body, headers, and the status and `error` expected.
type Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    u16,
    &'static str,
);

fn creds(b: &Broker, id: &str, secret: &str, https: bool) -> Credentials {
    let scheme = if https { "https" } else { "http" };
    Credentials::ClientSecret {
        token_url: format!("{scheme}://{}/oauth/token", b.http),
        client_id: id.into(),
        client_secret: secret.into(),
    }
}

async fn admin(
    b: &Broker,
    c: Credentials,
    tls: Option<TlsConfig>,
) -> Result<Admin, rafka_client::ClientError> {
    Admin::connect_with(
        &b.addr,
        AdminConfig {
            credentials: Some(c),
            tls,
        },
    )
    .await
}

/// Waits for the cluster's first signing key (made by the broker once it serves).
async fn first_key(b: &Broker) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, jwks) = http(&b.http, "GET", "/.well-known/jwks.json", &[], b"").await;
        if jwks["keys"].as_array().is_some_and(|k| !k.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "no signing key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_answers_bad_requests_in_rfc_6749_terms() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), 600, TlsSettings::default()).await;
    first_key(&b).await;
    let post = |body: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let addr = b.http.clone();
        async move { http(&addr, "POST", "/oauth/token", &headers, body.as_bytes()).await }
    };

    let (s, ok) = post(
        "grant_type=client_credentials&client_id=admin&client_secret=bootstrap-secret-of-the-admin",
        vec![FORM],
    )
    .await;
    assert_eq!(s, 200, "{ok}");
    assert_eq!(ok["token_type"], "Bearer");
    assert_eq!(ok["expires_in"], 600);
    assert!(ok["access_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));

    let cases: Vec<Case> = vec![
        (
            "grant_type=password&client_id=admin&client_secret=x",
            vec![FORM],
            400,
            "unsupported_grant_type",
        ),
        (
            "client_id=admin&client_secret=x",
            vec![FORM],
            400,
            "invalid_request",
        ),
        (
            "grant_type=client_credentials",
            vec![FORM],
            401,
            "invalid_client",
        ),
        (
            "grant_type=client_credentials&client_id=nobody&client_secret=x",
            vec![FORM],
            401,
            "invalid_client",
        ),
        (
            "grant_type=client_credentials&client_id=admin&client_secret=x",
            vec![],
            400,
            "invalid_request",
        ),
        (
            "grant_type=client_credentials&grant_type=client_credentials",
            vec![FORM],
            400,
            "invalid_request",
        ),
        (
            "grant_type=client_credentials&client_id=%zz",
            vec![FORM],
            400,
            "invalid_request",
        ),
        (
            "grant_type=client_credentials",
            vec![FORM, ("authorization", "Basic !!!")],
            400,
            "invalid_request",
        ),
    ];
    for (body, headers, status, error) in cases {
        let (s, v) = post(body, headers).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(error)),
            "{body}: {v}"
        );
        assert!(v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    // A huge body: refused without reading it all.
    let big = vec![b'a'; 200 << 10];
    let (s, _) = http(&b.http, "POST", "/oauth/token", &[FORM], &big).await;
    assert!(s == 400 || s == 413, "{s}");
    // HTTP Basic works like the form fields.
    let basic = format!(
        "Basic {}",
        base64_encode("admin:bootstrap-secret-of-the-admin")
    );
    let (s, v) = http(
        &b.http,
        "POST",
        "/oauth/token",
        &[FORM, ("authorization", &basic)],
        b"grant_type=client_credentials",
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Wrong secrets: after five in a minute, the id is refused even with the right one.
    for _ in 0..5 {
        let (s, _) = post(
            "grant_type=client_credentials&client_id=admin&client_secret=guess",
            vec![FORM],
        )
        .await;
        assert_eq!(s, 401);
    }
    let (s, v) = post(
        "grant_type=client_credentials&client_id=admin&client_secret=bootstrap-secret-of-the-admin",
        vec![FORM],
    )
    .await;
    assert_eq!(s, 429, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("retry in"),
        "{v}"
    );

    // Discovery names the endpoints.
    let (s, d) = http(
        &b.http,
        "GET",
        "/.well-known/openid-configuration",
        &[],
        b"",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(d["issuer"], "rafka");
    assert!(d["token_endpoint"]
        .as_str()
        .unwrap()
        .ends_with("/oauth/token"));
    assert!(d["jwks_uri"]
        .as_str()
        .unwrap()
        .ends_with("/.well-known/jwks.json"));
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_keys_and_refreshed_tokens_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let ca = DevCa::create(&pki, "ca").unwrap();
    let cert = ca.issue(&pki, "broker", &[]).unwrap();
    let tls_settings = TlsSettings {
        cert_file: cert.cert_file,
        key_file: cert.key_file,
        ca_file: ca.cert_file.clone(),
    };
    // Tokens live 3 s: a producer running longer needs fresh ones.
    let b = start(dir.path(), 3, tls_settings).await;
    let tls = Some(TlsConfig {
        ca_pem: ca.cert_pem.as_bytes().to_vec(),
        ..Default::default()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let root = loop {
        match admin(&b, creds(&b, "admin", ADMIN_SECRET, true), tls.clone()).await {
            Ok(a) => break a,
            Err(e) => assert!(Instant::now() < deadline, "admin: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    root.create_topic("events", 2, 1, BTreeMap::new())
        .await
        .unwrap();

    // A client made through the admin API, allowed to write `events`.
    let secret = root
        .create_client("ingest", vec!["writers".into()])
        .await
        .unwrap();
    assert!(
        root.create_client("ingest", vec![]).await.is_err(),
        "a taken id"
    );
    let listed = root.list_clients().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].roles, ["writers"]);
    root.create_acls(vec![rafka_proto::v1::AclEntry {
        principal: "Role:writers".into(),
        resource_type: "topic".into(),
        name: "events".into(),
        operation: "write".into(),
        ..Default::default()
    }])
    .await
    .unwrap();

    // It produces without a pause for three token lifetimes: every send acknowledged.
    let producer = Producer::connect(
        &b.addr,
        ProducerConfig {
            credentials: Some(creds(&b, "ingest", &secret, true)),
            tls: tls.clone(),
            retries: 0,
            linger: Duration::from_millis(1),
            ..Default::default()
        },
    )
    .await
    .expect("producer with client credentials");
    let until = Instant::now() + Duration::from_secs(9);
    let mut sent = 0u32;
    while Instant::now() < until {
        let ack = producer
            .send(ProducerRecord::new("events", format!("e{sent}")).partition(sent % 2))
            .await
            .expect("send");
        ack.await
            .unwrap_or_else(|e| panic!("record {sent} failed: {e}"));
        sent += 1;
        if sent % 50 == 0 {
            // Spread the sends over the whole window, not a burst at its start.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(sent > 100, "{sent}");

    // Rotation: the old key keeps verifying the tokens it signed.
    let before = jwks_kids(&b, &ca.cert_pem).await;
    let kid = root.rotate_signing_key().await.unwrap();
    let after = jwks_kids(&b, &ca.cert_pem).await;
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(after.contains(&kid));
    root.metadata(&[])
        .await
        .expect("a token of the old key after the rotation");

    // A deleted client gets no more tokens.
    root.delete_client("ingest").await.unwrap();
    let e = admin(&b, creds(&b, "ingest", &secret, true), tls.clone())
        .await
        .err()
        .expect("a deleted client");
    assert!(e.to_string().contains("invalid_client"), "{e}");
}

/// The key ids the HTTPS port's JWKS lists (verified with the cluster CA).
async fn jwks_kids(b: &Broker, ca_pem: &str) -> Vec<String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let stream = tokio::net::TcpStream::connect(&b.http).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, stream)
        .await
        .expect("TLS to the HTTP port");
    let req = format!(
        "GET /.well-known/jwks.json HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        b.http
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let body = text.split_once("\r\n\r\n").expect("an HTTP answer").1;
    let v: Value = serde_json::from_str(body).expect("JSON");
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}
