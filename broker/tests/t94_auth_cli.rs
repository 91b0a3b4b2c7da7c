//! A broker with `[auth]` in its config file: the CLI with a token (`RAFKA_TOKEN` or
//! `--token`) is served, without one or with a bad one it prints one line naming the
//! problem; no token ever appears in the broker's log, even at debug level.

mod common;

use std::process::{Command, Stdio};
use std::time::SystemTime;

use common::{Broker, RAFKA};
use rafka_broker::auth::jwt::{KeySet, Signer};
use serde_json::json;

#[test]
fn the_cli_uses_a_token_and_the_broker_never_logs_one() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, _) = Signer::generate_es256().unwrap();
    let jwks = dir.path().join("jwks.json");
    let keys = KeySet {
        keys: vec![signer.jwk("k1")],
    };
    std::fs::write(&jwks, keys.to_json().to_string()).unwrap();
    let config = dir.path().join("rafka.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nenabled = true\nissuer = \"https://issuer.test\"\naudience = \"rafka\"\n\
             jwks_file = \"{}\"\n",
            jwks.display()
        ),
    )
    .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |exp: u64| {
        signer
            .sign(
                "k1",
                &json!({"iss": "https://issuer.test", "aud": "rafka", "sub": "ops", "exp": exp}),
            )
            .unwrap()
    };
    let good = token(now + 600);
    let expired = token(now - 600);
    let log = dir.path().join("broker.log");
    let mut broker = Broker::spawn(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        "debug,openraft=info",
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let run = |args: &[&str], env_token: Option<&str>| {
        let mut cmd = Command::new(RAFKA);
        cmd.arg("--bootstrap").arg(&broker.addr).args(args);
        cmd.env_remove("RAFKA_TOKEN");
        if let Some(t) = env_token {
            cmd.env("RAFKA_TOKEN", t);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    };

    let out = run(&["topic", "create", "audited"], Some(&good));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--token", &good, "topic", "list"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("audited"));

    for (token, says) in [
        (None, "no bearer token"),
        (Some(expired.as_str()), "token expired"),
        (Some("not-a-token"), "malformed token"),
    ] {
        let out = run(&["topic", "list"], token);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("unauthenticated") && err.contains(says),
            "{err}"
        );
    }

    assert!(broker.stop().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("request refused"),
        "the refusals are logged"
    );
    for secret in [&good, &expired] {
        // Any part of a token: its signature is what would let a reader replay it.
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!logged.contains(signature), "a token in the broker's log");
    }
}
