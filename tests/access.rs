//! Access control, checked by walking the OpenAPI document the daemon
//! generates from its handlers: a route added later is walked too, so it
//! cannot slip through unprotected.

use eventlogs_e2e::{TestDaemon, assert_problem, config, json, sqlite_database, token};
use reqwest::Method;

const READ: &str = "read-secret-0123456789";
const WRITE: &str = "write-secret-0123456789";
const ADMIN: &str = "admin-secret-0123456789";

/// Routes anyone may call.
const PROBES: &[&str] = &["/healthz", "/readyz"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_the_probes_needs_a_token_with_its_scope() {
    let mut settings = config(&sqlite_database());
    settings.tokens = vec![
        token(READ, "read"),
        token(WRITE, "write"),
        token(ADMIN, "read,write,admin"),
    ];
    let mut daemon = TestDaemon::start(settings).await;
    let (status, document) = json(daemon.get("/openapi.json").await).await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().expect("paths");
    let mut walked = 0;
    for (path, operations) in paths {
        let concrete = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{name}", "payment");
        for method in operations.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            walked += 1;
            daemon.token = None;
            let anonymous = daemon
                .request(method.clone(), &concrete)
                .send()
                .await
                .unwrap();
            if PROBES.contains(&path.as_str()) {
                assert_eq!(anonymous.status(), 200, "{method} {path}");
                continue;
            }
            assert_problem(anonymous, 401, "unauthorized").await;
            daemon.token = Some("wrong-secret-0123456789".into());
            let unknown = daemon
                .request(method.clone(), &concrete)
                .send()
                .await
                .unwrap();
            assert_problem(unknown, 401, "unauthorized").await;

            // A token without the scope this route needs.
            let (lacking, sufficient) = match method {
                Method::GET => (WRITE, READ),
                _ if path.starts_with("/v1/reducers") => (WRITE, ADMIN),
                _ => (READ, WRITE),
            };
            daemon.token = Some(lacking.into());
            let forbidden = daemon
                .request(method.clone(), &concrete)
                .send()
                .await
                .unwrap();
            assert_problem(forbidden, 403, "forbidden").await;
            daemon.token = Some(sufficient.into());
            let allowed = daemon
                .request(method.clone(), &concrete)
                .send()
                .await
                .unwrap();
            assert!(
                ![401, 403].contains(&allowed.status().as_u16()),
                "{method} {path} refused a sufficient token"
            );
        }
    }
    assert!(walked >= 11, "only {walked} operations documented");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_a_public_address_is_refused() {
    let mut settings = config(&sqlite_database());
    settings.listen = "0.0.0.0:0".parse().unwrap();
    let refused = eventlogs_host::daemon::Daemon::start(&settings).await;
    assert!(
        matches!(refused, Err(eventlogs_host::daemon::DaemonError::Config(_))),
        "started without tokens on 0.0.0.0"
    );
    settings.allow_unauthenticated = true;
    let daemon = eventlogs_host::daemon::Daemon::start(&settings)
        .await
        .unwrap();
    daemon.shutdown().await.unwrap();
}
