//! Robustness against untrusted input and process signals: bad caller names over real HTTP on
//! both stores, graceful shutdown of the real binary on SIGTERM, and property tests that the
//! parsers of untrusted input (forwarding headers, CIDRs, route patterns, durations, policy
//! names, configuration) return `Ok` or a one-line `Err`, and never panic.

#[macro_use]
mod support;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate::client_ip::{bucket, Cidr, ForwardedHeader, Proxies};
use tollgate::quota::{parse_duration, MAX_WINDOW_MS};
use tollgate::scope::RoutePattern;
use tollgate::{KeyBuilder, PolicyName, Settings, Window};

use support::{free_port, header, Backend, TestApp, NO_BOUNDARY};

// ---------------------------------------------------------------------------------------------
// Bad caller names, over real HTTP
// ---------------------------------------------------------------------------------------------

/// The policy's limit in the bad-name tests.
const LIMIT: usize = 2;

/// One fixed-window policy, `per_minute`, of [`LIMIT`] per window, keyed by user.
fn limited_toml() -> String {
    format!("[[limits]]\nname = \"per_minute\"\nlimit = {LIMIT}\nwindow = \"{NO_BOUNDARY}\"\n")
}

/// The Redis key of a caller named by `name` under `per_minute`, as `tollgate key` prints it.
fn key_of(name: &[u8]) -> String {
    let keys = KeyBuilder::new("tollgate");
    keys.key(&keys.tag(name), &PolicyName::new("per_minute").unwrap())
}

/// `GET /user` with the identity header set to `name`, whatever its bytes.
async fn get_as(app: &TestApp, client: &reqwest::Client, name: &HeaderValue) -> reqwest::Response {
    client
        .get(app.url("/user"))
        .header("x-user", name.clone())
        .send()
        .await
        .expect("the service answers")
}

/// The service still answers `/healthz` with 200.
async fn assert_healthy(app: &TestApp, client: &reqwest::Client) {
    let health = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/healthz after bad names");
}

/// A 16 KiB name and a non-UTF-8 name (`\xff\xfejoe`) are hashed like any other name: limited
/// after `limit` requests, one key each of the normal length, echoed lossily by `/user`.
async fn oversized_and_non_utf8_names_are_hashed(backend: &Backend) {
    let app = backend.app(&limited_toml()).await;
    let client = reqwest::Client::new();
    let long = "a".repeat(16 * 1024);
    let names = [
        (HeaderValue::from_str(&long).unwrap(), long.clone()),
        (
            HeaderValue::from_bytes(b"\xff\xfejoe").unwrap(),
            "\u{FFFD}\u{FFFD}joe".to_owned(),
        ),
    ];
    for (name, echoed) in &names {
        let shown = &echoed[..echoed.len().min(12)];
        let before = backend.keys().await;
        for i in 0..LIMIT {
            let response = get_as(&app, &client, name).await;
            assert_eq!(response.status(), 200, "request {i} as {shown:?}…");
            assert!(response.headers().contains_key("ratelimit"), "{shown:?}…");
            assert_eq!(
                header(&response, "x-ratelimit-remaining"),
                (LIMIT - 1 - i).to_string(),
                "{shown:?}…"
            );
            let body: Option<String> = response.json().await.unwrap();
            assert_eq!(body.as_deref(), Some(echoed.as_str()), "/user echoes");
        }
        let denied = get_as(&app, &client, name).await;
        assert_eq!(denied.status(), 429, "request {LIMIT} as {shown:?}…");
        if let (Some(before), Some(after)) = (before, backend.keys().await) {
            let new: Vec<&String> = after.difference(&before).collect();
            assert_eq!(new, [&key_of(name.as_bytes())], "one key for {shown:?}…");
            assert_eq!(new[0].len(), key_of(b"joe").len(), "a bounded key length");
        }
    }
    assert_healthy(&app, &client).await;
}
on_both_stores!(oversized_and_non_utf8_names_are_hashed);

