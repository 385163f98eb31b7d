//! A load client for Envoy's rate limit service: `CALLERS` concurrent callers, each sending
//! `ShouldRateLimit` for one user after another, as Envoy would, and counting decisions/s.
//! `benches/rls.sh` runs it against a tollgate and compares it with `/check` under wrk.
//!
//! Configured from the environment, since `cargo bench` passes arguments of its own:
//! - `RLS_ADDR`: the service's address (`127.0.0.1:8081`); without it the bench does nothing;
//! - `DURATION`: seconds to run (10); `CALLERS`: concurrent calls (32); `CONNECTIONS`: HTTP/2
//!   connections the callers share (1, as one Envoy worker keeps); `USERS`: distinct users
//!   (10,000); `DOMAIN` (`api`) and `KEY` (`user`): the descriptor, one entry.
//!
//! One thread, as `wrk -t 1` is. Every answer must be `OK`: a denial or an error ends the run
//! with exit code 1, so a figure is never of the wrong work. It prints one line:
//! `rls_load: decisions=N seconds=S per_second=X`.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use tonic::transport::Channel;

/// An environment variable as a number, or `default` when it is unset.
fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

fn main() {
    let Ok(addr) = std::env::var("RLS_ADDR") else {
        println!("rls_load: RLS_ADDR is not set, nothing to do (benches/rls.sh sets it)");
        return;
    };
    let seconds = setting("DURATION", 10);
    let callers = setting("CALLERS", 32);
    let connections = setting("CONNECTIONS", 1).max(1);
    let users = setting("USERS", 10_000).max(1);
    let domain = std::env::var("DOMAIN").unwrap_or_else(|_| "api".into());
    let key = std::env::var("KEY").unwrap_or_else(|_| "user".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let decisions = runtime.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..connections {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .tcp_nodelay(true)
                .connect()
                .await
                .unwrap_or_else(|e| panic!("rls_load: cannot connect to {addr}: {e}"));
            channels.push(channel);
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for caller in 0..callers {
            let mut client =
                RateLimitServiceClient::new(channels[(caller % connections) as usize].clone());
            let (domain, key) = (domain.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                // Callers start apart, so that they do not ask for the same users in step.
                let mut user = caller * users / callers.max(1);
                let mut done = 0u64;
                while Instant::now() < deadline {
                    user = (user + 1) % users;
                    let request = RateLimitRequest {
                        domain: domain.clone(),
                        descriptors: vec![RateLimitDescriptor {
                            entries: vec![Entry {
                                key: key.clone(),
                                value: format!("user-{user}"),
                            }],
                            ..RateLimitDescriptor::default()
                        }],
                        hits_addend: 0,
                    };
                    let answer = match client.should_rate_limit(request).await {
                        Ok(answer) => answer.into_inner(),
                        Err(status) => {
                            eprintln!("rls_load: the service failed: {status}");
                            std::process::exit(1);
                        }
                    };
                    if answer.overall_code != Code::Ok as i32 {
                        eprintln!("rls_load: a decision was not OK: {answer:?}");
                        std::process::exit(1);
                    }
                    done += 1;
                }
                done
            }));
        }
        let mut decisions = 0;
        for task in tasks {
            decisions += task.await.unwrap();
        }
        (decisions, started.elapsed())
    });
    let (decisions, elapsed) = decisions;
    println!(
        "rls_load: decisions={decisions} seconds={:.3} per_second={:.0}",
        elapsed.as_secs_f64(),
        decisions as f64 / elapsed.as_secs_f64()
    );
}
