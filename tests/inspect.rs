//! `tollgate inspect`: each policy's standing for one caller, read from a real Redis without
//! spending anything; the binary's table and its refusal of the memory store.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use support::config::{text, Dir};
use support::{settings, RedisServer, TestApp, NO_BOUNDARY};
use tollgate::command::CommandError;
use tollgate::inspect::{inspect, Report};

/// A fixed window of 3 per user, a token bucket of 10, a shadow policy of 1, and 100 per address.
fn toml(redis: &RedisServer) -> String {
    format!(
        r#"
[redis]
url = "{url}"
timeout = "2s"


[[policies]]
name = "per_user"
limit = 3
window = "{NO_BOUNDARY}"

[[policies]]
name = "bucket"
algorithm = "token_bucket"
limit = 10
window = "{NO_BOUNDARY}"

[[policies]]
name = "trial"
limit = 1
window = "{NO_BOUNDARY}"
shadow = true

[[policies]]
name = "per_ip"
limit = 100
window = "{NO_BOUNDARY}"
by = "ip"
"#,
        url = redis.url()
    )
}

const LOCALHOST: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

/// Each standing as (policy, remaining, admitted).
fn standings(report: &Report) -> Vec<(String, u64, bool)> {
    report
        .standings
        .iter()
        .map(|(_, s)| (s.policy.name().to_string(), s.remaining, s.allowed))
        .collect()
}

/// After four requests from joe (three admitted), inspect reports what each policy holds for
/// him, again and again, without spending; a caller never seen is whole; the keys are the ones
/// `tollgate key` names, and every key still has a TTL.
#[tokio::test]
async fn inspect_reads_each_policy_without_spending() {
    let redis = RedisServer::start().await;
    let toml = toml(&redis);
    let app = TestApp::with_toml(&toml).await;
    let client = reqwest::Client::new();
    let statuses = {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(app.get_user(&client, "joe").await.status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses, [200, 200, 200, 429]);
    let settings = settings(&toml);
    for _ in 0..2 {
        let report = inspect(&settings, "joe", LOCALHOST, None).await.unwrap();
        assert_eq!(
            standings(&report),
            [
                ("per_user".into(), 0, false),
                ("bucket".into(), 7, true),
                ("trial".into(), 0, false),
                ("per_ip".into(), 97, true),
            ]
        );
        let per_user = &report.standings[0].1;
        assert!(per_user.retry_after > Duration::ZERO, "{per_user:?}");
        let keys: Vec<String> = report.standings.iter().map(|(k, _)| k.clone()).collect();
        let named: Vec<String> = settings
            .caller_keys("joe", LOCALHOST, None)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(keys, named);
        assert!(report.unkeyed.is_empty());
    }
    // Nothing was spent: joe is still refused, and the address still has 97.
    assert_eq!(app.get_user(&client, "joe").await.status(), 429);
    let ann = inspect(&settings, "ann", None, None).await.unwrap();
    assert_eq!(
        standings(&ann),
        [
            ("per_user".into(), 3, true),
            ("bucket".into(), 10, true),
            ("trial".into(), 1, true),
        ]
    );
    assert_eq!(ann.unkeyed.len(), 1, "per_ip needs --ip");
    assert_eq!(ann.unkeyed[0].policy.as_str(), "per_ip");
    redis.assert_every_key_has_ttl().await;
}

/// The binary prints one line a policy, with its key last; over the memory store it refuses,
/// naming the setting, and exits 2.
#[tokio::test]
async fn the_binary_prints_a_table_or_refuses_the_memory_store() {
    let redis = RedisServer::start().await;
    let dir = Dir::new().file("tollgate.toml", &toml(&redis));
    let output = dir.run(&["inspect", "joe", "--ip", "127.0.0.1"], &[]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(lines[0].starts_with("policy"), "{stdout}");
    assert!(
        lines[1].starts_with("per_user") && lines[1].contains(" 3 per 30000d "),
        "{stdout}"
    );
    assert!(lines[3].starts_with("trial (shadow)"), "{stdout}");
    assert!(lines[1].ends_with(":per_user"), "{stdout}");

    let memory = Dir::new().file(
        "tollgate.toml",
        "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\n",
    );
    let output = memory.run(&["inspect", "joe"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("set redis.url"),
        "{}",
        text(&output.stderr)
    );
    let settings = settings("[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\n");
    assert!(matches!(
        inspect(&settings, "joe", None, None).await,
        Err(CommandError::MemoryStore)
    ));
}

/// A Redis that does not answer is an error that says so, not a table of guesses.
#[tokio::test]
async fn an_unreachable_redis_is_an_error() {
    let mut redis = RedisServer::start().await;
    let toml = toml(&redis);
    redis.stop();
    let error = inspect(&settings(&toml), "joe", None, None)
        .await
        .unwrap_err();
    assert!(matches!(error, CommandError::Store(_)), "{error}");
    let said = error.to_string();
    assert!(
        said.starts_with("redis connection") || said.starts_with("the store did not answer"),
        "{said}"
    );
}