/// An empty name and an all-spaces name are treated as missing (HTTP strips the spaces, so the
/// value arrives empty): never limited, no RateLimit headers, no key, `/user` answers `null`.
async fn empty_and_blank_names_are_missing(backend: &Backend) {
    let app = backend.app(&limited_toml()).await;
    let client = reqwest::Client::new();
    for name in ["", "   "] {
        for i in 0..LIMIT + 2 {
            let response = get_as(&app, &client, &HeaderValue::from_static(name)).await;
            assert_eq!(response.status(), 200, "request {i} as {name:?}");
            for limited in ["ratelimit", "ratelimit-policy", "x-ratelimit-limit"] {
                assert!(
                    !response.headers().contains_key(limited),
                    "{name:?} got {limited}"
                );
            }
            let body: Option<String> = response.json().await.unwrap();
            assert_eq!(body, None, "/user as {name:?}");
        }
    }
    if let Some(keys) = backend.keys().await {
        assert!(keys.is_empty(), "keys for a missing name: {keys:?}");
    }
    assert_healthy(&app, &client).await;
}
on_both_stores!(empty_and_blank_names_are_missing);

// ---------------------------------------------------------------------------------------------
// Graceful shutdown of the real binary
// ---------------------------------------------------------------------------------------------

/// How long the binary may take to start answering `/healthz`.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a connect or a read may take before the test gives up on it.
const IO_DEADLINE: Duration = Duration::from_secs(5);

/// The default `server.shutdown_grace`.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The `server.shutdown_grace` of the tests that wait it out.
const SHORT_GRACE: Duration = Duration::from_secs(1);

/// The first half of a request to `/user` as `joe`: its headers are not finished.
const PARTIAL_REQUEST: &[u8] = b"GET /user HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User: joe\r\n";

/// The `tollgate` binary on the memory store, serving from an empty temporary directory with
/// nothing in its environment but `PATH` and `TOLLGATE_LISTEN`; killed on drop if still running.
struct Binary {
    child: Child,
    port: u16,
    /// Holds the log file and is the working directory, so no `tollgate.toml` or `.env` is read.
    dir: tempfile::TempDir,
}

impl Binary {
    /// Starts the binary on a free port and waits until it answers `/healthz`.
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the binary with the variables `env` besides, on a free port, and waits until it
    /// answers `/healthz`.
    async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_limited(env, None).await
    }

    /// As [`Binary::start_with`], with both descriptor limits set to `nofile` if given, as
    /// `ulimit -n` does.
    async fn start_limited(env: &[(&str, &str)], nofile: Option<u64>) -> Self {
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let log = File::create(dir.path().join("log")).unwrap();
            let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
            if let Some(nofile) = nofile {
                let limit = libc::rlimit {
                    rlim_cur: nofile as libc::rlim_t,
                    rlim_max: nofile as libc::rlim_t,
                };
                // SAFETY: setrlimit is async-signal-safe and touches only the child's limits.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::last_os_error())
                        }
                    });
                }
            }
            let child = command
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("the tollgate binary starts");
            let mut binary = Binary { child, port, dir };
            if binary.until_serving().await {
                return binary;
            }
        }
        panic!("tollgate found no free port in 3 tries");
    }

    /// Polls until this very process logs that it serves and `/healthz` answers 200; false if
    /// it exited because the port was taken meanwhile.
    async fn until_serving(&mut self) -> bool {
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log();
                assert!(
                    log.contains("cannot listen"),
                    "tollgate exited with {status} before serving:\n{log}"
                );
                return false;
            }
            // The log line proves the port is this process's, not another test's server.
            if self.log().contains("tollgate is serving") {
                let health = exchange(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
                if health.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "tollgate did not answer /healthz within {START_DEADLINE:?}:\n{}",
            self.log()
        );
    }

    /// What the process has written to stdout and stderr.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Sends SIGTERM, as an orchestrator stopping the container would; returns when it was sent.
    fn terminate(&self) -> Instant {
        self.signal("-TERM")
    }

    /// Sends `signal` (`-TERM`, `-INT`) with `kill`; returns when it was sent.
    fn signal(&self, signal: &str) -> Instant {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed: {sent}");
        Instant::now()
    }

    /// Whether the process is still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Polls until new connections are refused, which shows the listener is closed.
    async fn until_refusing(&mut self) {
        let deadline = Instant::now() + IO_DEADLINE;
        loop {
            match TcpStream::connect(("127.0.0.1", self.port)).await {
                // A reset is a refusal too: the listener went away mid-handshake.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return
                }
                Err(e) => panic!("connect failed otherwise than refused: {e}"),
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "still accepting connections {IO_DEADLINE:?} after SIGTERM:\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls until the process exits, failing if that takes longer than `bound` from `since`;
    /// returns its status and when it exited after `since`.
    async fn exit_within(&mut self, since: Instant, bound: Duration) -> (ExitStatus, Duration) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, since.elapsed());
            }
            assert!(
                since.elapsed() < bound,
                "tollgate still running {bound:?} after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `request` on a new connection and reads the response until the server closes it (or
/// the read stalls after a complete response); `None` if the server cannot be reached.
async fn exchange(port: u16, request: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(request).await.ok()?;
    read_response(&mut stream).await
}

/// Reads one response from `stream`: up to the end of a `Content-Length` body, or to EOF.
/// `None` if the connection ends before any byte arrives.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
            if complete(&response) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(IO_DEADLINE, read).await;
    (!response.is_empty()).then(|| String::from_utf8_lossy(&response).into_owned())
}

