//! The reducer author's commands, run as a user runs them: `eventlogs new`
//! (and the crate it makes, tested and built with cargo), `eventlogs check`
//! and `eventlogs fold`, against the built plugins and hostile fixtures,
//! with no daemon or database (except to compare a fold with the daemon's
//! reduce).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use eventlogs_e2e::{TestDaemon, binary, json};
use eventlogs_test_env::plugin_path;
use serde_json::{Value, json};

/// Runs `eventlogs ARGS`; its exit status, stdout and stderr.
fn eventlogs(args: &[&str]) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(binary()).args(args).output().unwrap();
    (
        status.success(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn component(name: &str) -> String {
    plugin_path(name).display().to_string()
}

/// A file of `text` in a folder of its own.
fn file(name: &str, text: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("eventlogs-authoring-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The seed's payment scenario (its README's, and the payment plugin's
/// `seed_scenario_settles_the_payment`).
fn payment_events() -> Vec<Value> {
    vec![
        json!({"Requested": {"request": {"amount_requested": 10000}}}),
        json!({"Authorized": {"amount": 10000, "approval_code": "xyz123"}}),
        json!({"Captured": {"amount": 4000, "statement_descriptor": "Widgets, Inc"}}),
        json!({"Refunded": {"amount": 6000, "reference_number": "abc789"}}),
    ]
}

fn json_lines(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

#[test]
fn check_accepts_a_reducer_and_says_whether_it_validates() {
    let (ok, out, err) = eventlogs(&["check", &component("payment")]);
    assert!(ok, "{err}");
    assert!(out.starts_with("accepted: version "), "{out}");
    assert!(out.contains("validates appended events"), "{out}");
    let (ok, out, err) = eventlogs(&["check", &component("counter")]);
    assert!(ok, "{err}");
    assert!(out.contains("does not validate"), "{out}");
}

#[test]
fn check_names_why_a_component_would_be_refused() {
    for (fixture, reason) in [
        (
            "fixture_disallowed_import",
            "imports what reducers may not use",
        ),
        (
            "fixture-cli-command",
            "does not export the eventlogs:reducer",
        ),
    ] {
        let (ok, out, err) = eventlogs(&["check", &component(fixture)]);
        assert!(!ok, "{fixture} was accepted: {out}");
        assert!(err.contains(reason), "{fixture}: {err}");
    }
    let not_wasm = file("not.wasm", "hello");
    let (ok, _, err) = eventlogs(&["check", text(&not_wasm)]);
    assert!(!ok);
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

/// A fold of the seed's payment events prints the aggregate the daemon
/// reduces from the same events, from a JSON array and from JSON lines.
#[tokio::test]
async fn fold_prints_what_the_daemon_reduces() {
    let events = payment_events();
    let daemon = TestDaemon::embedded().await;
    let log = daemon.create_log("payment", events.clone()).await;
    let (status, reduced) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
    assert_eq!(status, 200, "{reduced}");
    daemon.stop().await;
    for input in [
        file("events.json", &Value::Array(events.clone()).to_string()),
        file("events.jsonl", &json_lines(&events)),
    ] {
        let (ok, out, err) = eventlogs(&["fold", &component("payment"), text(&input)]);
        assert!(ok, "{err}");
        let mut folded: Value = serde_json::from_str(out.trim()).unwrap();
        // The one field that depends on when the events were recorded.
        let mut expected = reduced["aggregate"].clone();
        for aggregate in [&mut folded, &mut expected] {
            aggregate.as_object_mut().unwrap().remove("updated_at");
        }
        assert_eq!(folded, expected, "{}", input.display());
        // The seed's final numbers.
        let numbers = [
            "amount_approved",
            "amount_captured",
            "amount_refunded",
            "amount_outstanding",
        ]
        .map(|field| folded[field].clone());
        assert_eq!(
            numbers,
            [json!(10000), json!(4000), json!(6000), json!(0)],
            "{folded}"
        );
        assert!(err.contains("folded 4 events"), "{err}");
        assert!(err.contains("guest memory"), "{err}");
    }
}

/// Folding the second half from the aggregate after the first half (as a
/// reduce answered it) ends where folding everything does, whatever the
/// batch size.
#[test]
fn fold_resumes_from_a_stored_aggregate() {
    let events = payment_events();
    let whole = file("all.jsonl", &json_lines(&events));
    let at = "1700000000000000";
    let (ok, all, err) = eventlogs(&[
        "fold",
        &component("payment"),
        text(&whole),
        "--batch",
        "2",
        "--recorded-at",
        at,
    ]);
    assert!(ok, "{err}");
    let first = file("first.jsonl", &json_lines(&events[..3]));
    let (ok, state, err) = eventlogs(&[
        "fold",
        &component("payment"),
        text(&first),
        "--recorded-at",
        at,
    ]);
    assert!(ok, "{err}");
    let state = file("state.json", &state);
    let rest = file("rest.jsonl", &json_lines(&events[3..]));
    let (ok, resumed, err) = eventlogs(&[
        "fold",
        &component("payment"),
        text(&rest),
        "--state",
        text(&state),
        "--first-index",
        "3",
        "--batch",
        "1",
        "--recorded-at",
        at,
    ]);
    assert!(ok, "{err}");
    assert_eq!(resumed, all);
}

/// A refused event fails the fold and is named by its index; nothing is
/// printed as an aggregate.
#[test]
fn fold_names_the_event_the_reducer_refused() {
    let mut events = payment_events();
    events.insert(2, json!({"Bogus": {}}));
    let input = file("bogus.jsonl", &json_lines(&events));
    let (ok, out, err) = eventlogs(&["fold", &component("payment"), text(&input)]);
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("event 2 does not decode"), "{err}");
    let input = file("not-json.jsonl", "{\"Requested\": \n");
    let (ok, _, err) = eventlogs(&["fold", &component("payment"), text(&input)]);
    assert!(!ok);
    assert!(err.contains("line 1"), "{err}");
}

/// An endless loop ends at the deadline, reported as such.
#[test]
fn fold_stops_an_endless_loop_at_its_deadline() {
    let input = file("one.jsonl", "{}\n");
    let started = Instant::now();
    let (ok, _, err) = eventlogs(&[
        "fold",
        &component("fixture_infinite_loop"),
        text(&input),
        "--reducer-timeout-ms",
        "300",
    ]);
    let took = started.elapsed();
    assert!(!ok);
    assert!(
        err.contains("timeout: call exceeded its 300ms deadline"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

/// Runs cargo in `dir` with `target` as its target folder; its stdout and
/// stderr, or a panic with them.
fn cargo(dir: &Path, target: &Path, args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "cargo {args:?} failed:\n{text}");
    text
}

/// The WIT the SDK carries in its package is the workspace's contract.
#[test]
fn the_sdk_carries_the_contract() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let contract = std::fs::read_to_string(workspace.join("wit/reducer.wit")).unwrap();
    let carried = std::fs::read_to_string(workspace.join("guest-sdk/wit/reducer.wit")).unwrap();
    assert_eq!(
        carried, contract,
        "guest-sdk/wit/reducer.wit differs from wit/reducer.wit: copy it over"
    );
}

/// The SDK as `cargo package` makes it, unpacked in a folder outside this
/// repository.
fn packaged_sdk(workspace: &Path, target: &Path, into: &Path) -> PathBuf {
    cargo(
        workspace,
        target,
        &[
            "package",
            "-p",
            "eventlogs-guest",
            "--offline",
            "--no-verify",
            "--allow-dirty",
        ],
    );
    let version = env!("CARGO_PKG_VERSION");
    let package = target.join(format!("package/eventlogs-guest-{version}.crate"));
    let unpacked = Command::new("tar")
        .arg("-xzf")
        .arg(&package)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(
        unpacked.success(),
        "tar could not unpack {}",
        package.display()
    );
    into.join(format!("eventlogs-guest-{version}"))
}

/// `eventlogs new` makes a crate outside this workspace, against the
/// packaged SDK, whose own tests pass natively, which builds to a
/// component the sandbox accepts, and which folds as its source says.
#[test]
fn a_new_reducer_crate_tests_builds_checks_and_folds() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let folder = std::env::temp_dir().join(format!("eventlogs-new-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&folder).unwrap();
    let target = workspace.join("target/scaffolded");
    let sdk = packaged_sdk(&workspace, &target, &folder);
    let (ok, out, err) = eventlogs(&[
        "new",
        "demo-reducer",
        "--sdk-path",
        text(&sdk),
        "--into",
        text(&folder),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("created"), "{out}");
    let made = folder.join("demo-reducer");
    for file in [
        "Cargo.toml",
        ".cargo/config.toml",
        "src/lib.rs",
        "README.md",
        ".gitignore",
    ] {
        assert!(made.join(file).is_file(), "{file} is missing");
    }
    // The crate builds for the sandbox as this repository's reducers do
    // (docs/reducer-contract.md, "The guest SDK").
    let flag = "\"llvm-args=-inline-threshold=1000\"";
    for config in [
        made.join(".cargo/config.toml"),
        workspace.join(".cargo/config.toml"),
    ] {
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains("[target.wasm32-wasip2]") && text.contains(flag),
            "{}: {text}",
            config.display()
        );
    }
    let (ok, _, err) = eventlogs(&["new", "demo-reducer", "--into", text(&folder)]);
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, _, err) = eventlogs(&["new", "1bad name", "--into", text(&folder)]);
    assert!(!ok && err.contains("not a crate name"), "{err}");

    // The workspace's lock: the dependency versions this checkout builds
    // with, from the local registry cache. The target folder stays warm
    // between runs.
    std::fs::copy(workspace.join("Cargo.lock"), made.join("Cargo.lock")).unwrap();
    cargo(&made, &target, &["fmt", "--check"]);
    let tested = cargo(&made, &target, &["test", "--offline"]);
    assert!(tested.contains("2 passed"), "{tested}");
    cargo(
        &made,
        &target,
        &[
            "build",
            "--offline",
            "--release",
            "--target",
            "wasm32-wasip2",
        ],
    );
    let wasm = target.join("wasm32-wasip2/release/demo_reducer.wasm");
    let (ok, out, err) = eventlogs(&["check", text(&wasm)]);
    assert!(ok, "{err}");
    assert!(out.contains("validates appended events"), "{out}");

    let events = file(
        "account.jsonl",
        "{\"Deposited\": {\"amount\": 100}}\n{\"Withdrawn\": {\"amount\": 30}}\n",
    );
    let (ok, out, err) = eventlogs(&["fold", text(&wasm), text(&events)]);
    assert!(ok, "{err}");
    let folded: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(folded, json!({"balance": 70, "events": 2}));
    // Deployed to a daemon, it reduces the same events to the same.
    let reduced = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let daemon = TestDaemon::embedded().await;
        let deployed = daemon
            .deploy("account", std::fs::read(&wasm).unwrap())
            .await;
        assert_eq!(deployed.status(), 201);
        let log = daemon
            .create_log(
                "account",
                vec![
                    json!({"Deposited": {"amount": 100}}),
                    json!({"Withdrawn": {"amount": 30}}),
                ],
            )
            .await;
        let (_, reduced) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
        daemon.stop().await;
        reduced
    });
    assert_eq!(reduced["aggregate"], folded, "{reduced}");
    let overdraft = file("overdraft.jsonl", "{\"Withdrawn\": {\"amount\": 1}}\n");
    let (ok, _, err) = eventlogs(&["fold", text(&wasm), text(&overdraft)]);
    assert!(!ok);
    assert!(
        err.contains("event 0 rejected: withdrawal of 1 exceeds the balance of 0"),
        "{err}"
    );
    std::fs::remove_dir_all(&folder).unwrap();
}

/// `eventlogs deploy --dry-run` asks a running daemon what the deploy would
/// do: refused, naming the log it breaks; forced, what would be activated;
/// either way nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_dry_run_says_what_the_deploy_would_do() {
    let daemon = TestDaemon::embedded().await;
    daemon
        .create_log(
            "payment",
            vec![
                json!({"Authorized": {"amount": 1}}),
                json!({"Authorized": {"amount": 2}}),
            ],
        )
        .await;
    let (_, before) = json(daemon.get("/v1/reducers/payment").await).await;
    let run = |extra: &'static [&'static str]| {
        let url = daemon.url.clone();
        tokio::task::spawn_blocking(move || {
            let strict = component("fixture_single_event");
            let mut args = vec!["deploy", "payment", &strict, "--dry-run", "--url", &url];
            args.extend(extra);
            eventlogs(&args)
        })
    };
    let (ok, _, err) = run(&[]).await.unwrap();
    assert!(!ok, "a breaking dry run succeeded");
    assert!(
        err.contains("422") && err.contains("fails on 1 of 1"),
        "{err}"
    );
    let (ok, out, err) = run(&["--force"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("would be activated") && out.contains("failing on 1"),
        "{out}"
    );
    let (_, after) = json(daemon.get("/v1/reducers/payment").await).await;
    assert_eq!(after, before, "a dry run stored or activated something");
    daemon.stop().await;
}

/// The hostile fixtures a deploy accepts (they misbehave only when
/// folding) are accepted by `check` too, and `fold` names how each fails.
#[test]
fn fold_names_how_a_hostile_reducer_fails() {
    let two = file("two.jsonl", "{}\n{}\n");
    for (fixture, reason) in [
        (
            "fixture_memory_hog",
            "out-of-memory: memory limit of 67108864 bytes exceeded",
        ),
        ("fixture_deep_recursion", "stack-overflow: stack overflow"),
        (
            "fixture_panicking",
            "panic: panicked: grenade went off at event 0",
        ),
        (
            "fixture_oversized_aggregate",
            "exceeds the 4194304-byte output limit (serialising the aggregate)",
        ),
    ] {
        let (ok, out, err) = eventlogs(&["check", &component(fixture)]);
        assert!(ok && out.starts_with("accepted"), "{fixture}: {out}{err}");
        let (ok, out, err) = eventlogs(&["fold", &component(fixture), text(&two)]);
        assert!(!ok && out.is_empty(), "{fixture}: {out}");
        assert!(err.contains(reason), "{fixture}: {err}");
    }
}

/// With `EVENTLOGS_PERF_MAP=1`, wasmtime writes `/tmp/perf-PID.map`, which
/// names the reducer's compiled functions for `perf report`.
#[test]
fn a_perf_map_names_the_reducers_functions_when_asked() {
    let input = file("events.jsonl", &json_lines(&payment_events()));
    let child = Command::new(binary())
        .args(["fold", &component("payment"), text(&input)])
        .env("EVENTLOGS_PERF_MAP", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let map = PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let names = std::fs::read_to_string(&map).unwrap_or_default();
    let _ = std::fs::remove_file(&map);
    assert!(
        names.lines().any(|line| line.contains("wasm")),
        "{} names no reducer function:\n{}",
        map.display(),
        names.lines().take(5).collect::<Vec<_>>().join("\n")
    );
}
