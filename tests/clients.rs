//! Clients generated from the OpenAPI document work without hand edits:
//! `scripts/clients` fetches a running daemon's `/openapi.json`, generates
//! a Python client (openapi-python-client) and a TypeScript client
//! (openapi-typescript + openapi-fetch) under `target/clients/`, and runs
//! the payment scenario of `examples/` through each — create with an
//! idempotent replay, conditional appends including a 412, a refused
//! event, the aggregate and its ETag, a page of events — against a real
//! daemon process that requires a token.
//!
//! Needs python3 and node with npm (and the registries they install from);
//! without them the test is skipped, and fails under `CI=true`.

use std::path::PathBuf;
use std::process::Command;

use eventlogs_e2e::{TestDaemon, json, plugin_path, sqlite_database, tools_present};

const TOKEN: &str = "clients-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_python_and_typescript_clients_run_the_payment_scenario() {
    if !tools_present(&["python3", "node", "npm"]) {
        return;
    }
    let payment = format!("payment={}", plugin_path("payment").display());
    let database = sqlite_database();
    let token = format!("read,write,admin:{TOKEN}");
    let daemon = TestDaemon::spawn(&[
        "--database-url",
        &database,
        "--deploy",
        &payment,
        "--token",
        &token,
    ])
    .await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let url = daemon.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(root.join("scripts/clients"))
            .args([&url, TOKEN])
            .current_dir(&root)
            .output()
            .expect("scripts/clients runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/clients failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // Each scenario prints one line when every step held.
    assert!(
        stdout.contains("python: payment scenario passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("typescript: payment scenario passed"),
        "{stdout}"
    );
    daemon.stop().await;
}

/// What generators need from the document, checked on the document itself
/// so that a gap shows here before it shows as a broken client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_errors_headers_and_security() {
    let daemon = TestDaemon::embedded().await;
    let (status, document) = json(daemon.get("/openapi.json").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let problem = &document["components"]["schemas"]["Problem"];
    for member in ["type", "title", "status", "detail"] {
        assert!(
            problem["required"]
                .as_array()
                .unwrap()
                .contains(&member.into()),
            "{member}"
        );
    }
    // Every problem kind and extension the README lists is in the document.
    let described = problem.to_string();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = readme
        .split("| status | kinds |")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("the README's table of problem kinds");
    for kind in table.split('`').skip(1).step_by(2) {
        // Flags (`--…`) and headers (`Retry-After`) are not the problem's.
        if !kind.starts_with("--") && !kind.starts_with(|c: char| c.is_ascii_uppercase()) {
            assert!(
                described.contains(&format!("`{kind}`")) || problem["properties"][kind].is_object(),
                "{kind} is not in the document's Problem"
            );
        }
    }
    let mut ids = std::collections::HashSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let at = format!("{method} {path}");
            let id = operation["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "{at}: operationId {id} repeats");
            let protected = path.starts_with("/v1/") || path == "/metrics";
            assert_eq!(
                operation["security"][0]["bearer"].is_array(),
                protected,
                "{at}: security"
            );
            for (code, response) in operation["responses"].as_object().unwrap() {
                if code.as_str() >= "400" {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{at} {code}: no problem body"
                    );
                }
            }
            if protected {
                for code in ["401", "403", "503"] {
                    assert!(operation["responses"][code].is_object(), "{at}: no {code}");
                }
                assert!(
                    operation["responses"]["503"]["headers"]["Retry-After"].is_object(),
                    "{at}: 503 without Retry-After"
                );
            }
        }
    }
    let paths = &document["paths"];
    let header = |path: &str, method: &str, code: &str, name: &str| {
        paths[path][method]["responses"][code]["headers"][name].is_object()
    };
    assert!(header("/v1/logs", "post", "201", "Location"));
    assert!(header("/v1/logs", "post", "201", "ETag"));
    assert!(header("/v1/logs/{id}/events", "post", "200", "ETag"));
    assert!(header("/v1/logs/{id}/aggregate", "get", "200", "ETag"));
    assert!(header("/v1/logs/{id}/events", "get", "200", "Link"));
    let append_headers: Vec<&str> = paths["/v1/logs/{id}/events"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "header")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(append_headers, ["If-Match", "Idempotency-Key"]);
    daemon.stop().await;
}