/// Whether `response` holds a whole head and its `Content-Length` body.
fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .is_some_and(|length| body.len() >= length)
}

/// Whether the server has closed `stream` without sending anything: EOF or a reset.
async fn closed_silently(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(IO_DEADLINE, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

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

// ---------------------------------------------------------------------------------------------
// Parsers of untrusted input never panic
// ---------------------------------------------------------------------------------------------

/// Whether an error message is a single line, as the binary prints it.
fn one_line(message: &str) -> bool {
    !message.contains(['\n', '\r'])
}

/// Any Unicode text, text from the alphabets the parsers care about, printable ASCII, or
/// text with line breaks and other control characters in it.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-F:./\\[\\]\"=,; \t*_{}-]{0,40}",
        "[ -~]{0,40}",
        "\\PC{0,20}",
        "[a-z/:.0-9 ]{0,8}[\n\r\t\u{0}\u{1b}\u{7f}\u{85}\u{2028}][a-z/:.0-9 ]{0,8}",
    ]
}

/// Addresses that often repeat (so hops, peers and trusted networks meet), any address, and
/// IPv4-mapped IPv6 ones.
fn addr() -> impl Strategy<Value = IpAddr> {
    let pool: Vec<IpAddr> = [
        "10.0.0.1",
        "10.0.0.2",
        "192.0.2.7",
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "2001:db8::1",
        "2001:db8:1:2::99",
        "::1",
        "::",
        "::ffff:10.0.0.3",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    prop_oneof![
        3 => proptest::sample::select(pool),
        1 => any::<IpAddr>(),
        1 => any::<Ipv4Addr>().prop_map(|v4| IpAddr::V6(v4.to_ipv6_mapped())),
    ]
}

/// A CIDR as text: an address and a prefix that may be out of range, or any text.
fn cidr_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (addr(), 0..=140u8).prop_map(|(a, p)| format!("{a}/{p}")),
        addr().prop_map(|a| a.to_string()),
        (addr(), text()).prop_map(|(a, p)| format!("{a}/{p}")),
        (text(), 0..=140u8).prop_map(|(a, p)| format!("{a}/{p}")),
        text(),
    ]
}

/// A trusted network as text: a typical proxy network, or any CIDR text.
fn trusted_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "10.0.0.0/8",
            "192.0.2.0/24",
            "127.0.0.1",
            "2001:db8::/32",
            "::ffff:10.0.0.0/104",
            "0.0.0.0/0",
        ])
        .prop_map(str::to_owned),
        cidr_text(),
    ]
}

