//! The server loop over real TCP: slow, idle and silent connections are closed by their timers,
//! the connection cap holds new connections back without failing ordinary requests, and h2c
//! (HTTP/2 with prior knowledge) is served.

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::TestApp;

/// The timer the tests shorten; the other one is set long enough never to fire in a test.
const SHORT: Duration = Duration::from_millis(200);

/// The longest a test waits for the server to close a connection a timer should close.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// A service whose header timeout and idle timeout are as given.
async fn app(header_timeout: &str, idle_timeout: &str, extra: &str) -> TestApp {
    TestApp::with_toml(&format!(
        "[server]\nheader_timeout = \"{header_timeout}\"\nidle_timeout = \"{idle_timeout}\"\n{extra}"
    ))
    .await
}

/// Waits until the server closes `stream` (EOF or reset), discarding what it sends; returns how
/// long that took from `since`, or panics after [`CLOSE_DEADLINE`].
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(CLOSE_DEADLINE, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection is still open {CLOSE_DEADLINE:?} later"),
        }
    }
}

/// Sends one whole `GET /healthz` on `stream` and reads its response head.
async fn healthz(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&response).contains("\r\n\r\n") {
        let n = tokio::time::timeout(CLOSE_DEADLINE, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "the connection closed before a response");
        response.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// A slowloris connection, sending its headers a byte at a time, is closed once the header
/// timeout runs out, not kept open while bytes trickle in.
#[tokio::test]
async fn a_slowloris_connection_is_closed_after_the_header_timeout() {
    let app = app("200ms", "1m", "").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let opened = Instant::now();
    let request = b"GET /user HTTP/1.1\r\nHost: x\r\nX-User: a-very-slow-caller-indeed\r\n";
    let (mut read, mut write) = stream.split();
    let trickle = async {
        for byte in request.iter() {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::future::pending::<()>().await
    };
    let mut buf = [0u8; 1024];
    let closed = tokio::select! {
        () = trickle => unreachable!(),
        read = tokio::time::timeout(CLOSE_DEADLINE, read.read(&mut buf)) => read,
    };
    let after = opened.elapsed();
    assert!(closed.is_ok(), "still open {CLOSE_DEADLINE:?} later");
    // The trickle lasts 20 ms × 64 bytes, about 1.3 s: the timeout must have ended it first.
    assert!(
        after >= SHORT - Duration::from_millis(50) && after < Duration::from_secs(1),
        "closed {after:?} after opening, header timeout {SHORT:?}"
    );
}

/// A connection that never sends a byte is closed after the header timeout.
#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let app = app("200ms", "1m", "").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let after = closed_after(&mut stream, Instant::now()).await;
    assert!(
        after >= SHORT - Duration::from_millis(50) && after < Duration::from_secs(2),
        "closed {after:?} after opening, header timeout {SHORT:?}"
    );
}

/// An idle HTTP/1.1 keep-alive connection is closed after the idle timeout.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = app("1m", "200ms", "").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let response = healthz(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let after = closed_after(&mut stream, Instant::now()).await;
    assert!(
        after >= SHORT - Duration::from_millis(50) && after < Duration::from_secs(2),
        "closed {after:?} after the response, idle timeout {SHORT:?}"
    );
}

/// An idle HTTP/2 connection is closed after the idle timeout too (hyper has no timer for it).
#[tokio::test]
async fn an_idle_h2c_connection_is_closed_after_the_idle_timeout() {
    let app = app("1m", "200ms", "").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // The client preface and an empty SETTINGS frame: a live HTTP/2 connection, no request.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let after = closed_after(&mut stream, Instant::now()).await;
    assert!(
        after < Duration::from_secs(2),
        "closed {after:?} after the preface, idle timeout {SHORT:?}"
    );
}

/// With `max_connections = 2`, a third connection waits unserved while two are open, and is
/// served as soon as one of them closes.
#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let app = app("1m", "1m", "max_connections = 2\n").await;
    let mut first = TcpStream::connect(app.addr).await.unwrap();
    let mut second = TcpStream::connect(app.addr).await.unwrap();
    // A response on each proves both were accepted, and hold the two places.
    assert!(healthz(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(healthz(&mut second).await.starts_with("HTTP/1.1 200"));

    let mut third = TcpStream::connect(app.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let waited = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the connection past the cap was served: {waited:?}"
    );

    drop(first);
    let mut response = Vec::new();
    while !String::from_utf8_lossy(&response).contains("\r\n\r\n") {
        let n = tokio::time::timeout(CLOSE_DEADLINE, third.read(&mut buf))
            .await
            .expect("served once a place is free")
            .unwrap();
        assert!(n > 0, "closed instead of served");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

/// HTTP/2 over cleartext with prior knowledge is served: `GET /user` answers 200 over h2, with
/// the rate-limit headers.
#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let app = app("10s", "60s", "").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .get(app.url("/user"))
        .header("x-user", "h2-caller")
        .send()
        .await
        .expect("an h2c answer");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("ratelimit"));
    assert_eq!(response.text().await.unwrap(), "\"h2-caller\"");
}
