//! Graceful shutdown of the real binary: SIGTERM drains requests in flight, a stuck request
//! cannot hold shutdown past the grace, a second signal ends it at once, and connections past
//! the descriptor limit wait in the backlog without accept errors.

mod support;

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::binary::{closed_silently, complete, exchange, read_response, Binary};

/// The default `server.shutdown_grace`.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The `server.shutdown_grace` of the tests that wait it out.
const SHORT_GRACE: Duration = Duration::from_secs(1);

/// The first half of a request to `/user` as `joe`: its headers are not finished.
const PARTIAL_REQUEST: &[u8] = b"GET /user HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User: joe\r\n";
/// Opens a connection and sends [`PARTIAL_REQUEST`]; then a whole `/healthz` on a second
/// connection proves the first one was accepted, since the server accepts in order.
async fn open_partial_request(binary: &Binary) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", binary.port))
        .await
        .unwrap();
    stream.write_all(PARTIAL_REQUEST).await.unwrap();
    let health = exchange(binary.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        health.is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "/healthz after opening the partial request"
    );
    stream
}

/// SIGTERM while a request is in flight: new connections are refused, an idle connection is
/// closed, the request still gets its whole 200, and the process exits 0 within half of the
/// default grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let mut binary = Binary::start().await;
    let mut idle = TcpStream::connect(("127.0.0.1", binary.port))
        .await
        .unwrap();
    let mut in_flight = open_partial_request(&binary).await;

    let sent = binary.terminate();
    binary.until_refusing().await;
    assert!(
        binary.running(),
        "tollgate exited with a request in flight:\n{}",
        binary.log()
    );
    assert!(
        closed_silently(&mut idle).await,
        "an idle connection is closed at shutdown"
    );

    in_flight.write_all(b"\r\n").await.unwrap();
    let response = read_response(&mut in_flight)
        .await
        .unwrap_or_else(|| panic!("no response to the in-flight request:\n{}", binary.log()));
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        complete(response.as_bytes()),
        "a whole response: {response}"
    );
    assert!(response.ends_with("\r\n\r\n\"joe\""), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("ratelimit: "),
        "the drained request was still limited: {response}"
    );

    let (status, _) = binary.exit_within(sent, DEFAULT_GRACE / 2).await;
    assert_eq!(status.code(), Some(0), "exit status:\n{}", binary.log());
}

/// A connection that never finishes its request is given `server.shutdown_grace`, then dropped:
/// the process exits 0 soon after the grace, not sooner and not later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_request_cannot_hold_shutdown_past_the_grace() {
    // A header timeout longer than the test, so that only the grace can end the request.
    let mut binary = Binary::start_with(&[
        ("TOLLGATE_SERVER__SHUTDOWN_GRACE", "1s"),
        ("TOLLGATE_SERVER__HEADER_TIMEOUT", "1m"),
    ])
    .await;
    let mut stuck = open_partial_request(&binary).await;

    let sent = binary.terminate();
    binary.until_refusing().await;
    let (status, after) = binary
        .exit_within(sent, SHORT_GRACE + Duration::from_secs(5))
        .await;
    assert_eq!(status.code(), Some(0), "exit status:\n{}", binary.log());
    // The server does not cut a partly received request short: it waits out the grace.
    assert!(
        after >= SHORT_GRACE - Duration::from_millis(100),
        "exited {after:?} after SIGTERM, before the grace ({SHORT_GRACE:?})"
    );
    assert!(
        closed_silently(&mut stuck).await,
        "the stuck connection is closed without a response"
    );
    assert!(
        binary.log().contains("open requests did not finish"),
        "the cut-off is logged:\n{}",
        binary.log()
    );
}

/// Under a descriptor limit of 64 and the default connection cap, 100 silent connections never
/// make accepting fail: those past the cap wait in the backlog, an ordinary request is answered
/// once the header timeout frees places, and no accept error is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_descriptor_limit_wait_without_accept_errors() {
    let binary =
        Binary::start_limited(&[("TOLLGATE_SERVER__HEADER_TIMEOUT", "300ms")], Some(64)).await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(
            TcpStream::connect(("127.0.0.1", binary.port))
                .await
                .unwrap(),
        );
    }
    let health = exchange(binary.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        health.is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "/healthz behind 100 silent connections:\n{}",
        binary.log()
    );
    let log = binary.log();
    assert!(
        !log.contains("accept error")
            && !log.contains("cannot accept")
            && !log.contains("Too many open files"),
        "accept errors were logged:\n{log}"
    );
}

/// A second SIGTERM (or SIGINT) during the grace ends the process at once, with a request
/// still open, rather than after the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_shutdown_at_once() {
    for second in ["-TERM", "-INT"] {
        let mut binary = Binary::start_with(&[
            ("TOLLGATE_SERVER__SHUTDOWN_GRACE", "1m"),
            ("TOLLGATE_SERVER__HEADER_TIMEOUT", "1m"),
        ])
        .await;
        let _stuck = open_partial_request(&binary).await;
        binary.terminate();
        binary.until_refusing().await;
        assert!(binary.running(), "exited before the second signal");
        let sent = binary.signal(second);
        let (status, _) = binary.exit_within(sent, Duration::from_secs(3)).await;
        assert!(status.code().is_some(), "killed by the signal: {status}");
        assert!(
            binary.log().contains("second signal"),
            "the early exit is logged:\n{}",
            binary.log()
        );
    }
}
