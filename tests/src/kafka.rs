//! Real Kafka clients against rafka's Kafka listener: `kcat` (Debian's package, librdkafka
//! inside) and Python's `confluent-kafka` (librdkafka) and `kafka-python`, from a virtual
//! environment under `target/` that is made on first use.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The Python packages the tests drive, pinned.
pub const PYTHON_PACKAGES: [&str; 2] = ["confluent-kafka==2.16.1", "kafka-python==3.0.12"];

/// Longest one client command may run.
pub const CLIENT_WAIT: Duration = Duration::from_secs(120);

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// Runs `cmd` with `stdin`, killing it after `limit`; panics naming it if it cannot run.
pub fn run(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (bash .ci/run installs it)"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            // SAFETY: kill(2) on the child's pid; a reaped pid gets ESRCH at worst.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("wait for the client");
    let _ = tx.send(());
    let _ = killer.join();
    let _ = writer.join();
    out
}

/// `kcat` with `args`, `stdin` fed to it; panics with its stderr unless it succeeds.
pub fn kcat(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = run(Command::new("kcat").args(args), stdin, CLIENT_WAIT);
    assert!(
        out.status.success(),
        "kcat {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The virtual environment's Python with [`PYTHON_PACKAGES`], made if missing (one
/// process makes it; others racing it use the one that lands first).
pub fn python() -> PathBuf {
    let venv = target_dir().join("kafka-venv");
    let python = venv.join("bin/python");
    if ready(&python) {
        return python;
    }
    let building = target_dir().join(format!("kafka-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&building)
        .status()
        .expect("python3 -m venv (Debian: python3-venv)");
    assert!(status.success(), "python3 -m venv failed");
    let out = run(
        Command::new(building.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PYTHON_PACKAGES),
        b"",
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "pip install {PYTHON_PACKAGES:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&building, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(ready(&python), "no usable {}", python.display());
    python
}

fn ready(python: &std::path::Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import confluent_kafka, kafka"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Runs a Python `script` with `args` (as `sys.argv[1:]`); panics with its output unless
/// it exits 0. Returns its standard output.
pub fn python_script(script: &str, args: &[&str]) -> String {
    let out = run(
        Command::new(python()).arg("-c").arg(script).args(args),
        b"",
        CLIENT_WAIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