/// One entry of a forwarding header, well-formed in every way tollgate reads, or not.
fn hop() -> impl Strategy<Value = String> {
    prop_oneof![
        addr().prop_map(|a| a.to_string()),
        (addr(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(a, p).to_string()),
        addr().prop_map(|a| format!("[{a}]")),
        addr().prop_map(|a| format!("for={a}")),
        (addr(), any::<u16>()).prop_map(|(a, p)| format!("For=\"{}\"", SocketAddr::new(a, p))),
        (addr(), "[a-z]{0,5}").prop_map(|(a, p)| format!("proto={p};for=\"[{a}]\";by=x")),
        "[ -~]{0,12}",
    ]
}

/// A header value's bytes: hops joined by separators, or any bytes a header value may hold
/// (visible ASCII, obs-text, space and tab).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let visible = prop_oneof![Just(b'\t'), 0x20..0x7fu8, 0x80..=0xffu8];
    prop_oneof![
        3 => (
            proptest::collection::vec(hop(), 0..6),
            proptest::sample::select(vec![",", ", ", " ,", ";", ",,"])
        )
            .prop_map(|(hops, sep)| hops.join(sep).into_bytes()),
        1 => proptest::collection::vec(visible, 0..64),
    ]
}

/// An HTTP method: a standard one or any token.
fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        proptest::sample::select(vec![
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ]),
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// A route pattern as text: a method-like word and a path-like string, or any text.
fn route_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            proptest::sample::select(vec!["", "GET ", "POST ", "HEAD ", "get ", "FOO ", " "]),
            "/[a-z/.]{0,10}(/\\*)?",
        )
            .prop_map(|(m, p)| format!("{m}{p}")),
        (
            "[A-Za-z]{0,7}|GET|POST",
            "[ \t]{0,2}",
            "[/a-z*. \t{}]{0,14}"
        )
            .prop_map(|(m, sep, p)| format!("{m}{sep}{p}")),
        "[/a-z*]{0,14}",
        text(),
    ]
}

/// A duration as text: digits (maybe too many for a u64) and a unit (maybe unknown), or any
/// text.
fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            "[ \t]{0,1}",
            "[0-9]{0,22}",
            "ms|s|m|h|d|[a-zµ ]{0,3}",
            "[ \t]{0,1}"
        )
            .prop_map(|(a, n, u, b)| format!("{a}{n}{u}{b}")),
        text(),
    ]
}

/// `text` as a TOML basic string, escaped so that any value reaches the validator.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Configurations with one `{}` to fill: each line puts a value where a key, a string, a
/// list item or a table key of a valid configuration would be.
const STRING_SLOTS: &[&str] = &[
    "listen = {}",
    "{} = 1",
    "[redis]\nurl = {}",
    "[redis]\nkey_prefix = {}",
    "[redis]\non_error = {}",
    "[redis]\ntimeout = {}",
    "[redis]\npassword = {}",
    "[redis]\n{} = \"x\"",
    "[identity]\nheader = {}",
    "[identity]\ntrusted_proxies = [{}]",
    "[identity]\ntrusted_proxies = [\"10.0.0.0/8\", {}]",
    "[identity]\nforwarded_header = {}",
    "[identity]\non_missing = {}",
    "[identity]\nhash_key = {}",
    "[log]\nformat = {}",
    "[log]\n{} = 1",
    "[[limits]]\nname = {}\nlimit = 3\nwindow = \"1m\"",
    "[[limits]]\nname = \"p\"\nalgorithm = {}\nlimit = 3\nwindow = \"1m\"",
    "[[limits]]\nname = \"p\"\nlimit = 3\nwindow = {}",
    "[[limits]]\nname = \"p\"\nalgorithm = \"token_bucket\"\nlimit = 3\nwindow = {}\nburst = 9",
    "[[limits]]\nname = \"p\"\nalgorithm = \"sliding_window\"\nlimit = 1000000\nwindow = {}",
    "[[limits]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\nroutes = [{}]",
    "[[limits]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\nby = {}",
    "[[limits]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\nby = [\"user\", {}]",
    "[[limits]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\ncosts = { {} = 2 }",
    "[[limits]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\n{} = 1",
];

/// Configurations with one `{}` to fill with a number.
const NUMBER_SLOTS: &[&str] = &[
    "[identity]\nipv6_prefix = {}",
    "[[limits]]\nname = \"p\"\nlimit = {}\nwindow = \"1s\"",
    "[[limits]]\nname = \"p\"\nlimit = {}\nwindow = \"36500d\"\nalgorithm = \"sliding_window\"",
    "[[limits]]\nname = \"p\"\nlimit = {}\nwindow = \"1s\"\nalgorithm = \"token_bucket\"",
    "[[limits]]\nname = \"p\"\nlimit = 1000\nwindow = \"36500d\"\nalgorithm = \"token_bucket\"\nburst = {}",
    "[[limits]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\ncost = {}",
    "[[limits]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\ncosts = { \"/a\" = {} }",
];

