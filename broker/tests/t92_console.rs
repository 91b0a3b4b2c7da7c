//! The web console as a person uses it: a `rafka start` process with an HTTP port, and
//! Chromium driven through chromedriver (WebDriver). It creates a topic, the CLI
//! produces into it, the message browser shows the records (JSON pretty-printed, markup
//! as text), a group's lag goes to 0 while a consumer runs and back after an offset
//! reset from the page. A screenshot of every page is saved under
//! `target/tmp/console-screenshots/`. Bad input to the HTTP routes is checked without a
//! browser.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http, Broker, RAFKA};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Longest wait for anything the page should come to show.
const WAIT: Duration = Duration::from_secs(30);

/// A chromedriver process on a port of its choosing.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> Self {
        let mut child = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let port = loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "chromedriver exited");
            if let Some(rest) = line
                .trim()
                .strip_prefix("ChromeDriver was started successfully on port ")
            {
                break rest.trim_end_matches('.').to_string();
            }
        };
        // Keep reading its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with a fresh profile in `profile`.
async fn browser(driver: &ChromeDriver, profile: &Path) -> Client {
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("start a Chromium session")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Waits until the element at `css` exists and its text satisfies `ok`; its text.
async fn wait_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let mut last = String::from("(no such element)");
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if ok(&t) {
                    return t;
                }
                last = t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: `{css}` still shows {last:?} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn field(c: &Client, css: &str, text: &str) {
    let e = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

const XSS: &str = r#"<img src=x onerror="document.title='pwned'">"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_creates_browses_and_resets_offsets_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::spawn(
        dir.path(),
        &["--http-listen", "127.0.0.1:0"],
        "warn",
        Stdio::inherit(),
    );
    let base = format!("http://{}/ui/", broker.http.clone().unwrap());
    let driver = ChromeDriver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    // The overview: one broker, up.
    c.goto(&base).await.unwrap();
    wait_text(&c, "#stat-brokers", "brokers up", |t| t == "1 / 1").await;
    wait_text(&c, "#brokers td.up", "broker state", |t| t == "up").await;
    shot(&c, "overview").await;

    // A topic created from the page.
    c.goto(&format!("{base}#/topics")).await.unwrap();
    field(&c, "#new-topic-name", "console-orders").await;
    field(&c, "#new-topic-partitions", "2").await;
    click(&c, "#new-topic-create").await;
    let row = "#topics-table tr[data-topic='console-orders'] td:nth-child(2)";
    wait_text(&c, row, "the new topic's partitions", |t| t == "2").await;
    // A name with markup is refused, and the refusal shows it as text.
    field(&c, "#new-topic-name", "<b>bold</b>").await;
    click(&c, "#new-topic-create").await;
    let error = wait_text(&c, "#error", "the refusal", |t| t.contains("<b>bold</b>")).await;
    assert!(
        error.contains("invalid") || error.contains("name"),
        "{error}"
    );
    assert!(c
        .find_all(Locator::Css("#error b"))
        .await
        .unwrap()
        .is_empty());
    shot(&c, "topics").await;

    // Records from the CLI: JSON, markup, plain text.
    let lines = format!("k1\t{{\"id\":1,\"item\":\"book\"}}\nk2\t{XSS}\nk3\tplain text\n");
    let out = broker.rafka(
        &[
            "produce",
            "console-orders",
            "--partition",
            "0",
            "--key-separator",
            "\t",
        ],
        Some(&lines),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    c.goto(&format!("{base}#/topics/console-orders"))
        .await
        .unwrap();
    let hw = "#partitions-table tr[data-partition='0'] td:nth-child(5)";
    wait_text(&c, hw, "partition 0's high watermark", |t| t == "3").await;
    shot(&c, "topic").await;

    c.goto(&format!(
        "{base}#/topics/console-orders/messages?partition=0"
    ))
    .await
    .unwrap();
    wait_text(
        &c,
        "#messages-table tr[data-offset='2'] td.value",
        "the third record",
        |t| t == "plain text",
    )
    .await;
    let json_cell = c
        .find(Locator::Css("#messages-table tr[data-offset='0'] td.value"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(json_cell, "{\n  \"id\": 1,\n  \"item\": \"book\"\n}");
    let markup = c
        .find(Locator::Css("#messages-table tr[data-offset='1'] td.value"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(markup, XSS, "markup in a value is shown as text");
    assert!(c
        .find_all(Locator::Css("#page img"))
        .await
        .unwrap()
        .is_empty());
    assert_ne!(c.title().await.unwrap(), "pwned");
    shot(&c, "messages").await;
    // The same records as hex.
    c.find(Locator::Css("#browse-format"))
        .await
        .unwrap()
        .select_by_value("hex")
        .await
        .unwrap();
    wait_text(
        &c,
        "#messages-table tr[data-offset='2'] td.value",
        "the third record in hex",
        |t| t.starts_with("000000  70 6c 61 69 6e"),
    )
    .await;
    shot(&c, "messages-hex").await;

    // A group with offsets at 0 (set by the CLI): lag 3.
    let group = "console-readers";
    let out = broker.rafka(
        &[
            "group",
            "reset-offsets",
            group,
            "--topic",
            "console-orders",
            "--to-earliest",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.goto(&format!("{base}#/groups/{group}")).await.unwrap();
    wait_text(&c, "#group-lag", "the group's lag before", |t| t == "3").await;
    shot(&c, "group-before").await;

    // A consumer of the group reads the three records; the page refreshes to lag 0.
    let mut consumer = Command::new(RAFKA)
        .args(["--bootstrap", &broker.addr, "consume", "console-orders"])
        .args([
            "--group",
            group,
            "--max-messages",
            "3",
            "--timeout-ms",
            "30000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_text(&c, "#group-lag", "the group's lag while consuming", |t| {
        t == "0"
    })
    .await;
    assert!(consumer.wait().unwrap().success());
    wait_text(
        &c,
        "#group-members",
        "members after the consumer left",
        |t| t == "0",
    )
    .await;
    shot(&c, "group-consumed").await;

    // Reset from the page: back to the oldest records, lag 3 again.
    c.find(Locator::Css("#reset-to"))
        .await
        .unwrap()
        .select_by_value("earliest")
        .await
        .unwrap();
    click(&c, "#reset-go").await;
    wait_text(&c, "#notice", "the reset's notice", |t| {
        t.starts_with("Reset")
    })
    .await;
    wait_text(&c, "#group-lag", "the group's lag after the reset", |t| {
        t == "3"
    })
    .await;
    shot(&c, "group-reset").await;

    // A group whose name is markup is listed as text.
    let out = broker.rafka(
        &[
            "group",
            "reset-offsets",
            XSS,
            "--topic",
            "console-orders",
            "--to-latest",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.goto(&format!("{base}#/groups")).await.unwrap();
    wait_text(&c, "#groups-table", "the group list", |t| t.contains(XSS)).await;
    assert!(c
        .find_all(Locator::Css("#page img"))
        .await
        .unwrap()
        .is_empty());
    assert_ne!(c.title().await.unwrap(), "pwned");
    shot(&c, "groups").await;

    c.close().await.unwrap();
    assert!(broker.stop().success());
}

/// `rafka ARGS` as the admin of a broker with auth; its stdout.
fn as_admin(broker: &Broker, secret: &str, args: &[&str]) -> String {
    let out = Command::new(RAFKA)
        .args(["--bootstrap", &broker.addr])
        .args(args)
        .env("RAFKA_CLIENT_ID", "admin")
        .env("RAFKA_CLIENT_SECRET", secret)
        .env(
            "RAFKA_TOKEN_URL",
            format!("http://{}/oauth/token", broker.http.as_ref().unwrap()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rafka {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_the_console_logs_in_and_shows_what_the_acls_allow() {
    let dir = tempfile::tempdir().unwrap();
    let admin_secret = "console-admin-secret";
    let hash = rafka_broker::auth::issuer::hash_secret(admin_secret).unwrap();
    let config = dir.path().join("rafka.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nenabled = true\nbuiltin_issuer = true\nsuper_users = [\"admin\"]\n\
             [auth.clients.admin]\nsecret_hash = \"{hash}\"\n"
        ),
    )
    .unwrap();
    let broker = Broker::spawn(
        &dir.path().join("data"),
        &[
            "--http-listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        "warn",
        Stdio::inherit(),
    );
    // The first signing key is made once the broker serves: wait for a token.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = Command::new(RAFKA)
            .args(["--bootstrap", &broker.addr, "topic", "list"])
            .env("RAFKA_CLIENT_ID", "admin")
            .env("RAFKA_CLIENT_SECRET", admin_secret)
            .env(
                "RAFKA_TOKEN_URL",
                format!("http://{}/oauth/token", broker.http.as_ref().unwrap()),
            )
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "no token for the admin");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    as_admin(&broker, admin_secret, &["topic", "create", "visible"]);
    as_admin(&broker, admin_secret, &["topic", "create", "hidden"]);
    let created = as_admin(
        &broker,
        admin_secret,
        &["auth", "client", "create", "viewer"],
    );
    let secret = created
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("the new client's secret")
        .to_string();
    as_admin(
        &broker,
        admin_secret,
        &[
            "acl",
            "add",
            "--principal",
            "User:viewer",
            "--topic",
            "visible",
            "--operation",
            "describe",
        ],
    );

    let base = format!("http://{}/ui/", broker.http.clone().unwrap());
    let driver = ChromeDriver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    c.goto(&format!("{base}#/topics")).await.unwrap();
    // No token yet: the login form, and a wrong secret is refused on the page.
    field(&c, "#login-id", "viewer").await;
    field(&c, "#login-secret", "not-the-secret").await;
    shot(&c, "login").await;
    click(&c, "#login-submit").await;
    wait_text(&c, "#error", "a wrong secret's refusal", |t| {
        t.contains("wrong secret")
    })
    .await;
    field(&c, "#login-secret", &secret).await;
    click(&c, "#login-submit").await;
    // Logged in as viewer: the topics its ACLs let it describe, and no others.
    let row = "#topics-table tr[data-topic='visible'] td:nth-child(2)";
    wait_text(&c, row, "the visible topic", |t| t == "1").await;
    assert!(c
        .find_all(Locator::Css("#topics-table tr[data-topic='hidden']"))
        .await
        .unwrap()
        .is_empty());
    shot(&c, "topics-as-viewer").await;
    // Creating a topic is not among them: the refusal names the principal.
    field(&c, "#new-topic-name", "mine").await;
    click(&c, "#new-topic-create").await;
    wait_text(&c, "#error", "the create's refusal", |t| {
        t.contains("`viewer` may not create topic `mine`")
    })
    .await;
    // Logging out shows the login form again.
    click(&c, "#logout").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#login-id"))
        .await
        .expect("the login form after logging out");
    c.close().await.unwrap();
}

#[test]
fn bad_input_to_the_http_routes_gets_a_clear_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::spawn(
        dir.path(),
        &["--http-listen", "127.0.0.1:0"],
        "warn",
        Stdio::inherit(),
    );
    let h = broker.http.clone().unwrap();
    let get = |path: &str| http(&h, "GET", path, None);
    let json = "application/json";

    let (s, _, _) = get("/nothing");
    assert_eq!(s, 404);
    let (s, head, body) = get("/api/v1/nothing");
    assert_eq!(s, 404, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(body.contains("no such API route"), "{body}");
    // Over-long request targets.
    let (s, _, body) = get(&format!("/api/v1/topics?x={}", "a".repeat(10_000)));
    assert_eq!(s, 414, "{body}");
    // Paths that try to leave the console's files or name topics with `../`.
    for path in [
        "/ui/../../etc/passwd",
        "/ui/..%2F..%2Fetc%2Fpasswd",
        "/ui/nothing.js",
    ] {
        let (s, _, body) = get(path);
        assert_eq!(s, 404, "{path}: {body}");
        assert!(!body.contains("root:"), "{path}: {body}");
    }
    let (s, _, body) = get("/api/v1/topics/..%2F..%2Fetc%2Fpasswd");
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("unknown topic"), "{body}");
    // The console's page comes with a policy allowing only its own scripts.
    let (s, head, body) = get("/ui/");
    assert_eq!(s, 200);
    assert!(body.contains("<script src=\"/ui/app.js\""), "{body}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );

    // Creating topics: markup in a name, bad JSON, no JSON, a body too large.
    let post = |path: &str, ct: &str, b: &[u8]| http(&h, "POST", path, Some((ct, b)));
    let (s, head, body) = post(
        "/api/v1/topics",
        json,
        br#"{"name":"<script>alert(1)</script>"}"#,
    );
    assert_eq!(s, 400, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(body.contains("topic name"), "{body}");
    let (s, _, body) = post("/api/v1/topics", json, b"{not json");
    assert_eq!(s, 400, "{body}");
    let (s, _, body) = post("/api/v1/topics", "", br#"{"name":"t"}"#);
    assert_eq!(s, 415, "{body}");
    let big = format!(
        r#"{{"name":"t","configs":{{"x":"{}"}}}}"#,
        "a".repeat(100_000)
    );
    let (s, _, body) = post("/api/v1/topics", json, big.as_bytes());
    assert_eq!(s, 413, "{body}");
    let (s, _, body) = post(
        "/api/v1/topics",
        json,
        br#"{"name":"orders","partitions":2}"#,
    );
    assert_eq!(s, 201, "{body}");
    let (s, _, body) = post("/api/v1/topics", json, br#"{"name":"orders"}"#);
    assert_eq!(s, 409, "{body}");
    let (s, _, body) = http(
        &h,
        "PUT",
        "/api/v1/topics/orders/configs",
        Some((json, br#"{"configs":{"no.such.config":"1"}}"#)),
    );
    assert_eq!(s, 400, "{body}");

    // Browsing: bad offsets, limits and partitions.
    for (query, status) in [
        ("offset=abc", 400),
        ("offset=-1", 400),
        ("offset=99999999999999999999999", 400),
        ("limit=0", 400),
        ("limit=100000", 400),
        ("offset=1&timestamp=5", 400),
        ("partition=7", 404),
        ("partition=4294967296", 400),
    ] {
        let (s, _, body) = get(&format!("/api/v1/topics/orders/messages?{query}"));
        assert_eq!(s, status, "{query}: {body}");
    }
    // Past the end: nothing, at once.
    let (s, _, body) = get("/api/v1/topics/orders/messages?offset=18446744073709551615");
    assert_eq!(s, 200, "{body}");
    assert!(body.contains(r#""messages":[]"#), "{body}");
    let (s, _, body) = get("/api/v1/topics/nothing/messages");
    assert_eq!(s, 404, "{body}");

    // Groups: an unknown reset target, a missing value, an unknown topic.
    let reset = |b: &[u8]| post("/api/v1/groups/g/reset", json, b);
    let (s, _, body) = reset(br#"{"topic":"orders","to":"sideways"}"#);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("unknown reset target"), "{body}");
    let (s, _, body) = reset(br#"{"topic":"orders","to":"offset"}"#);
    assert_eq!(s, 400, "{body}");
    let (s, _, body) = reset(br#"{"topic":"nothing","to":"earliest"}"#);
    assert_eq!(s, 404, "{body}");
    let (s, _, body) = http(&h, "DELETE", "/api/v1/topics/nothing", None);
    assert_eq!(s, 404, "{body}");
    let (s, _, _) = http(&h, "POST", "/metrics", Some((json, b"{}")));
    assert_eq!(s, 405);
}
