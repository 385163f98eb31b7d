//! The real `tollgate` binary run as a child process, and the raw TCP exchanges the tests
//! that signal it use to watch it serve, drain and stop.

use std::fs::File;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::free_port;

/// How long the binary may take to start answering `/healthz`.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a connect or a read may take before the test gives up on it.
pub const IO_DEADLINE: Duration = Duration::from_secs(5);
/// The `tollgate` binary on the memory store, serving from an empty temporary directory with
/// nothing in its environment but `PATH` and `TOLLGATE_LISTEN`; killed on drop if still running.
pub struct Binary {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    /// Holds the log file and is the working directory, so no `tollgate.toml` or `.env` is read.
    dir: tempfile::TempDir,
}

impl Binary {
    /// Starts the binary on a free port and waits until it answers `/healthz`.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the binary with the variables `env` besides, on a free port, and waits until it
    /// answers `/healthz`.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_limited(env, None).await
    }

    /// As [`Binary::start_with`], with both descriptor limits set to `nofile` if given, as
    /// `ulimit -n` does.
    pub async fn start_limited(env: &[(&str, &str)], nofile: Option<u64>) -> Self {
        Self::start_in(&[], env, nofile).await
    }

    /// As [`Binary::start_with`], with `files` (name, text) written to its working directory
    /// first: a `tollgate.toml` there is read as the default configuration file.
    pub async fn start_with_files(files: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        Self::start_in(files, env, None).await
    }

    async fn start_in(files: &[(&str, &str)], env: &[(&str, &str)], nofile: Option<u64>) -> Self {
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            for (name, text) in files {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
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
    pub async fn until_serving(&mut self) -> bool {
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

    /// Its working directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// What the process has written to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Sends SIGTERM, as an orchestrator stopping the container would; returns when it was sent.
    pub fn terminate(&self) -> Instant {
        self.signal("-TERM")
    }

    /// Sends `signal` (`-TERM`, `-INT`) with `kill`; returns when it was sent.
    pub fn signal(&self, signal: &str) -> Instant {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed: {sent}");
        Instant::now()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Polls until new connections are refused, which shows the listener is closed.
    pub async fn until_refusing(&mut self) {
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
    pub async fn exit_within(&mut self, since: Instant, bound: Duration) -> (ExitStatus, Duration) {
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
pub async fn exchange(port: u16, request: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(request).await.ok()?;
    read_response(&mut stream).await
}

/// Reads one response from `stream`: up to the end of a `Content-Length` body, or to EOF.
/// `None` if the connection ends before any byte arrives.
pub async fn read_response(stream: &mut TcpStream) -> Option<String> {
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
pub fn complete(response: &[u8]) -> bool {
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
pub async fn closed_silently(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(IO_DEADLINE, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}
