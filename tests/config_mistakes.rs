//! Configuration mistakes, through the real binary: each one stops `check-config` and the
//! server with exit code 2 and one line naming its key, before the port is bound; stray variables
//! are warned about, and `check-config`'s output reads back unchanged.

mod support;

use support::config::{assert_hidden, lookup, text, Dir, PASSWORD};

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
        (limit("by = \"header:x api key\"\n"), "policies[0].by"),
        (
            limit("when = { \"x plan\" = \"free\" }\n"),
            "policies[0].when.\"x plan\"",
        ),
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
