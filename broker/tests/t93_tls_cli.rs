//! `rafka dev-cluster --tls`: TLS one flag away. The cluster it starts replicates over
//! TLS peer links, and the CLI reaches it with the CA it prints (`--tls-ca`); without
//! it, the CLI gets one line naming the problem.

mod common;

use common::Broker;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "rafka failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn a_dev_cluster_with_tls_serves_the_cli_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, printed) = Broker::dev_cluster_with(3, dir.path(), &["--tls"]);
    assert_eq!(printed[0], "--tls-ca", "{printed:?}");
    let ca = printed[1].clone();
    assert!(std::path::Path::new(&ca).exists(), "{ca}");
    let tls = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--tls-ca".to_string(), ca.clone()];
        all.extend(args.iter().map(|s| s.to_string()));
        all
    };
    let run = |args: Vec<String>, stdin: Option<&str>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.rafka(&args, stdin)
    };
    let out = ok(&run(
        tls(&[
            "topic",
            "create",
            "sealed",
            "--partitions",
            "2",
            "--replication-factor",
            "3",
        ]),
        None,
    ));
    assert!(out.contains("created topic sealed"), "{out}");
    let lines: String = (0..20).map(|i| format!("v{i}\n")).collect();
    ok(&run(tls(&["produce", "sealed"]), Some(&lines)));
    let out = ok(&run(
        tls(&[
            "consume",
            "sealed",
            "--from-beginning",
            "--max-messages",
            "20",
            "--format",
            "{value}",
        ]),
        None,
    ));
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(got, want);

    // With the client certificate it printed, too.
    let mut with_cert = printed.clone();
    with_cert.extend(["topic", "list"].map(String::from));
    assert!(ok(&run(with_cert, None)).contains("sealed"));

    // Plaintext to a TLS cluster: one line, non-zero exit.
    let out = cluster.rafka(&["topic", "list"], None);
    assert!(!out.status.success(), "plaintext was served");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A certificate without its key.
    let out = cluster.rafka(
        &["--tls-ca", &ca, "--tls-cert", &printed[3], "topic", "list"],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs its key"), "{err}");
}