/// A value for a string slot: URL-shaped for `redis.url`, else any text.
fn slot_value() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        (
            proptest::sample::select(vec![
                "redis://",
                "rediss://",
                "redis-cluster://",
                "redis-sentinel://",
                "rediss-sentinel://"
            ]),
            "[ -~]{0,30}"
        )
            .prop_map(|(scheme, rest)| format!("{scheme}{rest}")),
        cidr_text(),
        route_text(),
        duration_text(),
    ]
}

/// A number for a number slot: around the bounds, or any integer TOML can write.
fn slot_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0..=300u64).prop_map(|n| n.to_string()),
        proptest::sample::select(vec![
            "0",
            "-1",
            "1000000000000",
            "1000000000001",
            "18446744073709551615",
            "18446744073709551616",
            "1e3",
            "1.5",
            "\"3\"",
            "inf",
            "nan",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Checks what `Settings::from_toml` gave for `toml`: an `Err` is one line; settings that
/// loaded can be printed by `check-config` and give fred a client configuration.
fn check_settings(toml: &str) -> Result<(), TestCaseError> {
    match Settings::from_toml(toml) {
        Ok(settings) => {
            let _ = settings.effective_toml();
            let _ = settings.key_builder();
            if let Some(redis) = &settings.redis {
                let _ = redis.client_config();
            }
        }
        Err(error) => {
            let message = error.to_string();
            prop_assert!(one_line(&message), "{toml:?} gave {message:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/robustness.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// `Proxies::client` never panics on any X-Forwarded-For or Forwarded bytes, under either
    /// header setting and any trusted networks; an untrusted peer is its own client, and the
    /// client is canonical and has a bucket.
    #[test]
    fn client_address_never_panics(
        cidrs in proptest::collection::vec(trusted_text(), 0..4),
        trust_peer in any::<bool>(),
        forwarded in any::<bool>(),
        peer in addr(),
        xff in proptest::collection::vec(header_bytes(), 0..3),
        fwd in proptest::collection::vec(header_bytes(), 0..3),
        ipv6_prefix in 1..=128u8,
    ) {
        let proxies = Proxies {
            trusted: cidrs
                .iter()
                .chain(trust_peer.then(|| peer.to_string()).as_ref())
                .filter_map(|c| Cidr::parse(c).ok())
                .collect(),
            header: if forwarded {
                ForwardedHeader::Forwarded
            } else {
                ForwardedHeader::XForwardedFor
            },
        };
        let mut headers = HeaderMap::new();
        for (name, lines) in [("x-forwarded-for", &xff), ("forwarded", &fwd)] {
            for line in lines {
                headers.append(name, HeaderValue::from_bytes(line).unwrap());
            }
        }
        let client = proxies.client(peer, &headers);
        if !proxies.trusts(peer) {
            prop_assert_eq!(client, peer.to_canonical());
        }
        prop_assert_eq!(client, client.to_canonical());
        prop_assert!(bucket(client, ipv6_prefix).starts_with("\0ip:"));
    }

    /// `Cidr::parse` never panics; an `Err` is one line, and a CIDR that parses prints as text
    /// that parses back to it and contains its own network address.
    #[test]
    fn cidr_parse_never_panics(text in cidr_text(), other in addr()) {
        match Cidr::parse(&text) {
            Ok(cidr) => {
                let printed = cidr.to_string();
                prop_assert_eq!(Cidr::parse(&printed), Ok(cidr), "{:?} printed {:?}", text, printed);
                let network: IpAddr = printed.split_once('/').unwrap().0.parse().unwrap();
                prop_assert!(cidr.contains(network));
                let _ = cidr.contains(other);
            }
            Err(message) => prop_assert!(one_line(&message), "{:?} gave {:?}", text, message),
        }
    }

    /// `RoutePattern::parse` never panics, nor does `matches` on any method and path; a pattern
    /// prints as text that parses back to it, and matches a request written like itself.
    #[test]
    fn route_pattern_parse_never_panics(
        text in route_text(), method in method(), path in text(),
    ) {
        match RoutePattern::parse(&text) {
            Ok(pattern) => {
                let _ = pattern.matches(&method, &path);
                let printed = pattern.to_string();
                prop_assert_eq!(RoutePattern::parse(&printed), Ok(pattern.clone()));
                let (own_method, own_path) = match printed.split_once(' ') {
                    Some((m, p)) => (Method::from_bytes(m.as_bytes()).unwrap(), p),
                    None => (Method::GET, printed.as_str()),
                };
                prop_assert!(pattern.matches(&own_method, own_path), "{:?} vs {:?}", text, printed);
            }
            Err(message) => prop_assert!(one_line(&message), "{:?} gave {:?}", text, message),
        }
    }

    /// `parse_duration` and `Window::parse` never panic; a parsed duration is the number times
    /// its unit, a window is whole seconds within 100 years and never written in ms, and an
    /// `Err` is one line.
    #[test]
    fn duration_and_window_parse_never_panic(text in duration_text()) {
        let trimmed = text.trim();
        let digits = trimmed.len() - trimmed.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let unit_ms = match &trimmed[digits..] {
            "ms" => Some(1u64),
            "s" => Some(1_000),
            "m" => Some(60_000),
            "h" => Some(3_600_000),
            "d" => Some(86_400_000),
            _ => None,
        };
        let expected = trimmed[..digits]
            .parse::<u64>()
            .ok()
            .zip(unit_ms)
            .and_then(|(n, unit)| n.checked_mul(unit));
        match parse_duration(&text) {
            Ok(duration) => prop_assert_eq!(Some(duration), expected.map(Duration::from_millis)),
            Err(message) => {
                prop_assert_eq!(expected, None, "{:?} refused: {}", text, message);
                prop_assert!(one_line(&message), "{:?} gave {:?}", text, message);
            }
        }
        match Window::parse(&text) {
            Ok(window) => {
                let ms = window.as_millis();
                prop_assert!(ms > 0 && ms % 1000 == 0 && ms <= MAX_WINDOW_MS, "{:?}: {}", text, ms);
                prop_assert!(!trimmed.ends_with("ms"), "{:?} accepted", text);
                prop_assert_eq!(Some(ms), expected);
            }
            Err(message) => prop_assert!(one_line(&message), "{:?} gave {:?}", text, message),
        }
    }

    /// `PolicyName::new` never panics, accepts exactly 1 to 64 ASCII letters, digits, `_`, `-`
    /// and `.`, and refuses anything else with one line.
    #[test]
    fn policy_name_never_panics(name in prop_oneof![text(), "[a-zA-Z0-9_.-]{0,70}"]) {
        let valid = (1..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        match PolicyName::new(&name) {
            Ok(policy) => {
                prop_assert!(valid, "{:?} accepted", name);
                prop_assert_eq!(policy.as_str(), name.as_str());
            }
            Err(message) => {
                prop_assert!(!valid, "{:?} refused: {}", name, message);
                prop_assert!(one_line(&message), "{:?} gave {:?}", name, message);
            }
        }
    }

    /// `Settings::from_toml` never panics on any text, and its error is one line.
    #[test]
    fn settings_from_any_text_never_panic(toml in prop_oneof![
        text(),
        "[\\[\\]a-z_\"=. \n0-9{},]{0,80}",
    ]) {
        check_settings(&toml)?;
    }

    /// `Settings::from_toml` never panics on any value in any slot of a valid configuration,
    /// spliced raw between quotes or escaped as a TOML string; its error is one line.
    #[test]
    fn settings_with_any_value_never_panic(
        slot in proptest::sample::select(STRING_SLOTS),
        value in slot_value(),
        escaped in any::<bool>(),
    ) {
        let literal = if escaped { toml_string(&value) } else { format!("\"{value}\"") };
        check_settings(&slot.replacen("{}", &literal, 1))?;
    }

    /// `Settings::from_toml` never panics on any number in a numeric slot; its error is one
    /// line.
    #[test]
    fn settings_with_any_number_never_panic(
        slot in proptest::sample::select(NUMBER_SLOTS),
        number in slot_number(),
    ) {
        check_settings(&slot.replacen("{}", &number, 1))?;
    }
}
