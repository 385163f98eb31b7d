//! The documentation's blocks of real output, checked against what the binary, the service,
//! curl and redis-cli print today, so that they cannot drift.
//!
//! A block is marked by `<!-- output: NAME -->` on the line before its fence, in README.md or
//! any file under docs/. A console block (`$ command` lines, each followed by what it prints)
//! is run as written, with `sh`, through the real `curl` and `redis-cli`, with `tollgate` being
//! this build's binary and `localhost:8000` the address of a service started for the test.
//! What changes from run to run (dates, seconds left in a window, window starts, TTLs, call
//! counts) is masked on both sides before they are compared; everything else must be equal.

mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use tempfile::TempDir;

use support::binary::Binary;
use support::{clear_of_minute_boundary, free_port, RedisServer, TestApp};

/// Every marked block, by name; each has its test below.
const MARKED: [&str; 18] = [
    "quick-start-log",
    "quick-start-curl",
    "quick-start-no-user",
    "readyz",
    "redis-startup-log",
    "shared-calls",
    "looking-at-keys",
    "live-changes",
    "example-config",
    "readme-config",
    "config-errors",
    "check-config",
    "tollgate-key",
    "several-policies-first-request",
    "two-policies-fourth-request",
    "stray-variable",
    "readyz-wrong-password",
    "readyz-breaker-open",
];

/// README.md and every Markdown file under docs/, with their paths.
fn documents() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                paths.push(path);
            }
        }
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("the document reads");
            (path, text)
        })
        .collect()
}

/// The names of every `<!-- output: NAME -->` marker in the documents, with repeats.
fn markers() -> Vec<String> {
    let marker = Regex::new(r"<!-- output: ([a-z0-9-]+) -->").unwrap();
    documents()
        .iter()
        .flat_map(|(_, text)| {
            marker
                .captures_iter(text)
                .map(|c| c[1].to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The text inside the fenced block that follows the marker `name`, with a final newline.
fn block(name: &str) -> String {
    let marker = format!("<!-- output: {name} -->");
    for (path, text) in documents() {
        let Some(at) = text.find(&marker) else {
            continue;
        };
        let mut lines = text[at + marker.len()..].lines().skip(1);
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "{}: {marker} must be followed by a fenced block, not {fence:?}",
            path.display()
        );
        let body: Vec<&str> = lines.take_while(|line| !line.starts_with("```")).collect();
        return body.iter().map(|line| format!("{line}\n")).collect();
    }
    panic!("no block is marked {marker} in README.md or docs/");
}

/// Every marker names a block some test here checks, once; every block checked is marked.
#[test]
fn every_marked_block_is_checked_and_every_check_has_its_block() {
    let found = markers();
    let unique: BTreeSet<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), found.len(), "a marker is repeated: {found:?}");
    assert_eq!(unique, BTreeSet::from(MARKED));
}

// ---------------------------------------------------------------------------------------------
// Running what a block shows
// ---------------------------------------------------------------------------------------------

/// `tollgate inspect`'s table with its columns joined by ` | ` and its waits masked: a wait's
/// digits move from run to run, and with them the columns' widths.
fn steady_tables(text: &str) -> String {
    let wait = Regex::new(r"^\d+[dhms]( \d+[dhms])?$").unwrap();
    let gap = Regex::new(r"  +").unwrap();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let is_table =
            line.starts_with("policy  ") || (line.contains("tollgate:{") && line.contains("  "));
        if !is_table {
            out.push_str(line);
            continue;
        }
        let cells: Vec<String> = gap
            .split(line.trim_end())
            .map(|cell| match cell.rsplit_once(" for ") {
                Some((verdict, left)) if wait.is_match(left) => format!("{verdict} for <t>"),
                _ if wait.is_match(cell) => "<t>".to_owned(),
                _ => cell.to_owned(),
            })
            .collect();
        out.push_str(&cells.join(" | "));
        out.push('\n');
    }
    out
}

