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
             jwks_file = \"{}\"\nsuper_users = [\"ops\"]\n",
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

    // ACLs through the CLI: ops (a super user) lets dev write `audited`.
    let dev = signer
        .sign(
            "k1",
            &json!({"iss": "https://issuer.test", "aud": "rafka", "sub": "dev", "exp": now + 600}),
        )
        .unwrap();
    let produce_as = |token: &str| {
        let mut child = Command::new(RAFKA)
            .arg("--bootstrap")
            .arg(&broker.addr)
            .args(["produce", "audited"])
            .env("RAFKA_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = produce_as(&dev);
    assert!(!out.status.success(), "dev wrote without an ACL");
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    let grant = [
        "acl",
        "add",
        "--principal",
        "User:dev",
        "--topic",
        "audited",
        "--operation",
        "write,describe",
    ];
    let out = run(&grant, Some(&good));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("added 2 ACL entries"));
    let listed = run(&["acl", "list", "--principal", "User:dev"], Some(&good));
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("allow") && listed.contains("topic audited"),
        "{listed}"
    );
    let out = produce_as(&dev);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut revoke = grant;
    revoke[1] = "remove";
    let out = run(&revoke, Some(&good));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 2 ACL entries"));
    let out = run(
        &[
            "acl",
            "add",
            "--principal",
            "dev",
            "--cluster",
            "--operation",
            "all",
        ],
        Some(&good),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("User:<name>"));

    assert!(broker.stop().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("request refused"),
        "the refusals are logged"
    );
    for secret in [&good, &expired, &dev] {
        // Any part of a token: its signature is what would let a reader replay it.
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!logged.contains(signature), "a token in the broker's log");
    }
}
