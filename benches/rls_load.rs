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
//! It speaks gRPC over h2 itself, with every user's request encoded once before the run, as
//! wrk sends requests formatted once: tonic's client (a request encoded per call, a channel
//! task between caller and connection) cost 10 µs a call, which made the load the core that
//! ran out, not the service. Each call sends what Envoy's filter sends: the gRPC headers with
//! `grpc-timeout: 20m`, then the message.
//!
//! One thread, as `wrk -t 1` is. Every answer is decoded, and must be `OK` with gRPC status 0:
//! a denial or an error ends the run with exit code 1, so a figure is never of the wrong work.
//! It prints one line: `rls_load: decisions=N seconds=S per_second=X`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use prost::Message;
use tokio::net::TcpStream;

const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// An environment variable as a number, or `default` when it is unset.
fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Ends the run: a figure of failed calls would be of the wrong work.
fn fail(why: String) -> ! {
    eprintln!("rls_load: {why}");
    std::process::exit(1);
}

/// Each user's request as it goes on the wire: the gRPC frame (uncompressed, its length) and
/// the message.
fn frames(users: u64, domain: &str, key: &str) -> Vec<Bytes> {
    (0..users)
        .map(|user| {
            let request = RateLimitRequest {
                domain: domain.to_owned(),
                descriptors: vec![RateLimitDescriptor {
                    entries: vec![Entry {
                        key: key.to_owned(),
                        value: format!("user-{user}"),
                    }],
                    ..RateLimitDescriptor::default()
                }],
                hits_addend: 0,
            };
            let message = request.encode_to_vec();
            let mut frame = BytesMut::with_capacity(5 + message.len());
            frame.put_u8(0);
            frame.put_u32(message.len() as u32);
            frame.put_slice(&message);
            frame.freeze()
        })
        .collect()
}

/// The headers of every call, as Envoy's gRPC client sends them.
fn request(authority: &str) -> http::Request<()> {
    http::Request::post(format!("http://{authority}{PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "20m")
        .body(())
        .expect("the request's parts are valid")
}

/// One call: sends `frame`, reads the answer and its trailers, and checks it is OK.
async fn call(client: &mut h2::client::SendRequest<Bytes>, authority: &str, frame: Bytes) {
    std::future::poll_fn(|cx| client.poll_ready(cx))
        .await
        .unwrap_or_else(|e| fail(format!("the connection failed: {e}")));
    let (answer, mut body) = client
        .send_request(request(authority), false)
        .unwrap_or_else(|e| fail(format!("cannot send: {e}")));
    body.send_data(frame, true)
        .unwrap_or_else(|e| fail(format!("cannot send the message: {e}")));
    let answer = answer
        .await
        .unwrap_or_else(|e| fail(format!("no answer: {e}")));
    let (head, mut body) = answer.into_parts();
    if head.status != http::StatusCode::OK {
        fail(format!("HTTP status {}", head.status));
    }
    let mut message = BytesMut::new();
    while let Some(data) = body.data().await {
        let data = data.unwrap_or_else(|e| fail(format!("the answer broke off: {e}")));
        let _ = body.flow_control().release_capacity(data.len());
        message.extend_from_slice(&data);
    }
    let trailers = body
        .trailers()
        .await
        .unwrap_or_else(|e| fail(format!("no trailers: {e}")));
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| head.headers.get("grpc-status"));
    if status.map(|s| s.as_bytes()) != Some(b"0") {
        fail(format!("gRPC status {status:?}, trailers {trailers:?}"));
    }
    if message.len() < 5 {
        fail(format!("an answer of {} bytes", message.len()));
    }
    let answer = RateLimitResponse::decode(&message[5..])
        .unwrap_or_else(|e| fail(format!("an answer that does not decode: {e}")));
    if answer.overall_code != Code::Ok as i32 {
        fail(format!("a decision was not OK: {answer:?}"));
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
    let frames = Arc::new(frames(users, &domain, &key));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (decisions, elapsed) = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..connections {
            let stream = TcpStream::connect(&addr)
                .await
                .unwrap_or_else(|e| fail(format!("cannot connect to {addr}: {e}")));
            stream.set_nodelay(true).unwrap();
            let (client, connection) = h2::client::handshake(stream)
                .await
                .unwrap_or_else(|e| fail(format!("no HTTP/2 with {addr}: {e}")));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    fail(format!("the connection failed: {e}"));
                }
            });
            clients.push(client);
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for caller in 0..callers {
            let mut client = clients[(caller % connections) as usize].clone();
            let (frames, addr) = (frames.clone(), addr.clone());
            tasks.push(tokio::spawn(async move {
                // Callers start apart, so that they do not ask for the same users in step.
                let mut user = caller * users / callers.max(1);
                let mut done = 0u64;
                while Instant::now() < deadline {
                    user = (user + 1) % users;
                    call(&mut client, &addr, frames[user as usize].clone()).await;
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
    println!(
        "rls_load: decisions={decisions} seconds={:.3} per_second={:.0}",
        elapsed.as_secs_f64(),
        decisions as f64 / elapsed.as_secs_f64()
    );
}
