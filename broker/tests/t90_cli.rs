//! The `rafka` binary end to end: start a broker, create a topic, produce from stdin,
//! consume, and shut down on SIGTERM.

use std::process::{Output, Stdio};

mod common;

use common::Broker;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn create_produce_consume_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let out = broker.rafka(
        &[
            "topic",
            "create",
            "cli",
            "--partitions",
            "2",
            "--config",
            "retention.ms=3600000",
        ],
        None,
    );
    assert!(ok(&out).contains("created topic cli"));
    assert!(ok(&broker.rafka(&["topic", "list"], None))
        .lines()
        .any(|l| l == "cli"));

    let lines: String = (0..50).map(|i| format!("k{}:value {i}\n", i % 7)).collect();
    ok(&broker.rafka(&["produce", "cli", "--key-separator", ":"], Some(&lines)));

    let out = ok(&broker.rafka(
        &[
            "consume",
            "cli",
            "--from-beginning",
            "--max-messages",
            "50",
            "--format",
            "{key}|{value}|{partition}",
        ],
        None,
    ));
    let mut got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 50);
    // A key always lands on one partition.
    let mut partition_of = std::collections::HashMap::new();
    for l in &got {
        let f: Vec<&str> = l.split('|').collect();
        assert_eq!(
            *partition_of.entry(f[0].to_string()).or_insert(f[2]),
            f[2],
            "{l}"
        );
    }
    got.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("k{}|value {i}", i % 7)).collect();
    want.sort();
    let got_kv: Vec<String> = got
        .iter()
        .map(|l| l.rsplit_once('|').unwrap().0.to_string())
        .collect();
    let mut got_kv = got_kv;
    got_kv.sort();
    assert_eq!(got_kv, want);

    // One partition, from an offset.
    let out = ok(&broker.rafka(
        &[
            "consume",
            "cli",
            "--partition",
            "0",
            "--offset",
            "1",
            "--max-messages",
            "1",
            "--format",
            "{offset}",
        ],
        None,
    ));
    assert_eq!(out.trim(), "1");

    // A group resumes where its last run stopped: 20, then the other 30, no overlap.
    let run = |n: &str| {
        ok(&broker.rafka(
            &[
                "consume",
                "cli",
                "--group",
                "cli-readers",
                "--from-beginning",
                "--max-messages",
                n,
                "--format",
                "{partition}@{offset}",
            ],
            None,
        ))
    };
    let first = run("20");
    let second = run("30");
    let mut all: Vec<&str> = first.lines().chain(second.lines()).collect();
    assert_eq!((first.lines().count(), second.lines().count()), (20, 30));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 50, "no record read twice: {first} / {second}");

    // The group: listed, no lag, reset to the start (lag = everything), deleted.
    let list = ok(&broker.rafka(&["group", "list"], None));
    assert!(list.lines().any(|l| l == "cli-readers"), "{list}");
    let lags = |text: &str| -> Vec<(u64, u64, u64)> {
        text.lines()
            .filter(|l| l.trim_start().starts_with("cli-"))
            .map(|l| {
                let f: Vec<u64> = l
                    .split_whitespace()
                    .skip(1)
                    .take(3)
                    .map(|n| n.parse().unwrap())
                    .collect();
                (f[0], f[1], f[2])
            })
            .collect()
    };
    let described = ok(&broker.rafka(&["group", "describe", "cli-readers"], None));
    let rows = lags(&described);
    assert_eq!(rows.len(), 2, "{described}");
    assert!(
        rows.iter().all(|&(c, e, lag)| c == e && lag == 0),
        "{described}"
    );
    ok(&broker.rafka(
        &[
            "group",
            "reset-offsets",
            "cli-readers",
            "--topic",
            "cli",
            "--to-earliest",
        ],
        None,
    ));
    let described = ok(&broker.rafka(&["group", "describe", "cli-readers"], None));
    let rows = lags(&described);
    assert!(
        rows.iter().all(|&(c, e, lag)| c == 0 && lag == e),
        "{described}"
    );
    assert_eq!(rows.iter().map(|r| r.2).sum::<u64>(), 50, "{described}");
    assert_eq!(run("50").lines().count(), 50, "re-read from the start");
    assert!(ok(&broker.rafka(&["group", "delete", "cli-readers"], None)).contains("deleted"));
    let out = broker.rafka(&["group", "delete", "cli-readers"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown group"));

    let describe = ok(&broker.rafka(&["topic", "describe", "cli"], None));
    assert!(describe.contains("retention.ms = 3600000"), "{describe}");

    // More partitions for a running topic; its records stay.
    ok(&broker.rafka(&["topic", "alter", "cli", "--partitions", "4"], None));
    let describe = ok(&broker.rafka(&["topic", "describe", "cli"], None));
    assert!(describe.contains("partitions 4"), "{describe}");
    let out = broker.rafka(&["topic", "alter", "cli", "--partitions", "2"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be larger"));

    // Errors: one line, non-zero exit.
    let out = broker.rafka(&["topic", "describe", "missing"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("unknown topic `missing`"), "{err}");

    assert!(broker.stop().success(), "graceful shutdown on SIGTERM");
}

#[test]
fn a_dev_cluster_replicates_and_reports_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Broker::dev_cluster(3, dir.path());
    assert_eq!(cluster.addr.split(',').count(), 3, "{}", cluster.addr);
    let out = cluster.rafka(
        &[
            "topic",
            "create",
            "replicated",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        None,
    );
    assert!(ok(&out).contains("created topic replicated"));
    let lines: String = (0..30).map(|i| format!("k{i}:v{i}\n")).collect();
    ok(&cluster.rafka(
        &["produce", "replicated", "--key-separator", ":"],
        Some(&lines),
    ));
    let out = ok(&cluster.rafka(
        &[
            "consume",
            "replicated",
            "--from-beginning",
            "--max-messages",
            "30",
            "--format",
            "{value}",
        ],
        None,
    ));
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(got, want);

    let status = ok(&cluster.rafka(&["cluster", "status"], None));
    assert_eq!(status.matches(" up").count(), 3, "{status}");
    for p in 0..3 {
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("replicated-{p} ")))
            .unwrap_or_else(|| panic!("no line for partition {p}: {status}"));
        assert!(line.contains("(leader)"), "{line}");
    }
    let describe = ok(&cluster.rafka(&["topic", "describe", "replicated"], None));
    assert_eq!(
        describe.matches("1,2,3").count()
            + describe.matches("2,3,1").count()
            + describe.matches("3,1,2").count(),
        3,
        "{describe}"
    );

    // Move partition 0 to two of the brokers, waiting until it is done; its records stay.
    let out = ok(&cluster.rafka(
        &[
            "topic",
            "reassign",
            "replicated",
            "--partition",
            "0",
            "--replicas",
            "2,3",
        ],
        None,
    ));
    assert!(out.contains("replicated-0 runs on [2, 3]"), "{out}");
    let describe = ok(&cluster.rafka(&["topic", "describe", "replicated"], None));
    let row = describe
        .lines()
        .find(|l| l.split_whitespace().next() == Some("0"))
        .unwrap_or_else(|| panic!("{describe}"));
    assert!(row.contains(" 2,3 "), "{row}");
    assert!(!row.contains("moving"), "{row}");
    let out = ok(&cluster.rafka(
        &[
            "consume",
            "replicated",
            "--from-beginning",
            "--max-messages",
            "30",
        ],
        None,
    ));
    assert_eq!(out.lines().count(), 30);

    // Replication factor 2 for the whole topic; the command waits for the moves.
    ok(&cluster.rafka(
        &["topic", "alter", "replicated", "--replication-factor", "2"],
        None,
    ));
    let describe = ok(&cluster.rafka(&["topic", "describe", "replicated"], None));
    for p in ["0", "1", "2"] {
        let row = describe
            .lines()
            .find(|l| l.split_whitespace().next() == Some(p))
            .unwrap_or_else(|| panic!("{describe}"));
        let replicas = row.split_whitespace().nth(2).unwrap();
        assert_eq!(replicas.split(',').count(), 2, "{row}");
    }
    assert!(cluster.stop().success(), "graceful shutdown on SIGTERM");
}

/// `rafka start` with RUST_LOG=info, stderr captured: its log lines, once SIGTERM
/// stopped it.
fn start_logs(extra: &[&str]) -> String {
    logs_of(extra, "info", |_| {})
}

/// The log lines of a `rafka start` with `extra` arguments and `RUST_LOG=filter`, after
/// `work` ran against it and SIGTERM stopped it.
fn logs_of(extra: &[&str], filter: &str, work: impl FnOnce(&Broker)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::spawn(dir.path(), extra, filter, Stdio::piped());
    let mut stderr = broker.child.stderr.take().unwrap();
    work(&broker);
    let status = broker.stop();
    assert!(status.success(), "exit {status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut logs).unwrap();
    logs
}

#[test]
fn logs_are_json_lines_when_asked_and_plain_text_off_a_terminal() {
    let json = start_logs(&["--log-format", "json"]);
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{l}"
        );
    }
    let text = start_logs(&[]);
    assert!(!text.trim().is_empty(), "no log lines");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes off a terminal: {text}"
    );
}

