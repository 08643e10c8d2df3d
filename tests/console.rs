//! The operator console in a real headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini): an API error rendered as its problem,
//! entering a token, deploying reducers from a file, a log's events and
//! aggregate, two versions compared, a rollback, the live feed, health,
//! and the page on a narrow window. Keys, not the mouse, submit the forms.
//!
//! Screenshots of each screen are saved under
//! `target/test-output/console/`. Chromium and chromedriver come from
//! Debian's `chromium` and `chromium-driver` packages, which `scripts/test`
//! installs; without them this test is skipped (and fails under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventlogs_e2e::servers::free_port;
use eventlogs_e2e::{TestDaemon, config, json, plugin_path, sqlite_database, token, tools_present};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ADMIN: &str = "console-admin-secret-0123456789";
/// How long the page may take to show what a step expects.
const PATIENCE: Duration = Duration::from_secs(15);

/// chromedriver on a free port, killed on drop.
struct Driver {
    port: u16,
    child: Child,
}

impl Driver {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { port, child }
    }

    /// A headless Chromium session with a profile of its own, its
    /// background networking off (this machine's network is closed).
    async fn browser(&self, profile: &Path) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/console");
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The element `id` once visible.
async fn shown(browser: &Client, id: &str) -> Element {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(element) = browser.find(Locator::Id(id)).await
            && element.is_displayed().await.unwrap_or(false)
        {
            return element;
        }
        assert!(Instant::now() < deadline, "#{id} never became visible");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the text of `id` contains `wanted`; returns the text.
async fn text_with(browser: &Client, id: &str, wanted: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = match browser.find(Locator::Id(id)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(wanted) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "#{id} never showed {wanted:?}; it shows {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Types `text` into the field `id` and presses Enter (submitting its form).
async fn enter(browser: &Client, id: &str, text: &str) {
    let field = shown(browser, id).await;
    field.clear().await.unwrap();
    field
        .send_keys(&format!("{text}{}", char::from(Key::Enter)))
        .await
        .unwrap();
}

/// Deploys `file` as reducer `name` through the deploy form.
async fn deploy(browser: &Client, name: &str, file: &Path) {
    let field = shown(browser, "deploy-name").await;
    field.clear().await.unwrap();
    field.send_keys(name).await.unwrap();
    // chromedriver takes only canonical paths.
    let file = file.canonicalize().unwrap();
    shown(browser, "deploy-file")
        .await
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    shown(browser, "deploy-submit").await.click().await.unwrap();
}

/// GET `path` from the API, which must succeed.
async fn read(daemon: &TestDaemon, path: &str) -> Value {
    api(daemon, reqwest::Method::GET, path, Value::Null).await
}

async fn api(daemon: &TestDaemon, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, body) = json(
        daemon
            .request(method, path)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status < 300, "{status}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_console_in_a_real_browser() {
    if !tools_present(&[CHROMIUM, CHROMEDRIVER]) {
        return;
    }
    let mut settings = config(&sqlite_database());
    settings.tokens = vec![token(ADMIN, "read,write,admin")];
    let mut daemon = TestDaemon::start(settings).await;
    daemon.token = Some(ADMIN.into());
    let profile =
        std::env::temp_dir().join(format!("eventlogs-test-chromium-{}", uuid::Uuid::now_v7()));
    let driver = Driver::start().await;
    let browser = driver.browser(&profile).await;
    let console = format!("{}/console", daemon.url);

    // Without a token the API answers 401: the page shows the problem.
    browser.goto(&console).await.unwrap();
    shown(&browser, "problem").await;
    text_with(&browser, "problem-title", "Missing or unknown bearer token").await;
    text_with(&browser, "problem-status", "401").await;
    screenshot(&browser, "01-error-without-token").await;

    // The token, entered once with the keyboard, lists the reducers.
    enter(&browser, "token", ADMIN).await;
    text_with(&browser, "reducers", "payment").await;
    text_with(&browser, "token-state", "token set").await;
    screenshot(&browser, "02-reducers").await;

    // A file that is not a component: its problem is shown, nothing stored.
    let junk = profile.join("not-a-component.wasm");
    std::fs::create_dir_all(&profile).unwrap();
    std::fs::write(&junk, b"this is not WebAssembly").unwrap();
    deploy(&browser, "tally", &junk).await;
    let problem = text_with(&browser, "problem-type", "invalid-reducer").await;
    assert!(problem.contains("urn:eventlogs:problem:"), "{problem}");
    text_with(&browser, "deploy-result", "Not deployed").await;
    screenshot(&browser, "03-deploy-refused").await;

    // Two versions of `tally` deployed from files.
    deploy(&browser, "tally", &plugin_path("counter")).await;
    text_with(&browser, "deploy-result", "Deployed tally").await;
    text_with(&browser, "reducers", "tally").await;
    let tally_log = daemon.create_log("tally", vec![json!({"n": 1})]).await;
    deploy(&browser, "tally", &plugin_path("fixture_single_event")).await;
    text_with(&browser, "deploy-result", "replayed 1 existing log").await;
    text_with(&browser, "reducer-tally", "2 stored version(s)").await;
    screenshot(&browser, "04-deployed").await;

    // A log created through the API: its events and its aggregate.
    let payment_log = daemon
        .create_log(
            "payment",
            vec![
                json!({"Authorized": {"amount": 10000, "approval_code": "xyz123"}}),
                json!({"Captured": {"amount": 2500}}),
            ],
        )
        .await;
    shown(&browser, "nav-log").await.click().await.unwrap();
    enter(&browser, "log-id", &payment_log).await;
    text_with(&browser, "log-metadata", &payment_log).await;
    let events = text_with(&browser, "log-events", "xyz123").await;
    assert!(events.contains("Captured"), "{events}");
    text_with(&browser, "events-range", "events 0 to 1").await;
    text_with(&browser, "log-aggregate-facts", "through index").await;
    let expected = read(&daemon, &format!("/v1/logs/{payment_log}/aggregate")).await;
    let shown_aggregate: Value =
        serde_json::from_str(&shown(&browser, "log-aggregate").await.text().await.unwrap())
            .unwrap();
    assert_eq!(shown_aggregate, expected["aggregate"]);
    screenshot(&browser, "05-log").await;

    // The tally log under its two versions, side by side.
    enter(&browser, "log-id", &tally_log).await;
    text_with(&browser, "log-metadata", &tally_log).await;
    // The version pickers are the tally's once they offer its first.
    let tally = read(&daemon, "/v1/reducers/tally").await;
    let first = tally["versions"][0]["version"].as_str().unwrap().to_owned();
    text_with(&browser, "compare-left", &first[..12]).await;
    text_with(&browser, "compare-right", "(active)").await;
    // By keyboard: Tab from the second version to the button, Enter.
    shown(&browser, "compare-right")
        .await
        .send_keys(&char::from(Key::Tab).to_string())
        .await
        .unwrap();
    let focused = browser.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("compare-submit")
    );
    focused
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    text_with(&browser, "compare-left-result", "\"count\": 1").await;
    text_with(&browser, "compare-right-result", "\"seen\": true").await;
    text_with(&browser, "compare-verdict", "differ").await;
    browser
        .execute(
            "document.getElementById('compare-form').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    screenshot(&browser, "06-compare").await;

    // Roll tally back to its first version.
    shown(&browser, "nav-reducers").await.click().await.unwrap();
    let activate = format!("#reducer-tally button[data-version='{first}']");
    // The list is drawn again when the view opens: a button found in the
    // earlier drawing goes stale, so find and click until a click lands.
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(button) = browser.find(Locator::Css(&activate)).await
            && button.click().await.is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no Activate button for {first}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text_with(
        &browser,
        "reducer-tally",
        &format!("active: {}", &first[..12]),
    )
    .await;
    let tally = read(&daemon, "/v1/reducers/tally").await;
    assert_eq!(tally["active_version"], first.as_str());
    screenshot(&browser, "07-rolled-back").await;

    // An event holding markup is shown as text, never run as HTML.
    api(
        &daemon,
        reqwest::Method::POST,
        &format!("/v1/logs/{tally_log}/events"),
        json!({"event": {"note": "<b id=\"injected\">bold</b>"}}),
    )
    .await;
    shown(&browser, "nav-log").await.click().await.unwrap();
    enter(&browser, "log-id", &tally_log).await;
    text_with(&browser, "log-events", r#"<b id=\"injected\">bold</b>"#).await;
    assert!(browser.find(Locator::Id("injected")).await.is_err());

    // The live feed shows an event appended after it started.
    shown(&browser, "nav-feed").await.click().await.unwrap();
    shown(&browser, "feed-toggle").await.click().await.unwrap();
    text_with(&browser, "feed-state", "following").await;
    api(
        &daemon,
        reqwest::Method::POST,
        &format!("/v1/logs/{payment_log}/events"),
        json!({"event": {"Captured": {"amount": 777}}}),
    )
    .await;
    text_with(&browser, "feed-events", "777").await;
    screenshot(&browser, "08-feed").await;
    shown(&browser, "feed-toggle").await.click().await.unwrap();

    // Health: readiness, the cache, reducer failures.
    shown(&browser, "nav-health").await.click().await.unwrap();
    text_with(&browser, "health", "ready").await;
    text_with(&browser, "health", "cache hit rate").await;
    screenshot(&browser, "09-health").await;

    // A narrow window: nothing wider than the window.
    browser.set_window_size(380, 800).await.unwrap();
    shown(&browser, "nav-log").await.click().await.unwrap();
    enter(&browser, "log-id", &payment_log).await;
    text_with(&browser, "log-events", "777").await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page is wider than a 380px window by {overflow}px"
    );
    screenshot(&browser, "10-narrow").await;

    // Forget drops the token: the next call is refused again.
    shown(&browser, "token-forget").await.click().await.unwrap();
    text_with(&browser, "token-state", "no token").await;
    shown(&browser, "nav-reducers").await.click().await.unwrap();
    text_with(&browser, "problem-status", "401").await;

    browser.close().await.unwrap();
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_content_security_policy() {
    let daemon = TestDaemon::start(config(&sqlite_database())).await;
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let response = daemon.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let policy = header("content-security-policy");
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    daemon.stop().await;
}
