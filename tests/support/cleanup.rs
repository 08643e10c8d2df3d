//! `test-cleanup --since UNIX_MS`: drops what test runs leave behind on the
//! shared servers — PostgreSQL databases, Redis keys and temporary SQLite
//! folders named `eventlogs_{test,e2e,bench}_UUIDv7` (or with `-`) — that
//! were created since `UNIX_MS` (this run) or more than a day ago (runs that
//! were killed). Names carry their creation time in the UUIDv7, so a run in
//! progress elsewhere on the same server keeps its databases.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KINDS: [&str; 3] = ["test", "e2e", "bench"];
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The creation time (Unix ms) of a name `eventlogs_KIND_UUID` or
/// `eventlogs-KIND-UUID…`, if it is one.
fn created_ms(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("eventlogs")?;
    let rest = rest.strip_prefix('_').or_else(|| rest.strip_prefix('-'))?;
    let (kind, id) = rest.split_at(rest.find(['_', '-'])?);
    if !KINDS.contains(&kind) {
        return None;
    }
    let id = id[1..].trim_end_matches(':');
    let id = id.split(':').next()?;
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    let (seconds, nanos) = uuid.get_timestamp()?.to_unix();
    Some(seconds * 1000 + u64::from(nanos) / 1_000_000)
}

fn doomed(name: &str, since: u64, now: u64) -> bool {
    created_ms(name).is_some_and(|at| at >= since || at + DAY.as_millis() as u64 <= now)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let since: u64 = std::env::args()
        .skip_while(|a| a != "--since")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("usage: test-cleanup --since UNIX_MS");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    postgres(since, now).await;
    redis(since, now).await;
    let mut folders = 0;
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if doomed(&name, since, now) && std::fs::remove_dir_all(entry.path()).is_ok() {
                folders += 1;
            }
        }
    }
    println!("test-cleanup: removed {folders} temporary folders");
}

async fn postgres(since: u64, now: u64) {
    use sqlx::Connection;
    let admin = eventlogs_e2e::postgres_admin_url();
    let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
        println!("test-cleanup: PostgreSQL not reachable at {admin}; nothing dropped");
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'eventlogs\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    let mut dropped = 0;
    for name in names.iter().filter(|n| doomed(n, since, now)) {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        if sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .is_ok()
        {
            dropped += 1;
        }
    }
    println!("test-cleanup: dropped {dropped} PostgreSQL databases");
}

async fn redis(since: u64, now: u64) {
    let Ok(client) = redis::Client::open("redis://127.0.0.1:6379/") else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        println!("test-cleanup: Redis not reachable; nothing deleted");
        return;
    };
    let mut doomed_keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = match redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("eventlogs-*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
        {
            Ok(page) => page,
            Err(_) => return,
        };
        doomed_keys.extend(keys.into_iter().filter(|k| doomed(k, since, now)));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for chunk in doomed_keys.chunks(500) {
        let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
    }
    println!("test-cleanup: deleted {} Redis keys", doomed_keys.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_creation_time() {
        let id = uuid::Uuid::now_v7();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for name in [
            format!("eventlogs_test_{}", id.simple()),
            format!("eventlogs-e2e-{id}:reduction:x"),
            format!("eventlogs_bench_{}", id.simple()),
        ] {
            let at = created_ms(&name).unwrap_or_else(|| panic!("{name}"));
            assert!(now.abs_diff(at) < 5_000, "{name}");
            assert!(doomed(&name, now - 60_000, now));
            assert!(!doomed(&name, now + 60_000, now), "another run's, recent");
        }
        assert_eq!(created_ms("eventlogs"), None);
        assert_eq!(created_ms("postgres"), None);
        assert_eq!(created_ms("eventlogs_prod_0190"), None);
    }
}
