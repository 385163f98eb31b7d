//! Configuration, through the real binary: the layering order (defaults, the file, `.env`,
//! `TOLLGATE_*` variables and `--config`), `tollgate key`, and the `[server]` keys.
//!
//! The other configuration tests are in `config_mistakes.rs` (every mistake rejected with its
//! key) and `config_secrets.rs` (the password kept out of every output); what they share is in
//! `support/config.rs`.

mod support;

use std::time::Duration;

use support::config::{lookup, text, Dir, EXAMPLE, JOE_KEY};
use tollgate::config::Settings;
use tollgate::OnError;

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

/// For a policy keyed by a header, `tollgate key <value>` names the key that value's requests
/// count under: the same one the service writes (tests/routes_and_keying.rs checks that side).
#[test]
fn key_names_a_header_keyed_policy_by_the_value() {
    let dir = Dir::new().file(
        "tollgate.toml",
        "[[policies]]\nname = \"per_key\"\nlimit = 5\nwindow = \"1m\"\nby = \"header:x-api-key\"\n",
    );
    let output = dir.run(&["key", "k-1"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // SHA-256 of "k-1".
    let tag = "{7c35c5a1785d20704e44d5de4beb81c1fce91b6fe48ed7c3159af6f7f832078b}";
    assert_eq!(text(&output.stdout), format!("tollgate:{tag}:per_key\n"));
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
