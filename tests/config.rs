//! Configuration, through the real binary: the layering order, every mistake rejected with its
//! key, the password kept out of every output, and `tollgate key`.
//!
//! Every run of `tollgate` gets a fresh working directory and an environment holding only `PATH`
//! and what the test sets, so the developer's own `TOLLGATE_*` variables never leak in. No Redis
//! is needed: where the service must talk to one, a fake that refuses every password stands in.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tollgate::config::Settings;
use tollgate::OnError;

/// The password the tests configure, and look for everywhere it must not be.
const PASSWORD: &str = "hunter2";

/// The key of `joe` under the default policy, as the documents spell it.
const JOE_KEY: &str =
    "tollgate:{78675cc176081372c43abab3ea9fb70c74381eb02dc6e93fb6d44d161da6eeb3}:per_minute";

/// The example file of docs/configuration.md, verbatim.
const EXAMPLE: &str = r#"listen = "127.0.0.1:8000"

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
struct Dir(TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().expect("a temporary directory"))
    }

    /// Writes `text` to `name` in the directory.
    fn file(self, name: &str, text: &str) -> Self {
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
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
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
    fn effective(&self, args: &[&str], env: &[(&str, &str)]) -> toml::Table {
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
    fn assert_rejected(&self, args: &[&str], env: &[(&str, &str)], key: &str) {
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
    fn serve(&self, env: &[(&str, &str)]) -> Serving {
        let listen = format!("127.0.0.1:{}", support::free_port());
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
struct Serving {
    child: Child,
    lines: mpsc::Receiver<String>,
    readers: Vec<thread::JoinHandle<()>>,
    output: String,
}

impl Serving {
    /// Kills the server and returns everything it wrote, on stdout and stderr.
    fn stop(&mut self) -> String {
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

/// A loopback port that nothing listens on right now.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `table["a"]["b"]` as a string, for `path` `["a", "b"]`.
fn lookup<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut table = table;
    for parent in parents {
        table = table.get(*parent)?.as_table()?;
    }
    table.get(*last)?.as_str()
}

/// Stands in for Redis: records what each connection sends first, and refuses every password.
struct FakeRedis {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl FakeRedis {
    fn start() -> Self {
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
    fn url(&self, userinfo: &str) -> String {
        format!("redis://{userinfo}127.0.0.1:{}/", self.port)
    }

    /// Everything the clients sent, as text.
    fn received(&self) -> String {
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
fn assert_hidden(secret: &str, output: &str, what: &str) {
    assert!(
        !output.contains(secret),
        "{what} shows the password: {output}"
    );
}

// --- Layering ----------------------------------------------------------------------------------

/// Without a file or a variable, the documented defaults apply and the memory store is chosen.
#[test]
fn defaults_apply_without_a_file_or_variables() {
    let effective = Dir::new().effective(&[], &[]);
    assert_eq!(lookup(&effective, &["listen"]), Some("127.0.0.1:8000"));
    assert_eq!(lookup(&effective, &["redis", "url"]), None);
    assert_eq!(
        lookup(&effective, &["redis", "key_prefix"]),
        Some("tollgate")
    );
    assert_eq!(lookup(&effective, &["redis", "on_error"]), Some("allow"));
    assert_eq!(lookup(&effective, &["redis", "timeout"]), Some("100ms"));
    assert_eq!(lookup(&effective, &["identity", "header"]), Some("x-user"));
    assert_eq!(lookup(&effective, &["headers"]), Some("all"));
    let policies = effective["policies"]
        .as_array()
        .expect("policies is an array");
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0]["name"].as_str(), Some("per_minute"));
    assert_eq!(policies[0]["limit"].as_integer(), Some(3));
    assert_eq!(policies[0]["window"].as_str(), Some("1m"));
}

/// `tollgate.toml` overrides the defaults, and `TOLLGATE_*` variables (`__` nesting) override it,
/// key by key, leaving the file's other keys in place.
#[test]
fn variables_override_the_file_which_overrides_the_defaults() {
    let dir = Dir::new().file(
        "tollgate.toml",
        "listen = \"127.0.0.1:9001\"\nheaders = \"denials\"\n[redis]\nkey_prefix = \"file\"\non_error = \"deny\"\n",
    );
    let from_file = dir.effective(&[], &[]);
    assert_eq!(lookup(&from_file, &["listen"]), Some("127.0.0.1:9001"));
    assert_eq!(lookup(&from_file, &["redis", "key_prefix"]), Some("file"));
    assert_eq!(lookup(&from_file, &["redis", "on_error"]), Some("deny"));
    assert_eq!(lookup(&from_file, &["redis", "timeout"]), Some("100ms"));
    assert_eq!(lookup(&from_file, &["headers"]), Some("denials"));

    let env = [
        ("TOLLGATE_LISTEN", "127.0.0.1:9002"),
        ("TOLLGATE_REDIS__KEY_PREFIX", "env"),
        ("TOLLGATE_REDIS__URL", "redis://127.0.0.1:6390"),
        ("TOLLGATE_HEADERS", "retry_after"),
    ];
    let from_env = dir.effective(&[], &env);
    assert_eq!(lookup(&from_env, &["listen"]), Some("127.0.0.1:9002"));
    assert_eq!(lookup(&from_env, &["redis", "key_prefix"]), Some("env"));
    assert_eq!(
        lookup(&from_env, &["redis", "url"]),
        Some("redis://127.0.0.1:6390")
    );
    assert_eq!(lookup(&from_env, &["redis", "on_error"]), Some("deny"));
    assert_eq!(lookup(&from_env, &["redis", "timeout"]), Some("100ms"));
    assert_eq!(lookup(&from_env, &["headers"]), Some("retry_after"));
}

/// `TOLLGATE_CONFIG` names the file to read instead of `./tollgate.toml`.
#[test]
fn tollgate_config_names_the_file() {
    let dir = Dir::new()
        .file("tollgate.toml", "[redis]\nkey_prefix = \"cwd\"\n")
        .file("named.toml", "[redis]\nkey_prefix = \"named\"\n");
    let effective = dir.effective(&[], &[("TOLLGATE_CONFIG", "named.toml")]);
    assert_eq!(lookup(&effective, &["redis", "key_prefix"]), Some("named"));
}

/// `--config` wins over `TOLLGATE_CONFIG` and over `./tollgate.toml`.
#[test]
fn the_config_flag_wins_over_tollgate_config() {
    let dir = Dir::new()
        .file("tollgate.toml", "[redis]\nkey_prefix = \"cwd\"\n")
        .file("named.toml", "[redis]\nkey_prefix = \"named\"\n")
        .file("flag.toml", "[redis]\nkey_prefix = \"flag\"\n");
    let effective = dir.effective(
        &["--config", "flag.toml"],
        &[("TOLLGATE_CONFIG", "named.toml")],
    );
    assert_eq!(lookup(&effective, &["redis", "key_prefix"]), Some("flag"));
}

/// `--config` is accepted before a subcommand and after it, for `key` and `check-config`.
#[test]
fn the_config_flag_works_before_and_after_a_subcommand() {
    let dir = Dir::new().file("my.toml", "[redis]\nkey_prefix = \"mine\"\n");
    for args in [
        &["--config", "my.toml", "key", "joe"][..],
        &["key", "joe", "--config", "my.toml"][..],
    ] {
        let output = dir.run(args, &[]);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        let stdout = text(&output.stdout);
        assert!(stdout.starts_with("mine:{"), "{args:?}: {stdout}");
    }
    for args in [
        &["--config", "my.toml", "check-config"][..],
        &["check-config", "--config", "my.toml"][..],
    ] {
        let output = dir.run(args, &[]);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        let stdout = text(&output.stdout);
        assert!(
            stdout.contains("key_prefix = \"mine\""),
            "{args:?}: {stdout}"
        );
    }
}

/// A `.env` file in the working directory is read, but never overrides a real variable.
#[test]
fn dotenv_is_read_but_never_overrides_the_environment() {
    let dir = Dir::new().file(
        ".env",
        "TOLLGATE_LISTEN=127.0.0.1:9100\nTOLLGATE_REDIS__KEY_PREFIX=dotenv\n",
    );
    let effective = dir.effective(&[], &[("TOLLGATE_LISTEN", "127.0.0.1:9200")]);
    assert_eq!(lookup(&effective, &["listen"]), Some("127.0.0.1:9200"));
    assert_eq!(lookup(&effective, &["redis", "key_prefix"]), Some("dotenv"));
}

/// The example file of docs/configuration.md loads as written, with the values it states.
#[test]
fn the_example_file_loads_as_written() {
    let settings = Settings::from_toml(EXAMPLE).expect("the example is valid");
    assert_eq!(settings.listen.to_string(), "127.0.0.1:8000");
    assert_eq!(
        settings.redis.as_ref().map(|r| r.redacted_url()),
        Some("redis://127.0.0.1:6379".to_owned())
    );
    assert_eq!(settings.key_prefix, "tollgate");
    assert_eq!(settings.on_error, OnError::Allow);
    assert_eq!(settings.timeout, Duration::from_millis(100));
    assert_eq!(settings.identity.header.as_str(), "x-user");
    let [policy] = &settings.policies[..] else {
        panic!("one policy expected: {:?}", settings.policies);
    };
    assert_eq!(policy.name().as_str(), "per_minute");
    assert_eq!(policy.limit(), 3);
    assert_eq!(policy.window().as_millis(), 60_000);

    let dir = Dir::new().file("tollgate.toml", EXAMPLE);
    let effective = dir.effective(&[], &[]);
    assert_eq!(
        lookup(&effective, &["redis", "url"]),
        Some("redis://127.0.0.1:6379")
    );
}

// --- Mistakes ----------------------------------------------------------------------------------

/// An unknown top-level key is rejected and named.
#[test]
fn an_unknown_top_level_key_is_rejected() {
    Dir::new()
        .file("tollgate.toml", "colour = \"blue\"\n")
        .assert_rejected(&[], &[], "colour");
}

/// An unknown nested key is rejected and named with its table.
#[test]
fn an_unknown_nested_key_is_rejected() {
    Dir::new()
        .file("tollgate.toml", "[redis]\nurll = \"redis://127.0.0.1\"\n")
        .assert_rejected(&[], &[], "redis.urll");
}

/// What Kubernetes injects for a Service named `tollgate` with one unnamed TCP port, 8000
/// (the kubelet's service links: the Service's host and port, and Docker-link variables).
const SERVICE_LINKS: [(&str, &str); 7] = [
    ("TOLLGATE_SERVICE_HOST", "10.96.0.12"),
    ("TOLLGATE_SERVICE_PORT", "8000"),
    ("TOLLGATE_PORT", "tcp://10.96.0.12:8000"),
    ("TOLLGATE_PORT_8000_TCP", "tcp://10.96.0.12:8000"),
    ("TOLLGATE_PORT_8000_TCP_PROTO", "tcp"),
    ("TOLLGATE_PORT_8000_TCP_PORT", "8000"),
    ("TOLLGATE_PORT_8000_TCP_ADDR", "10.96.0.12"),
];

/// Kubernetes' service links for a Service named `tollgate` (port 8000, unnamed or named
/// `http`) and for one named `tollgate-redis` stop nothing, are not warned about, and change
/// nothing in the configuration.
#[test]
fn kubernetes_service_links_are_ignored() {
    let dir = Dir::new();
    let plain = dir.run(&["check-config"], &[]);
    let mut named = SERVICE_LINKS.to_vec();
    named.push(("TOLLGATE_SERVICE_PORT_HTTP", "8000"));
    let mut other_service = SERVICE_LINKS.to_vec();
    other_service.extend([
        ("TOLLGATE_REDIS_SERVICE_HOST", "10.96.0.13"),
        ("TOLLGATE_REDIS_SERVICE_PORT", "6379"),
        ("TOLLGATE_REDIS_PORT", "tcp://10.96.0.13:6379"),
        ("TOLLGATE_REDIS_PORT_6379_TCP", "tcp://10.96.0.13:6379"),
        ("TOLLGATE_REDIS_PORT_6379_TCP_PROTO", "tcp"),
        ("TOLLGATE_REDIS_PORT_6379_TCP_PORT", "6379"),
        ("TOLLGATE_REDIS_PORT_6379_TCP_ADDR", "10.96.0.13"),
    ]);
    for env in [SERVICE_LINKS.to_vec(), named, other_service] {
        let output = dir.run(&["check-config"], &env);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        assert_eq!(text(&output.stderr), "", "{env:?}");
        assert_eq!(text(&output.stdout), text(&plain.stdout));
    }
    let logs = dir.serve(&SERVICE_LINKS).stop();
    assert!(!logs.contains("TOLLGATE_PORT"), "{logs}");
}

/// A `TOLLGATE_*` variable that names no key (a typo, or a lone `TOLLGATE_PORT` outside
/// Kubernetes) is ignored with a warning naming it and the key it likely meant, never its value:
/// on stderr for `check-config`, in the log when serving.
#[test]
fn a_misspelt_variable_is_warned_about() {
    let dir = Dir::new();
    let env = [
        ("TOLLGATE_REDIS__URLL", "redis://:hunter2@127.0.0.1"),
        ("TOLLGATE_REDIS_TIMEOUT", "1s"),
        ("TOLLGATE_PORT", "tcp://10.96.0.12:8000"),
    ];
    let output = dir.run(&["check-config"], &env);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_hidden(PASSWORD, &stderr, "the warning");
    let expected = [
        "TOLLGATE_REDIS__URLL is ignored: it would set redis.urll, which is not a configuration \
         key; did you mean TOLLGATE_REDIS__URL (redis.url)?",
        "TOLLGATE_REDIS_TIMEOUT is ignored: it would set redis_timeout, which is not a \
         configuration key; did you mean TOLLGATE_REDIS__TIMEOUT (redis.timeout)?",
        "TOLLGATE_PORT is ignored: it would set port, which is not a configuration key",
    ];
    for warning in expected {
        let line = format!("tollgate: warning: {warning}");
        assert!(
            stderr.lines().any(|l| l == line),
            "{line} is missing: {stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    assert_eq!(
        text(&output.stdout),
        text(&dir.run(&["check-config"], &[]).stdout)
    );
    let logs = dir.serve(&env[..1]).stop();
    assert!(
        logs.contains("WARN") && logs.contains(expected[0]),
        "{logs}"
    );
    assert_hidden(PASSWORD, &logs, "the log");
}

/// A limit of 0 is rejected and named.
#[test]
fn a_limit_of_zero_is_rejected() {
    Dir::new()
        .file(
            "tollgate.toml",
            "[[policies]]\nname = \"p\"\nlimit = 0\nwindow = \"1m\"\n",
        )
        .assert_rejected(&[], &[], "policies[0].limit");
}

/// A window in milliseconds is rejected, naming the key and exactly the units a window takes.
#[test]
fn a_window_in_milliseconds_is_rejected_with_the_units_windows_take() {
    for window in ["1500ms", "60000ms"] {
        let dir = Dir::new().file(
            "tollgate.toml",
            &format!("[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"{window}\"\n"),
        );
        dir.assert_rejected(&[], &[], "policies[0].window");
        let stderr = text(&dir.run(&["check-config"], &[]).stderr);
        assert!(stderr.contains("use s, m, h or d"), "{stderr}");
        assert!(!stderr.contains("ms, "), "{stderr}");
    }
}

/// A window that does not parse is rejected and named.
#[test]
fn an_unparsable_window_is_rejected() {
    Dir::new()
        .file(
            "tollgate.toml",
            "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"a while\"\n",
        )
        .assert_rejected(&[], &[], "policies[0].window");
}

/// A policy name used twice is rejected, naming the second.
#[test]
fn a_duplicate_policy_name_is_rejected() {
    let policy = "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\n";
    Dir::new()
        .file("tollgate.toml", &format!("{policy}{policy}"))
        .assert_rejected(&[], &[], "policies[1].name");
}

/// An algorithm tollgate does not know is rejected and named.
#[test]
fn an_unknown_algorithm_is_rejected() {
    Dir::new()
        .file(
            "tollgate.toml",
            "[[policies]]\nname = \"p\"\nalgorithm = \"leaky_bucket\"\nlimit = 3\nwindow = \"1m\"\n",
        )
        .assert_rejected(&[], &[], "policies[0].algorithm");
}

/// A value no configuration enum knows is rejected, from the file or from a variable, with the
/// key and every value it accepts.
#[test]
fn an_unknown_enum_value_names_the_key_and_the_accepted_values() {
    for (table, key, accepted) in [
        ("", "headers", &["all", "denials", "retry_after"][..]),
        ("redis", "on_error", &["allow", "deny", "local"]),
        ("identity", "on_missing", &["allow", "deny", "ip"]),
        (
            "identity",
            "forwarded_header",
            &["x-forwarded-for", "forwarded"],
        ),
        ("log", "format", &["text", "json"]),
    ] {
        let dotted = if table.is_empty() {
            key.to_owned()
        } else {
            format!("{table}.{key}")
        };
        let file = format!("[{table}]\n{key} = \"sometimes\"\n").replace("[]\n", "");
        let variable = format!("TOLLGATE_{}", dotted.replace('.', "__").to_uppercase());
        let from_file = Dir::new()
            .file("tollgate.toml", &file)
            .run(&["check-config"], &[]);
        let from_variable = Dir::new().run(&["check-config"], &[(&variable, "sometimes")]);
        for output in [from_file, from_variable] {
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{dotted}: {stderr}");
            assert!(
                stderr.contains(&format!(" {dotted}: \"sometimes\" is not one of ")),
                "{stderr}"
            );
            for value in accepted {
                assert!(
                    stderr.contains(&format!("\"{value}\"")),
                    "{value} not named: {stderr}"
                );
            }
        }
    }
}

/// A URL that is not a Redis URL is rejected, from the file or from a variable.
#[test]
fn a_url_that_is_not_redis_is_rejected() {
    for url in [
        "http://127.0.0.1:6379/",
        "postgres://127.0.0.1/app",
        "127.0.0.1",
    ] {
        Dir::new()
            .file("tollgate.toml", &format!("[redis]\nurl = \"{url}\"\n"))
            .assert_rejected(&[], &[], "redis.url");
        Dir::new().assert_rejected(&[], &[("TOLLGATE_REDIS__URL", url)], "redis.url");
    }
}

/// A `redis.on_error` other than allow or deny is rejected and named.
#[test]
fn a_bad_on_error_is_rejected() {
    Dir::new()
        .file("tollgate.toml", "[redis]\non_error = \"maybe\"\n")
        .assert_rejected(&[], &[], "redis.on_error");
    Dir::new().assert_rejected(
        &[],
        &[("TOLLGATE_REDIS__ON_ERROR", "maybe")],
        "redis.on_error",
    );
}

/// A `redis.timeout` that is not a duration, or is zero, is rejected and named.
#[test]
fn a_bad_timeout_is_rejected() {
    for timeout in ["\"soon\"", "\"100\"", "\"0ms\"", "100"] {
        Dir::new()
            .file("tollgate.toml", &format!("[redis]\ntimeout = {timeout}\n"))
            .assert_rejected(&[], &[], "redis.timeout");
    }
}

/// Every other validated key rejects a bad value with its name.
#[test]
fn other_bad_values_are_rejected() {
    for (toml, key) in [
        ("[identity]\nheader = \"x user\"\n", "identity.header"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("headers = \"quota\"\n", "headers"),
        ("[redis]\nbreaker_failures = 0\n", "redis.breaker_failures"),
        (
            "[redis]\nbreaker_cool_down = \"soon\"\n",
            "redis.breaker_cool_down",
        ),
        ("[redis]\nlocal_divisor = 0\n", "redis.local_divisor"),
        ("[redis]\nconnections = 0\n", "redis.connections"),
        ("[redis]\nconnections = 65\n", "redis.connections"),
        ("[redis]\nmax_batch = 0\n", "redis.max_batch"),
        ("[redis]\nmax_batch = 1025\n", "redis.max_batch"),
        (
            "[identity]\nforwarded_header = \"via\"\n",
            "identity.forwarded_header",
        ),
        (
            "[redis]\nurl = \"redis-sentinel://127.0.0.1:26379\"\n",
            "redis.url",
        ),
        ("[redis]\nkey_prefix = \"a{b}\"\n", "redis.key_prefix"),
        (
            "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\ncost = 0\n",
            "policies[0].cost",
        ),
        (
            "[[policies]]\nname = \"p\"\nwindow = \"1m\"\n",
            "policies[0].limit",
        ),
    ] {
        Dir::new()
            .file("tollgate.toml", toml)
            .assert_rejected(&[], &[], key);
    }
    // The file's `listen` would give way to the held port: set the mistake where it wins.
    Dir::new().assert_rejected(&[], &[("TOLLGATE_LISTEN", "localhost:8000")], "listen");
}

/// `memory.max_callers` defaults to a million, and is read from the file and from
/// `TOLLGATE_MEMORY__MAX_CALLERS`, the variable winning.
#[test]
fn memory_max_callers_comes_from_the_default_the_file_and_the_variable() {
    let max_callers = |table: &toml::Table| table["memory"]["max_callers"].as_integer();
    assert_eq!(
        max_callers(&Dir::new().effective(&[], &[])),
        Some(1_000_000)
    );
    let dir = Dir::new().file("tollgate.toml", "[memory]\nmax_callers = 5000\n");
    assert_eq!(max_callers(&dir.effective(&[], &[])), Some(5_000));
    let env = [("TOLLGATE_MEMORY__MAX_CALLERS", "70")];
    assert_eq!(max_callers(&dir.effective(&[], &env)), Some(70));
}

/// A cap below one, or not a whole number, stops the process naming `memory.max_callers`.
#[test]
fn a_bad_memory_max_callers_is_rejected() {
    for value in ["0", "-1", "\"lots\"", "1.5"] {
        Dir::new()
            .file(
                "tollgate.toml",
                &format!("[memory]\nmax_callers = {value}\n"),
            )
            .assert_rejected(&[], &[], "memory.max_callers");
    }
    for value in ["0", "lots"] {
        let env = [("TOLLGATE_MEMORY__MAX_CALLERS", value)];
        Dir::new().assert_rejected(&[], &env, "memory.max_callers");
    }
}

/// Policies that could never admit, or that name unknown callers, routes or networks, are
/// rejected at startup with the key named.
#[test]
fn bad_policy_scopes_are_rejected() {
    let limit =
        |extra: &str| format!("[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\n{extra}");
    for (toml, key) in [
        (limit("cost = 4\n"), "policies[0].cost"),
        (limit("by = \"planet\"\n"), "policies[0].by"),
        (limit("by = [\"user\", \"user\"]\n"), "policies[0].by"),
        (limit("by = []\n"), "policies[0].by"),
        (limit("routes = [\"user\"]\n"), "policies[0].routes[0]"),
        (
            limit("routes = [\"GET /a\", \"/a*b\"]\n"),
            "policies[0].routes[1]",
        ),
        (limit("burst = 5\n"), "policies[0].burst"),
        (
            limit("algorithm = \"token_bucket\"\nburst = 2\ncost = 3\n"),
            "policies[0].cost",
        ),
        (
            "[identity]\ntrusted_proxies = [\"10.0.0.0/33\"]\n".to_owned(),
            "identity.trusted_proxies[0]",
        ),
        (
            "[identity]\ntrusted_proxies = [\"10.0.0.1\", \"proxy.local\"]\n".to_owned(),
            "identity.trusted_proxies[1]",
        ),
        (
            "[identity]\non_missing = \"maybe\"\n".to_owned(),
            "identity.on_missing",
        ),
        (
            "[identity]\nipv6_prefix = 0\n".to_owned(),
            "identity.ipv6_prefix",
        ),
        (
            "[identity]\nhash_key = \"\"\n".to_owned(),
            "identity.hash_key",
        ),
        (
            limit("[policies.costs]\n\"POST /export\" = 4\n"),
            "policies[0].costs.\"POST /export\"",
        ),
        (
            limit("[policies.costs]\n\"export\" = 2\n"),
            "policies[0].costs.\"export\"",
        ),
    ] {
        Dir::new()
            .file("tollgate.toml", &toml)
            .assert_rejected(&[], &[], key);
    }
}

/// A hash key is a secret: check-config shows it as a comment saying it is set.
#[test]
fn a_hash_key_never_appears() {
    let output = Dir::new()
        .file("tollgate.toml", "[identity]\nhash_key = \"pepper-0451\"\n")
        .run(&["check-config"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(!stdout.contains("pepper-0451"), "{stdout}");
    assert!(stdout.contains("# hash_key is set (not shown)"), "{stdout}");
}

/// `check-config` prints the derived defaults, `redis.connections` and
/// `redis.breaker_cool_down` among them, and never a placeholder that would read back as a
/// secret.
#[test]
fn check_config_prints_derived_defaults() {
    let effective = Dir::new().effective(&[], &[("TOLLGATE_REDIS__TIMEOUT", "1s")]);
    assert!(effective["redis"]["connections"].as_integer().unwrap() >= 1);
    assert_eq!(
        lookup(&effective, &["redis", "breaker_cool_down"]),
        Some("2s")
    );
    let shown = text(
        &Dir::new()
            .run(&["check-config"], &[("TOLLGATE_REDIS__PASSWORD", "pw")])
            .stdout,
    );
    assert!(!shown.contains("***"), "{shown}");
    assert!(shown.contains("# password is set (not shown)"), "{shown}");
}

/// The output of `check-config`, fed back with `--config`, gives the same output: nothing is
/// changed by the round trip, with and without secrets set through the environment.
#[test]
fn check_config_output_reads_back_unchanged() {
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:6379/0");
    let token_bucket = "[[policies]]\nname = \"b\"\nalgorithm = \"token_bucket\"\nlimit = 5\n\
                        window = \"1m\"\nroutes = [\"GET /user\"]\nby = [\"user\", \"route\"]\n\
                        costs = { \"GET /user\" = 2 }\n";
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        ("", vec![]),
        (token_bucket, vec![("TOLLGATE_REDIS__TIMEOUT", "300ms")]),
        (
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\n",
            vec![
                ("TOLLGATE_REDIS__PASSWORD", PASSWORD),
                ("TOLLGATE_IDENTITY__HASH_KEY", "k"),
            ],
        ),
        ("", vec![("TOLLGATE_REDIS__URL", &url)]),
    ];
    for (file, env) in cases {
        let dir = Dir::new().file("in.toml", file);
        let first = dir.run(&["--config", "in.toml", "check-config"], &env);
        assert!(first.status.success(), "{}", text(&first.stderr));
        let first = text(&first.stdout);
        assert_hidden(PASSWORD, &first, "check-config");
        // No placeholder that would read back as a secret: `password = "***"` would.
        assert!(!first.contains("***"), "{first}");
        let dir = dir.file("out.toml", &first);
        let second = dir.run(&["--config", "out.toml", "check-config"], &env);
        assert!(second.status.success(), "{}", text(&second.stderr));
        assert_eq!(text(&second.stdout), first, "{file} {env:?}");
        // Read back without the variables, a secret is missing, and says so: not replaced.
        let alone = text(
            &dir.run(&["--config", "out.toml", "check-config"], &[])
                .stdout,
        );
        if env
            .iter()
            .any(|(name, _)| *name == "TOLLGATE_REDIS__PASSWORD")
        {
            assert!(alone.contains("# password is not set"), "{alone}");
        }
    }
}

/// A `--config` or `TOLLGATE_CONFIG` file that does not exist is rejected, naming where it came
/// from.
#[test]
fn a_missing_config_file_is_rejected() {
    Dir::new().assert_rejected(&["--config", "missing.toml"], &[], "--config");
    Dir::new().assert_rejected(
        &[],
        &[("TOLLGATE_CONFIG", "missing.toml")],
        "TOLLGATE_CONFIG",
    );
}

/// A TOML syntax error is one line naming the file, not a multi-line excerpt.
#[test]
fn a_toml_syntax_error_is_one_line() {
    Dir::new()
        .file("tollgate.toml", "listen = \n")
        .assert_rejected(&[], &[], "tollgate.toml");
}

// --- The password ------------------------------------------------------------------------------

/// A URL's user info without a colon (a password whose colon was forgotten) is never shown,
/// neither by `Debug` nor by `check-config`.
#[test]
fn a_password_without_its_colon_never_appears() {
    let url = format!("redis://{PASSWORD}@127.0.0.1:6379/0");
    let settings = Settings::from_toml(&format!("[redis]\nurl = \"{url}\"\n")).unwrap();
    for shown in [
        format!("{settings:?}"),
        settings.effective_toml(),
        settings.redis.as_ref().unwrap().redacted_url(),
    ] {
        assert_hidden(PASSWORD, &shown, "Debug");
    }
    let shown = text(
        &Dir::new()
            .run(&["check-config"], &[("TOLLGATE_REDIS__URL", &url)])
            .stdout,
    );
    assert_hidden(PASSWORD, &shown, "check-config");
    assert!(
        shown.contains("# url holds a password (not shown)"),
        "{shown}"
    );
    let url = format!("redis://{PASSWORD}@127.0.0.1:{}/", support::free_port());
    let logs = Dir::new().serve(&[("TOLLGATE_REDIS__URL", &url)]).stop();
    assert!(logs.contains("redis://***@127.0.0.1:"), "{logs}");
    assert_hidden(PASSWORD, &logs, "the log");
}

/// `Debug` of the settings never shows a password, neither `redis.password` nor one in the URL.
#[test]
fn debug_never_shows_the_password() {
    let settings = Settings::from_toml(&format!(
        "[redis]\nurl = \"redis://app:{PASSWORD}@127.0.0.1:6379/0\"\npassword = \"s3cr3t-pw\"\n"
    ))
    .expect("the configuration is valid");
    for shown in [
        format!("{settings:?}"),
        format!("{settings:#?}"),
        settings.effective_toml(),
        settings
            .redis
            .as_ref()
            .expect("redis is set")
            .redacted_url(),
    ] {
        assert_hidden(PASSWORD, &shown, "Debug");
        assert_hidden("s3cr3t-pw", &shown, "Debug");
    }
    assert!(format!("{settings:?}").contains("redis://app:***@127.0.0.1:6379/0"));
}

/// An error about a value that holds the password never shows it, and is one line.
#[test]
fn errors_never_show_the_password() {
    let mistakes = [
        format!("[redis]\nurl = \"http://:{PASSWORD}@127.0.0.1:6379/\"\n"),
        format!("[redis]\nurl = \"postgres://app:{PASSWORD}@db/app\"\n"),
        format!("[redis]\nurl = \"redis://:{PASSWORD}@127.0.0.1:port/\"\n"),
        format!("[redis]\nurl = \"redis://:{PASSWORD}@/\"\n"),
        format!("[redis]\nurl = [\"redis://:{PASSWORD}@127.0.0.1/\"]\n"),
        format!("redis = \"redis://:{PASSWORD}@127.0.0.1/\"\n"),
        format!("[redis]\npassword = \"{PASSWORD}\n"),
        "[redis]\npassword = 20250101\n".to_owned(),
        // fred quotes a node= value it cannot read.
        format!("[redis]\nurl = \"redis-cluster://127.0.0.1:7000?node=app:{PASSWORD}@h:7001\"\n"),
        format!("[redis]\nurl = \"redis-cluster://127.0.0.1:7000?node=h:7001:{PASSWORD}\"\n"),
        // fred would take `hunter2@h` for a host, and log it when it cannot connect.
        format!("[redis]\nurl = \"redis-cluster://127.0.0.1:7000?node={PASSWORD}@h:7001\"\n"),
        format!("[redis]\nurl = \"redis-sentinel://h:1/m?node={PASSWORD}%40h:7001\"\n"),
    ];
    for toml in &mistakes {
        let error = Settings::from_toml(toml).expect_err(toml);
        for shown in [error.to_string(), format!("{error:?}")] {
            assert_hidden(PASSWORD, &shown, "the error");
            assert_hidden("20250101", &shown, "the error");
            assert!(!shown.contains('\n'), "not one line: {shown}");
        }
    }
}

/// A `.env` line that cannot be parsed is reported by number, without its text.
#[test]
fn a_broken_dotenv_line_is_reported_without_its_text() {
    let dir = Dir::new().file(
        ".env",
        &format!("TOLLGATE_LISTEN=127.0.0.1:9000\nTOLLGATE_REDIS__PASSWORD=\"{PASSWORD}\n"),
    );
    dir.assert_rejected(&[], &[], ".env");
    let output = dir.run(&["check-config"], &[]);
    let stderr = text(&output.stderr);
    assert_hidden(PASSWORD, &stderr, "the error");
    assert!(stderr.contains("line 2"), "{stderr}");
}

/// `redis.password` from the file reaches Redis, and never appears in `check-config` or logs.
#[test]
fn a_password_from_the_file_never_appears() {
    let redis = FakeRedis::start();
    let dir = Dir::new().file(
        "tollgate.toml",
        &format!(
            "[redis]\nurl = \"{}\"\npassword = \"{PASSWORD}\"\n",
            redis.url("")
        ),
    );
    assert_password_is_used_but_hidden(&dir, &[], &redis);
}

/// `TOLLGATE_REDIS__PASSWORD` reaches Redis, and never appears in `check-config` or logs.
#[test]
fn a_password_from_the_environment_never_appears() {
    let redis = FakeRedis::start();
    let url = redis.url("");
    let env = [
        ("TOLLGATE_REDIS__URL", url.as_str()),
        ("TOLLGATE_REDIS__PASSWORD", PASSWORD),
    ];
    assert_password_is_used_but_hidden(&Dir::new(), &env, &redis);
}

/// A password in `.env` reaches Redis, and never appears in `check-config` or logs.
#[test]
fn a_password_from_dotenv_never_appears() {
    let redis = FakeRedis::start();
    let dir = Dir::new().file(
        ".env",
        &format!(
            "TOLLGATE_REDIS__URL={}\nTOLLGATE_REDIS__PASSWORD={PASSWORD}\n",
            redis.url("")
        ),
    );
    assert_password_is_used_but_hidden(&dir, &[], &redis);
}

/// A password inside the URL reaches Redis, and never appears in `check-config` or logs.
#[test]
fn a_password_in_the_url_never_appears() {
    let redis = FakeRedis::start();
    let url = redis.url(&format!(":{PASSWORD}@"));
    assert_password_is_used_but_hidden(&Dir::new(), &[("TOLLGATE_REDIS__URL", &url)], &redis);
}

/// With Redis on a closed port, the logs (fred's included) never show the URL's password.
#[test]
fn a_password_in_the_url_never_appears_while_redis_is_down() {
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", support::free_port());
    let logs = Dir::new().serve(&[("TOLLGATE_REDIS__URL", &url)]).stop();
    assert!(logs.contains("fred"), "fred's logs are missing: {logs}");
    assert_hidden(PASSWORD, &logs, "the log");
}

/// `rediss://` opens with a TLS handshake, so the password is never sent in plain text.
#[test]
fn a_rediss_url_speaks_tls_not_plain_text() {
    let redis = FakeRedis::start();
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{}/", redis.port);
    let logs = Dir::new().serve(&[("TOLLGATE_REDIS__URL", &url)]).stop();
    assert_hidden(PASSWORD, &logs, "the log");
    let received = redis.received.lock().unwrap().clone();
    // 0x16 is a TLS handshake record: the ClientHello, where plain Redis would begin with `*`.
    assert_eq!(received.first(), Some(&0x16), "not TLS: {received:?}");
    assert_hidden(PASSWORD, &text(&received), "the wire");
}

/// The password is taken from the environment as written, not as a TOML value: `007` stays
/// `007`, where figment would make it the number 7 and reject it.
#[test]
fn a_numeric_password_from_the_environment_is_sent_as_written() {
    let redis = FakeRedis::start();
    let url = redis.url("");
    let env = [
        ("TOLLGATE_REDIS__URL", url.as_str()),
        ("TOLLGATE_REDIS__PASSWORD", "007"),
    ];
    let dir = Dir::new();
    let shown = text(&dir.run(&["check-config"], &env).stdout);
    assert!(shown.contains("# password is set (not shown)"), "{shown}");
    dir.serve(&env).stop();
    assert!(
        redis.received().contains("$3\r\n007\r\n"),
        "AUTH 007 was not sent: {:?}",
        redis.received()
    );
}

/// Asserts that the configured password is sent to Redis but shown by neither `check-config`
/// nor the service's logs.
fn assert_password_is_used_but_hidden(dir: &Dir, env: &[(&str, &str)], redis: &FakeRedis) {
    let output = dir.run(&["check-config"], env);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = text(&output.stdout);
    assert_hidden(PASSWORD, &shown, "check-config");
    assert!(
        shown.contains("(not shown)"),
        "no hidden secret is mentioned: {shown}"
    );

    let logs = dir.serve(env).stop();
    assert!(logs.contains("fred"), "fred's logs are missing: {logs}");
    assert_hidden(PASSWORD, &logs, "the log");
    assert!(
        redis.received().contains(PASSWORD),
        "the password never reached Redis: {:?}",
        redis.received()
    );
}

// --- Redis at startup --------------------------------------------------------------------------

// --- Keys --------------------------------------------------------------------------------------

/// `tollgate key joe` prints the documented key of the default policy, and nothing else.
#[test]
fn key_prints_the_documented_key() {
    let output = Dir::new().run(&["key", "joe"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), format!("{JOE_KEY}\n"));
}

/// `tollgate key` prints one line per configured policy, in order, under `redis.key_prefix`.
#[test]
fn key_prints_one_line_per_policy_under_the_prefix() {
    let dir = Dir::new().file(
        "tollgate.toml",
        "[redis]\nkey_prefix = \"app\"\n\
         [[policies]]\nname = \"per_second\"\nlimit = 5\nwindow = \"1s\"\n\
         [[policies]]\nname = \"per_hour\"\nlimit = 100\nwindow = \"1h\"\n",
    );
    let output = dir.run(&["key", "joe"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let tag = "{78675cc176081372c43abab3ea9fb70c74381eb02dc6e93fb6d44d161da6eeb3}";
    assert_eq!(
        text(&output.stdout),
        format!("app:{tag}:per_second\napp:{tag}:per_hour\n")
    );
}

// --- server -----------------------------------------------------------------------------------

/// The `[server]` keys default to 10 s, 1 min, a cap sized at startup and 10 s; the file sets
/// them, and `TOLLGATE_SERVER__*` variables override the file.
#[test]
fn server_keys_default_and_layer() {
    let effective = Dir::new().effective(&[], &[]);
    assert_eq!(
        lookup(&effective, &["server", "header_timeout"]),
        Some("10s")
    );
    assert_eq!(lookup(&effective, &["server", "idle_timeout"]), Some("1m"));
    assert_eq!(
        lookup(&effective, &["server", "shutdown_grace"]),
        Some("10s")
    );
    assert!(effective["server"].get("max_connections").is_none());

    let dir = Dir::new().file(
        "tollgate.toml",
        "[server]\nheader_timeout = \"2s\"\nidle_timeout = \"5s\"\nmax_connections = 100\n\
         shutdown_grace = \"3s\"\n",
    );
    let effective = dir.effective(&[], &[]);
    assert_eq!(
        lookup(&effective, &["server", "header_timeout"]),
        Some("2s")
    );
    assert_eq!(lookup(&effective, &["server", "idle_timeout"]), Some("5s"));
    assert_eq!(
        lookup(&effective, &["server", "shutdown_grace"]),
        Some("3s")
    );
    assert_eq!(
        effective["server"]["max_connections"].as_integer(),
        Some(100)
    );

    let effective = dir.effective(
        &[],
        &[
            ("TOLLGATE_SERVER__HEADER_TIMEOUT", "200ms"),
            ("TOLLGATE_SERVER__IDLE_TIMEOUT", "1m"),
            ("TOLLGATE_SERVER__MAX_CONNECTIONS", "7"),
            ("TOLLGATE_SERVER__SHUTDOWN_GRACE", "1s"),
        ],
    );
    assert_eq!(
        lookup(&effective, &["server", "header_timeout"]),
        Some("200ms")
    );
    assert_eq!(lookup(&effective, &["server", "idle_timeout"]), Some("1m"));
    assert_eq!(
        lookup(&effective, &["server", "shutdown_grace"]),
        Some("1s")
    );
    assert_eq!(effective["server"]["max_connections"].as_integer(), Some(7));
}

/// A bad `[server]` value, from the file or a variable, exits 2 naming its key.
#[test]
fn bad_server_values_are_rejected() {
    for key in ["header_timeout", "idle_timeout", "shutdown_grace"] {
        for value in ["\"soon\"", "\"0s\"", "10"] {
            Dir::new()
                .file("tollgate.toml", &format!("[server]\n{key} = {value}\n"))
                .assert_rejected(&[], &[], &format!("server.{key}"));
        }
        let var = format!("TOLLGATE_SERVER__{}", key.to_ascii_uppercase());
        Dir::new().assert_rejected(&[], &[(&var, "later")], &format!("server.{key}"));
    }
    for value in ["0", "-1", "\"many\""] {
        Dir::new()
            .file(
                "tollgate.toml",
                &format!("[server]\nmax_connections = {value}\n"),
            )
            .assert_rejected(&[], &[], "server.max_connections");
    }
    Dir::new().assert_rejected(
        &[],
        &[("TOLLGATE_SERVER__MAX_CONNECTIONS", "0")],
        "server.max_connections",
    );
}
