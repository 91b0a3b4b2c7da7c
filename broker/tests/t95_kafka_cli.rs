//! Records cross between kcat (librdkafka, through the Kafka listener) and the `rafka`
//! CLI (gRPC) byte for byte: keys, values, headers, timestamps, compressed both ways.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Broker;

fn kcat(args: &[&str], stdin: &[u8]) -> String {
    // Not the librdkafka of cargo's build paths (LD_LIBRARY_PATH), kcat's own.
    let mut child = Command::new("kcat")
        .env_remove("LD_LIBRARY_PATH")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat (bash .ci/run installs it)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn records_cross_between_kcat_and_the_rafka_cli_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    let kafka = b
        .kafka
        .clone()
        .expect("rafka start prints its Kafka listener");
    let created = b.rafka(&["topic", "create", "mix", "--partitions", "1"], None);
    assert!(created.status.success(), "{created:?}");

    // kcat writes (snappy, a header), the rafka CLI reads.
    let lines: String = (0..50).map(|i| format!("k{i}:v{i} ✓\n")).collect();
    kcat(
        &[
            "-b", &kafka, "-P", "-t", "mix", "-p", "0", "-K", ":", "-z", "snappy", "-H", "src=kcat",
        ],
        lines.as_bytes(),
    );
    let by_kcat = kcat(
        &[
            "-b",
            &kafka,
            "-C",
            "-t",
            "mix",
            "-p",
            "0",
            "-o",
            "beginning",
            "-c",
            "50",
            "-q",
            "-f",
            "%o|%k|%s|%h|%T\\n",
        ],
        b"",
    );
    let read = b.rafka(
        &[
            "consume",
            "mix",
            "--from-beginning",
            "--max-messages",
            "50",
            "--timeout-ms",
            "10000",
            "--format",
            "{offset}|{key}|{value}|{headers}|{timestamp}",
        ],
        None,
    );
    assert!(read.status.success(), "{read:?}");
    let by_rafka = String::from_utf8(read.stdout).unwrap();
    assert_eq!(by_rafka, by_kcat);
    assert!(by_rafka.starts_with("0|k0|v0 ✓|src=kcat|"), "{by_rafka}");

    // The rafka CLI writes (zstd), kcat reads.
    let wrote = b.rafka(
        &[
            "produce",
            "mix",
            "--key-separator",
            ":",
            "--compression",
            "zstd",
        ],
        Some("a:1\nb:2 ✓\n"),
    );
    assert!(wrote.status.success(), "{wrote:?}");
    let tail = kcat(
        &[
            "-b",
            &kafka,
            "-C",
            "-t",
            "mix",
            "-p",
            "0",
            "-o",
            "50",
            "-c",
            "2",
            "-q",
            "-f",
            "%o|%k|%s\\n",
        ],
        b"",
    );
    assert_eq!(tail, "50|a|1\n51|b|2 ✓\n");
    assert!(b.stop().success());
}