/// Masks what changes from run to run, the same way in the document and in the output.
fn steady(text: &str) -> String {
    let text = &steady_tables(text);
    let masks = [
        // HTTP dates, and the seconds left in a window wherever the headers give them.
        (r"(?m)^date: .*$", "date: <date>"),
        (r"\bt=\d+", "t=<s>"),
        (r"(?m)^(x-ratelimit-reset|retry-after): \d+", "$1: <s>"),
        // The connection cap, sized from the machine's descriptor limit.
        (r"max_connections=\d+", "max_connections=<n>"),
        // The configuration's digest, which any change to the defaults changes.
        (r#"sha256=("?)[0-9a-f]{16}"#, "sha256=$1<digest>"),
        // A fixed window's stored value ("3:1795805580000:60000"), its start masked, and a TTL.
        (r#""(\d+):\d{13}:(\d+)""#, "\"$1:<window start>:$2\""),
        (r"\(integer\) \d+", "(integer) <n>"),
        // Call counts and times, which depend on how requests meet.
        (
            r"calls=\d+,usec=\d+,usec_per_call=[\d.]+",
            "calls=<n>,usec=<n>,usec_per_call=<n>",
        ),
        (r"(?m)^(tollgate_store_calls_total) \d+$", "$1 <n>"),
    ];
    masks.iter().fold(text.to_owned(), |text, (pattern, with)| {
        Regex::new(pattern)
            .unwrap()
            .replace_all(&text, *with)
            .into_owned()
    })
}

/// Asserts that `actual` is the block `name`, masked alike; with `BLESS_DOCS=1` in the
/// environment, a block that differs is rewritten with `actual` instead, for a person to review
/// in the diff.
fn assert_block(name: &str, actual: &str) {
    let documented = block(name);
    if std::env::var_os("BLESS_DOCS").is_some() && steady(&documented) != steady(actual) {
        return bless(name, actual);
    }
    assert_eq!(
        steady(&documented),
        steady(actual),
        "the block marked {name:?} no longer matches; what the program prints now is:\n{actual}"
    );
}

/// Replaces the block marked `name` with `actual`.
fn bless(name: &str, actual: &str) {
    static ONE_WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _writing = ONE_WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let marker = format!("<!-- output: {name} -->\n");
    for (path, text) in documents() {
        let Some(at) = text.find(&marker) else {
            continue;
        };
        let fence_end = at + marker.len() + text[at + marker.len()..].find('\n').unwrap() + 1;
        let body_end = fence_end + text[fence_end..].find("```").unwrap();
        let blessed = format!("{}{actual}{}", &text[..fence_end], &text[body_end..]);
        std::fs::write(&path, blessed).unwrap();
        return;
    }
    panic!("no block is marked {name:?}");
}

/// A working directory and a `PATH` on which `tollgate` is this build's binary and `redis-cli`
/// talks to the test's Redis.
struct Shell {
    dir: TempDir,
    /// `localhost:8000` in a command becomes this address.
    service: Option<String>,
    /// `redis://localhost:6379` in a command becomes this URL.
    redis: Option<String>,
}

impl Shell {
    fn new(service: Option<&TestApp>, redis: Option<&RedisServer>) -> Shell {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tollgate"), bin.join("tollgate")).unwrap();
        // curl draws a progress meter on stderr when its output is not a terminal; a reader's
        // terminal never shows it.
        std::fs::write(dir.path().join(".curlrc"), "no-progress-meter\n").unwrap();
        if let Some(redis) = redis {
            let real = which("redis-cli");
            let wrapper = bin.join("redis-cli");
            // --no-raw: quoted strings and "(integer)", as redis-cli prints on a terminal.
            let script = format!(
                "#!/bin/sh\nexec {} -p {} --no-raw \"$@\"\n",
                real,
                redis.port()
            );
            std::fs::write(&wrapper, script).unwrap();
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Shell {
            dir,
            service: service.map(|app| app.addr.to_string()),
            redis: redis.map(RedisServer::url),
        }
    }

    /// Writes `text` to `name` in the working directory.
    fn file(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    /// Runs `command` as a user would type it, with only `PATH` in the environment.
    fn run(&self, command: &str) -> Output {
        let mut command = command.replace("target/release/tollgate", "tollgate");
        if let Some(addr) = &self.service {
            command = command.replace("localhost:8000", addr);
        }
        if let Some(url) = &self.redis {
            command = command.replace("redis://localhost:6379", url);
        }
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // Pinned to one core: the default of redis.connections follows the cores, and the
        // documents show what a small machine prints.
        Command::new("taskset")
            .args(["-c", "0", "sh", "-c", &command])
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("sh runs")
    }

    /// Runs each `$ command` of a console block and returns the transcript: each command, then
    /// what it printed (stdout, then stderr), as a terminal would show it.
    fn transcript(&self, console: &str) -> String {
        let mut out = String::new();
        for command in console.lines().filter_map(|line| line.strip_prefix("$ ")) {
            let output = self.run(command);
            out.push_str(&format!("$ {command}\n"));
            for stream in [&output.stdout, &output.stderr] {
                let text = String::from_utf8_lossy(stream).replace("\r\n", "\n");
                out.push_str(&text);
                if !text.is_empty() && !text.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The full path of `program` on `PATH`.
fn which(program: &str) -> String {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
        .display()
        .to_string()
}

/// The service as `tollgate` serves it with `env` set, until dropped; its log is kept.
struct Served {
    child: Child,
    dir: TempDir,
}

impl Served {
    /// Starts the binary on a free port and waits for its "serving" line.
    fn start(env: &[(&str, String)]) -> (Served, u16) {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = File::create(dir.path().join("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the tollgate binary starts");
        let served = Served { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !served.log().contains("tollgate is serving") {
            assert!(Instant::now() < deadline, "not serving:\n{}", served.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        (served, port)
    }

    /// What it has logged, without the timestamps, as the documents show log lines.
    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let stamp = Regex::new(r"(?m)^\S+Z\s+").unwrap();
        stamp.replace_all(&log, "").into_owned()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The blocks
// ---------------------------------------------------------------------------------------------

/// The quick start's log lines are what the binary logs on the memory store.
#[test]
fn quick_start_log() {
    let (served, port) = Served::start(&[]);
    let log = served
        .log()
        .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:8000");
    assert_block("quick-start-log", &log);
}

/// The quick start's four curls, and the one without a user, print what the README shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_curls() {
    let app = TestApp::with_toml("").await;
    let shell = Shell::new(Some(&app), None);
    clear_of_minute_boundary().await;
    for name in ["quick-start-curl", "quick-start-no-user", "readyz"] {
        let block = block(name);
        let shell = &shell;
        let transcript = tokio::task::block_in_place(|| shell.transcript(&block));
        assert_block(name, &transcript);
    }
}

/// The log lines of a start on Redis are what the binary logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_startup_log() {
    let redis = RedisServer::start().await;
    let (served, port) = Served::start(&[("TOLLGATE_REDIS__URL", redis.url())]);
    let log = served
        .log()
        .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:8000")
        .replace(&redis.url(), "redis://127.0.0.1:6379");
    assert_block("redis-startup-log", &log);
}

/// The shared calls' walk-through runs as shown against a fresh Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_calls() {
    let redis = RedisServer::start().await;
    let toml = format!("[redis]\nurl = \"{}\"\ntimeout = \"10s\"\n", redis.url());
    let app = TestApp::with_toml(&toml).await;
    let shell = Shell::new(Some(&app), Some(&redis));
    let block = block("shared-calls");
    let transcript = tokio::task::block_in_place(|| shell.transcript(&block));
    assert_block("shared-calls", &transcript);
}

/// After the quick start's four requests on Redis, the keys look as the documents show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_at_keys() {
    let redis = RedisServer::start().await;
    let toml = format!("[redis]\nurl = \"{}\"\n", redis.url());
    let app = TestApp::with_toml(&toml).await;
    let client = reqwest::Client::new();
    clear_of_minute_boundary().await;
    for _ in 0..4 {
        app.get_user(&client, "joe").await;
    }
    let shell = Shell::new(Some(&app), Some(&redis));
    let block = block("looking-at-keys");
    let transcript = tokio::task::block_in_place(|| shell.transcript(&block));
    assert_block("looking-at-keys", &transcript);
}

/// The README's live changes: the real binary on Redis, serving the README's `tollgate.toml`
/// from the shell's directory, reloads the edit the transcript makes, and `inspect` and
/// `reset` read and reset the counts its requests left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes() {
    let redis = RedisServer::start().await;
    let mut shell = Shell::new(None, Some(&redis));
    let config = block("readme-config").replace("redis://127.0.0.1:6379", &redis.url());
    shell.file("tollgate.toml", &config);
    let file = shell.dir.path().join("tollgate.toml").display().to_string();
    let binary = Binary::start_with(&[("TOLLGATE_CONFIG", &file)]).await;
    shell.service = Some(format!("127.0.0.1:{}", binary.port));
    clear_of_minute_boundary().await;
    let client = reqwest::Client::new();
    for _ in 0..4 {
        client
            .get(format!("http://127.0.0.1:{}/user", binary.port))
            .header("x-user", "joe")
            .send()
            .await
            .unwrap();
    }
    let block = block("live-changes");
    let transcript = tokio::task::block_in_place(|| shell.transcript(&block));
    assert_block("live-changes", &transcript);
}

/// The example configuration file loads as written, and `tollgate key` under it prints the key
/// the documents show.
#[test]
fn example_config_and_tollgate_key() {
    let shell = Shell::new(None, None);
    for example in ["readme-config", "example-config"] {
        shell.file("tollgate.toml", &block(example));
        let checked = shell.run("tollgate check-config --config tollgate.toml");
        assert!(
            checked.status.success(),
            "the configuration marked {example:?} is refused: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    let block = block("tollgate-key");
    assert_block("tollgate-key", &shell.transcript(&block));
}

/// `check-config` prints what the documents show, for the commands it shows, and a stray
/// variable's warning is the line shown.
#[test]
fn check_config() {
    let shell = Shell::new(None, None);
    for name in ["check-config", "stray-variable"] {
        assert_block(name, &shell.transcript(&block(name)));
    }
}

/// `/readyz` for a Redis that refuses the password: polled until the refusal is known, then
/// asked as the documents show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_wrong_password() {
    let redis = RedisServer::start().await;
    // Set once the server answers: the support's start-up check asks it without a password.
    redis
        .command(&["CONFIG", "SET", "requirepass", "right"])
        .await
        .unwrap();
    let toml = format!("[redis]\nurl = \"{}\"\npassword = \"wrong\"\n", redis.url());
    let app = TestApp::with_toml(&toml).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = reqwest::get(app.url("/readyz")).await.unwrap().text().await;
        if body.unwrap().contains("WRONGPASS") {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never named WRONGPASS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shell = Shell::new(Some(&app), None);
    let block = block("readyz-wrong-password");
    let transcript = tokio::task::block_in_place(|| shell.transcript(&block));
    assert_block("readyz-wrong-password", &transcript);
}

/// `/readyz` once failures have opened the circuit breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_breaker_open() {
    let mut redis = RedisServer::start().await;
    let toml = format!(
        "[redis]\nurl = \"{}\"\nbreaker_failures = 2\nbreaker_cool_down = \"1m\"\n",
        redis.url()
    );
    let app = TestApp::with_toml(&toml).await;
    let client = reqwest::Client::new();
    redis.stop();
    for _ in 0..2 {
        app.get_user(&client, "ann").await;
    }
    assert_eq!(
        app.metric(r#"tollgate_breaker_state{state="open"}"#).await,
        1.0
    );
    let shell = Shell::new(Some(&app), None);
    let block = block("readyz-breaker-open");
    let transcript = tokio::task::block_in_place(|| shell.transcript(&block));
    assert_block("readyz-breaker-open", &transcript);
}

/// Every metric family `/metrics` serves is in a documented metrics table, so a new one cannot
/// go unexplained: Envoy's rate limit service on, so that its families are served too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_documented() {
    let app = TestApp::with_toml(
        "[rls]\nlisten = \"127.0.0.1:0\"\n[[rls.policies]]\nname = \"p\"\nlimit = 1\n\
         window = \"1m\"\n[[rls.rules]]\ndomain = \"d\"\ndescriptor = [{ key = \"k\" }]\n\
         policies = [\"p\"]\n",
    )
    .await;
    let text = app.metrics().await;
    let documented: String = documents().into_iter().map(|(_, text)| text).collect();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(!families.is_empty(), "no families in:\n{text}");
    for family in families {
        assert!(
            documented.contains(&format!("| `{family}` |")),
            "{family} is served but not in a metrics table"
        );
    }
}

/// Each configuration mistake docs/configuration.md lists is the line the binary prints for it,
/// in order: (file, variables, arguments) for each line.
#[test]
fn config_errors() {
    type Case = (
        Option<&'static str>,
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    let cases: [Case; 11] = [
        (
            None,
            &[("TOLLGATE_POLICIES", "[{name=\"a\",limit=0,window=\"1m\"}]")],
            "",
        ),
        (
            None,
            &[(
                "TOLLGATE_POLICIES",
                "[{name=\"a\",limit=3,window=\"1 minute\"}]",
            )],
            "",
        ),
        (
            None,
            &[(
                "TOLLGATE_POLICIES",
                "[{name=\"a\",limit=3,window=\"1m\"},{name=\"a\",limit=3,window=\"1h\"}]",
            )],
            "",
        ),
        (
            None,
            &[(
                "TOLLGATE_POLICIES",
                "[{name=\"a\",algorithm=\"sliding_log\",limit=3,window=\"1m\"}]",
            )],
            "",
        ),
        (
            Some("[[policies]]\nlimit = 3\nwindow = \"1m\"\n"),
            &[],
            "--config t.toml",
        ),
        (
            None,
            &[("TOLLGATE_REDIS__URL", "http://127.0.0.1:6379")],
            "",
        ),
        (None, &[("TOLLGATE_REDIS__ON_ERROR", "maybe")], ""),
        (
            Some("[redis]\nurll = \"redis://127.0.0.1\"\n"),
            &[],
            "--config t.toml",
        ),
        (None, &[("TOLLGATE_REDIS__TIMEOUT", "fast")], ""),
        (None, &[("TOLLGATE_LISTEN", "localhost:8000")], ""),
        (None, &[], "--config nope.toml"),
    ];
    let mut printed = String::new();
    for (file, env, args) in cases {
        let shell = Shell::new(None, None);
        if let Some(text) = file {
            shell.file("t.toml", text);
        }
        let assignments: String = env
            .iter()
            .map(|(name, value)| format!("{name}='{value}' "))
            .collect();
        let output = shell.run(&format!("{assignments}tollgate {args} check-config"));
        assert_eq!(output.status.code(), Some(2), "{env:?} {args}");
        printed.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    assert_block("config-errors", &printed);
}

/// The headers of the first request under the several-policies example are the documents'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_policies_first_request() {
    let config = documents()
        .into_iter()
        .find_map(|(_, text)| {
            let at = text.find("```toml\n[[policies]]                      # 20 at once")?;
            let rest = &text[at + "```toml\n".len()..];
            Some(rest[..rest.find("```")?].to_owned())
        })
        .expect("the several-policies example is in the documents");
    let app = TestApp::with_toml(&config).await;
    let response = app.get_user(&reqwest::Client::new(), "joe").await;
    assert_block(
        "several-policies-first-request",
        &shown_headers("several-policies-first-request", &response),
    );
}

/// The fourth request under two policies is the 429 the documents show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_fourth_request() {
    let app = TestApp::with_toml(
        "[[policies]]\nname = \"per_minute\"\nlimit = 3\nwindow = \"1m\"\n\
         [[policies]]\nname = \"per_hour\"\nlimit = 5\nwindow = \"1h\"\n",
    )
    .await;
    let client = reqwest::Client::new();
    clear_of_minute_boundary().await;
    for _ in 0..3 {
        app.get_user(&client, "joe").await;
    }
    let response = app.get_user(&client, "joe").await;
    let status = format!("HTTP/1.1 {}\n", response.status());
    let shown = shown_headers("two-policies-fourth-request", &response);
    assert_block("two-policies-fourth-request", &format!("{status}{shown}"));
}

/// The headers of `response` that the block `name` lists, in its order, as `name: value` lines.
fn shown_headers(name: &str, response: &reqwest::Response) -> String {
    block(name)
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(header, _)| {
            let value = response
                .headers()
                .get(header)
                .map_or("<missing>", |v| v.to_str().unwrap());
            format!("{header}: {value}\n")
        })
        .collect()
}
