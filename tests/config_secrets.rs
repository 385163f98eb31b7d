//! The Redis password, through the real binary and `Settings`: from the file, the environment,
//! `.env` or the URL, it reaches Redis and never appears in `Debug`, errors, `check-config` or
//! the logs.

mod support;

use support::config::{assert_hidden, text, Dir, FakeRedis, PASSWORD};
use tollgate::config::Settings;

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
