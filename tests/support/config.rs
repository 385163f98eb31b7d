//! What the configuration tests share: the real binary run in a directory of its own, its
//! effective configuration read back, and a fake Redis that refuses every password.
//!
//! Every run of `tollgate` gets a fresh working directory and an environment holding only `PATH`
//! and what the test sets, so the developer's own `TOLLGATE_*` variables never leak in. No Redis
//! is needed: where the service must talk to one, a fake that refuses every password stands in.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The password the tests configure, and look for everywhere it must not be.
pub const PASSWORD: &str = "hunter2";

/// The key of `joe` under the default policy, as the documents spell it.
pub const JOE_KEY: &str =
    "tollgate:{78675cc176081372c43abab3ea9fb70c74381eb02dc6e93fb6d44d161da6eeb3}:per_minute";

/// The example file of docs/configuration.md, verbatim.
pub const EXAMPLE: &str = r#"listen = "127.0.0.1:8000"

[redis]
url = "redis://127.0.0.1:6379"
key_prefix = "tollgate"
on_error = "allow"
timeout = "100ms"

[identity]
header = "x-user"

[[policies]]
name = "per_minute"
algorithm = "fixed_window"
limit = 3
window = "1m"
"#;

/// A working directory for the binary, deleted on drop.
pub struct Dir(TempDir);

impl Dir {
    /// A fresh, empty directory.
    pub fn new() -> Self {
        Dir(tempfile::tempdir().expect("a temporary directory"))
    }

    /// Writes `text` to `name` in the directory.
    pub fn file(self, name: &str, text: &str) -> Self {
        std::fs::write(self.0.path().join(name), text).expect("the file is written");
        self
    }

    /// `tollgate ARGS` run here, with only `PATH` and `env` in its environment.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .args(args)
            .current_dir(self.0.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        command
    }

    /// Runs `tollgate ARGS` to completion; a run that does not end within 10 s is killed and
    /// fails the test, so a server that wrongly starts cannot hang the suite.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut child = self
            .command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tollgate binary runs");
        let (sender, pipes) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        for (is_stdout, mut pipe) in [
            (true, Box::new(stdout) as Box<dyn Read + Send>),
            (false, Box::new(stderr)),
        ] {
            let sender = sender.clone();
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                let _ = sender.send((is_stdout, bytes));
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut output = Output {
            status: Default::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match pipes.recv_timeout(left) {
                Ok((true, bytes)) => output.stdout = bytes,
                Ok((false, bytes)) => output.stderr = bytes,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("tollgate {args:?} did not exit within 10 s");
                }
            }
        }
        output.status = child.wait().expect("tollgate exits");
        output
    }

    /// `tollgate check-config`, which must succeed, parsed back from TOML.
    pub fn effective(&self, args: &[&str], env: &[(&str, &str)]) -> toml::Table {
        let mut args = args.to_vec();
        args.push("check-config");
        let output = self.run(&args, env);
        assert!(
            output.status.success(),
            "check-config failed: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
            .parse()
            .expect("check-config prints TOML")
    }

    /// Asserts that a mistake stops both `check-config` and the server with exit code 2 and one
    /// line on stderr naming `key`, and that the server stops before binding its port.
    pub fn assert_rejected(&self, args: &[&str], env: &[(&str, &str)], key: &str) {
        // Held for the whole check: a server that got past the configuration would fail to bind
        // it and exit 1, not 2, so exit code 2 proves it stopped before binding.
        let held = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let listen = held.local_addr().expect("a bound address").to_string();
        let mut serve_env = env.to_vec();
        if !env.iter().any(|(name, _)| *name == "TOLLGATE_LISTEN") {
            serve_env.push(("TOLLGATE_LISTEN", &listen));
        }
        let mut check_args = args.to_vec();
        check_args.push("check-config");
        for (what, output) in [
            ("check-config", self.run(&check_args, env)),
            ("serve", self.run(args, &serve_env)),
        ] {
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{what}: not one line: {stderr}");
            assert!(
                stderr.contains(&format!(" {key}: ")),
                "{what}: {key} is not named: {stderr}"
            );
            assert!(
                output.stdout.is_empty(),
                "{what} printed: {}",
                text(&output.stdout)
            );
        }
    }

    /// Starts serving, with every log enabled, and waits until the log says it is serving.
    pub fn serve(&self, env: &[(&str, &str)]) -> Serving {
        let listen = format!("127.0.0.1:{}", super::free_port());
        let mut env = env.to_vec();
        env.extend([("TOLLGATE_LISTEN", listen.as_str()), ("RUST_LOG", "trace")]);
        let mut child = self
            .command(&[], &env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tollgate starts");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let readers = vec![
            forward_lines(stdout, sender.clone()),
            forward_lines(stderr, sender),
        ];
        let mut serving = Serving {
            child,
            lines,
            readers,
            output: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match serving.lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains("tollgate is serving");
                    serving.output.push_str(&line);
                    serving.output.push('\n');
                    if ready {
                        return serving;
                    }
                }
                Err(_) => panic!("tollgate did not start serving: {}", serving.stop()),
            }
        }
    }
}

/// A running `tollgate`, killed on drop.
pub struct Serving {
    child: Child,
    lines: mpsc::Receiver<String>,
    readers: Vec<thread::JoinHandle<()>>,
    output: String,
}

impl Serving {
    /// Kills the server and returns everything it wrote, on stdout and stderr.
    pub fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in std::mem::take(&mut self.readers) {
            reader.join().expect("the reader thread ends");
        }
        for line in self.lines.try_iter() {
            self.output.push_str(&line);
            self.output.push('\n');
        }
        self.output.clone()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends each line read from `pipe` down `lines`, until the pipe closes.
fn forward_lines(
    pipe: impl Read + Send + 'static,
    lines: mpsc::Sender<String>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    })
}

/// `bytes` as text, any invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `table["a"]["b"]` as a string, for `path` `["a", "b"]`.
pub fn lookup<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut table = table;
    for parent in parents {
        table = table.get(*parent)?.as_table()?;
    }
    table.get(*last)?.as_str()
}

/// Stands in for Redis: records what each connection sends first, and refuses every password.
pub struct FakeRedis {
    /// The port it listens on.
    pub port: u16,
    /// The first bytes of each connection, in order.
    pub received: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl FakeRedis {
    /// Listens on a free loopback port, answering each connection on a thread of its own.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("a bound address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (received.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buffer = [0; 4096];
                if let Ok(n) = stream.read(&mut buffer) {
                    log.lock().unwrap().extend_from_slice(&buffer[..n]);
                }
                let _ = stream.write_all(b"-WRONGPASS invalid username-password pair\r\n");
            }
        });
        FakeRedis {
            port,
            received,
            stop,
        }
    }

    /// `redis://<userinfo>127.0.0.1:<port>/`.
    pub fn url(&self, userinfo: &str) -> String {
        format!("redis://{userinfo}127.0.0.1:{}/", self.port)
    }

    /// Everything the clients sent, as text.
    pub fn received(&self) -> String {
        text(&self.received.lock().unwrap())
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Asserts that `output` does not contain `secret`.
pub fn assert_hidden(secret: &str, output: &str, what: &str) {
    assert!(
        !output.contains(secret),
        "{what} shows the password: {output}"
    );
}