#[test]
fn a_request_runs_in_a_span_with_the_clients_request_id_and_its_topic() {
    let filter = "info,rafka_broker::server::requests=debug";
    let mut echoed = None;
    let logs = logs_of(&["--log-format", "json"], filter, |broker| {
        ok(&broker.rafka(&["topic", "create", "traced"], None));
        let rt = tokio::runtime::Runtime::new().unwrap();
        echoed = rt.block_on(async {
            let mut client = rafka_proto::v1::broker_client::BrokerClient::connect(format!(
                "http://{}",
                broker.addr
            ))
            .await
            .unwrap();
            let mut request = tonic::Request::new(rafka_proto::v1::ListOffsetsRequest {
                topic: "traced".into(),
                partition: 0,
                spec: Some(rafka_proto::v1::list_offsets_request::Spec::Latest(true)),
            });
            request
                .metadata_mut()
                .insert("x-request-id", "rid-test-42".parse().unwrap());
            let answer = client.list_offsets(request).await.unwrap();
            answer
                .metadata()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_string())
        });
    });
    assert_eq!(echoed.as_deref(), Some("rid-test-42"));
    let line = logs
        .lines()
        .find(|l| l.contains("rid-test-42"))
        .unwrap_or_else(|| panic!("no log line with the request id: {logs}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let span = &v["span"];
    assert_eq!(span["name"], "request", "{line}");
    assert_eq!(span["method"], "ListOffsets", "{line}");
    assert_eq!(span["topic"], "traced", "{line}");
    assert_eq!(span["partition"], 0, "{line}");
    assert_eq!(v["fields"]["code"], "OK", "{line}");
}
