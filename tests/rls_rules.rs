//! The `[rls]` section: ratelimit's YAML files named from tollgate's TOML, and tollgate's own
//! rules (several policies on one descriptor, any algorithm and window), their mistakes named
//! by key, their warnings, and `check-config` reading them back unchanged.

use std::path::PathBuf;

use tollgate::rls::{Descriptor, Limits, Matched};
use tollgate::Settings;

/// A file of tests/fixtures/ratelimit/, as TOML quotes it.
fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ratelimit")
        .join(name);
    format!("{:?}", path.display().to_string())
}

/// The policies of a match, `name: limit per window algorithm`, or `none`.
fn policies(matched: &Option<Matched>) -> String {
    let Some(matched) = matched else {
        return "none".into();
    };
    match matched.rule.limits() {
        Limits::Count(policies) => policies
            .iter()
            .map(|p| {
                let shadow = if p.shadow() { " shadow" } else { "" };
                format!(
                    "{}: {} per {}s {}{shadow}",
                    p.name(),
                    p.limit(),
                    p.window().as_millis() / 1000,
                    p.algorithm().as_str()
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => format!("{other:?}"),
    }
}

/// The error `text` gives, as the binary prints it.
fn error(text: &str) -> String {
    Settings::from_toml(text).expect_err(text).to_string()
}

/// Two policies of any algorithm and window.
const POLICIES: &str = r#"
[[rls.policies]]
name = "per_minute"
algorithm = "sliding_window"
limit = 100
window = "1m"

[[rls.policies]]
name = "per_day"
algorithm = "token_bucket"
limit = 1000
window = "1d"
burst = 50
"#;

/// A rule applies several policies, of any algorithm and window, to one descriptor; a key
/// alone counts each value apart, and a wildcard value matches as in the YAML.
#[test]
fn a_rule_applies_several_policies() {
    let text = format!(
        r#"[rls]
listen = "127.0.0.1:8081"
{POLICIES}
[[rls.rules]]
domain = "api"
descriptor = [{{ key = "user" }}]
policies = ["per_minute", "per_day"]

[[rls.rules]]
domain = "api"
descriptor = [{{ key = "tenant", value = "acme" }}, {{ key = "path", value = "/export/*" }}]
policies = ["per_day"]
"#
    );
    let settings = Settings::from_toml(&text).unwrap();
    let domains = &settings.rls.domains;
    let alice = domains.get_limit("api", &[("user", "alice")], None);
    assert_eq!(
        policies(&alice),
        "per_minute: 100 per 60s sliding_window, per_day: 1000 per 86400s token_bucket"
    );
    let alice = alice.unwrap();
    assert_eq!(alice.rule.name().as_str(), "user");
    assert_eq!(alice.rule.source(), "rls.rules[0]");
    let bob = domains.get_limit("api", &[("user", "bob")], None).unwrap();
    assert_ne!(alice.bucket, bob.bucket);
    let export = domains.get_limit(
        "api",
        &[("tenant", "acme"), ("path", "/export/x.csv")],
        None,
    );
    assert_eq!(policies(&export), "per_day: 1000 per 86400s token_bucket");
    let other = domains.get_limit(
        "api",
        &[("tenant", "acme"), ("path", "/import/x.csv")],
        None,
    );
    assert_eq!(policies(&other), "none");
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
}

/// A rule may hang below a YAML descriptor that has no limit, and replace a YAML rule by its
/// name, but never set a second limit on a descriptor the YAML limits.
#[test]
fn rules_join_the_yaml_tree() {
    let text = format!(
        r#"{POLICIES}
[rls]
config = [{}]

[[rls.rules]]
domain = "example7"
descriptor = [{{ key = "key_1", value = "value_1" }}, {{ key = "user" }}]
policies = ["per_minute"]
replaces = ["specific_limit"]
"#,
        fixture("readme_example7.yaml")
    );
    let settings = Settings::from_toml(&text).unwrap();
    let domains = &settings.rls.domains;
    let descriptor = |entries: &[(&str, &str)]| Descriptor {
        entries: entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        limit: None,
    };
    let yaml = descriptor(&[("key_1", "value_1"), ("user", "bkthomps")]);
    let toml = descriptor(&[("key_1", "value_1"), ("user", "someone")]);
    let alone = domains.limits("example7", std::slice::from_ref(&yaml));
    assert_eq!(
        alone[0].as_ref().unwrap().rule.name().as_str(),
        "specific_limit"
    );
    let both = domains.limits("example7", &[yaml, toml]);
    assert!(
        both[0].is_none(),
        "the rule replaced the YAML's specific_limit"
    );
    assert_eq!(policies(&both[1]), "per_minute: 100 per 60s sliding_window");
    assert!(settings
        .warnings
        .iter()
        .any(|w| w.contains("rls.policies[1] (per_day) is named by no rule")));

    let clash = format!(
        r#"{POLICIES}
[rls]
config = [{}]

[[rls.rules]]
domain = "example7"
descriptor = [{{ key = "key_1", value = "value_1" }}, {{ key = "user", value = "bkthomps" }}]
policies = ["per_minute"]
"#,
        fixture("readme_example7.yaml")
    );
    let message = error(&clash);
    assert!(
        message.starts_with("invalid configuration: rls.rules[0].descriptor: domain \"example7\" already has a rule for this descriptor: "),
        "{message}"
    );
    assert!(
        message.ends_with("readme_example7.yaml: descriptors[0].descriptors[0].rate_limit"),
        "{message}"
    );
}

/// Each mistake in `[rls]` names its key, and a YAML file's names the file and its path.
#[test]
fn mistakes_name_their_key() {
    let rule = |body: &str| format!("{POLICIES}\n[[rls.rules]]\n{body}\n");
    let cases = [
        ("[rls]\nlisten = \"localhost:8081\"".to_owned(), "rls.listen: \"localhost:8081\" is not an IP address and port"),
        ("[rls]\nconfg = []".to_owned(), "rls.confg: unknown key; expected one of: listen, config, merge_domains, policies, rules"),
        (format!("[rls]\nconfig = [{}]", fixture("test_bad_limit_unit.yaml")), "test_bad_limit_unit.yaml: descriptors[0].rate_limit.unit: invalid rate limit unit \"foo\""),
        ("[rls]\nconfig = [\"/nonexistent/ratelimit.yaml\"]".to_owned(), "rls.config[0]: /nonexistent/ratelimit.yaml: cannot be read"),
        ("[[rls.policies]]\nname = \"p\"\nlimit = 1\nwindow = \"1 minute\"".to_owned(), "rls.policies[0].window: \"1 minute\" has an unknown unit"),
        ("[[rls.policies]]\nname = \"p\"\nlimit = 0\nwindow = \"1m\"".to_owned(), "rls.policies[0].limit: must be at least 1"),
        ("[[rls.policies]]\nname = \"p\"\nlimit = 1\nwindow = \"1m\"\ncost = 2".to_owned(), "rls.policies[0].cost: unknown key"),
        ("[[rls.policies]]\nname = \"p\"\nlimit = 1\nwindow = \"1m\"\nburst = 2".to_owned(), "rls.policies[0].burst: burst applies to token_bucket only"),
        (format!("{POLICIES}\n[[rls.policies]]\nname = \"per_day\"\nlimit = 1\nwindow = \"1m\""), "rls.policies[2].name: duplicate policy name \"per_day\""),
        (rule("domain = \"\"\ndescriptor = [{ key = \"k\" }]\npolicies = [\"per_day\"]"), "rls.rules[0].domain: must not be empty"),
        (rule("domain = \"d\"\ndescriptor = []\npolicies = [\"per_day\"]"), "rls.rules[0].descriptor: must list at least one entry"),
        (rule("domain = \"d\"\ndescriptor = [{ key = \"\" }]\npolicies = [\"per_day\"]"), "rls.rules[0].descriptor[0].key: must not be empty"),
        (rule("domain = \"d\"\ndescriptor = [{ key = \"k*\" }]\npolicies = [\"per_day\"]"), "rls.rules[0].descriptor[0].key: \"k*\": only a value may hold a '*' wildcard"),
        (rule("domain = \"d\"\ndescriptor = [{ key = \"k\", value = \"\" }]\npolicies = [\"per_day\"]"), "rls.rules[0].descriptor[0].value: must not be empty"),
        (rule("domain = \"d\"\ndescriptor = [{ key = \"k\" }]\npolicies = []"), "rls.rules[0].policies: must name at least one of rls.policies"),
        (rule("domain = \"d\"\ndescriptor = [{ key = \"k\" }]\npolicies = [\"per_dya\"]"), "rls.rules[0].policies[0]: unknown policy \"per_dya\"; rls.policies has: per_minute, per_day"),
        (rule("domain = \"d\"\ndescriptor = [{ key = \"k\" }]\npolicies = [\"per_day\", \"per_day\"]"), "rls.rules[0].policies[1]: names \"per_day\" twice"),
        (rule("domain = \"d\"\ndescriptor = [{ key = \"k\" }]\npolicies = [\"per_day\"]\nname = \"a b\""), "rls.rules[0].name: ' ' is not allowed"),
        (rule("domain = \"d\"\ndescriptor = [{ key = \"k\" }]\npolicies = [\"per_day\"]\nname = \"a\"\nreplaces = [\"a\"]"), "rls.rules[0].replaces[0]: a rule cannot replace itself"),
        (rule("domain = \"d\"\ndescriptor = [{ key = \"k\" }]\npolicies = [\"per_day\"]\nsomething = 1"), "rls.rules[0].something: unknown key"),
        (format!("{}\n[[rls.rules]]\ndomain = \"d\"\ndescriptor = [{{ key = \"k\" }}]\npolicies = [\"per_minute\"]", rule("domain = \"d\"\ndescriptor = [{ key = \"k\" }]\npolicies = [\"per_day\"]")), "rls.rules[1].descriptor: domain \"d\" already has a rule for this descriptor: rls.rules[0]"),
    ];
    for (text, expected) in cases {
        let message = error(&text);
        assert!(
            message.contains(expected),
            "{text}\ngave {message:?}\nnot {expected:?}"
        );
        assert!(
            message.starts_with("invalid configuration: rls."),
            "{message}"
        );
    }
}

/// What `[rls]` accepts without acting on is a warning: each ignored YAML key once, domains
/// that nothing serves, and a service with no domain to decide.
#[test]
fn accepted_but_ignored_is_warned_about() {
    let text = format!(
        "[rls]\nconfig = [{}, {}]\n",
        fixture("readme_example8.yaml"),
        fixture("readme_example10.yaml")
    );
    let settings = Settings::from_toml(&text).unwrap();
    let warnings = settings.warnings.join("\n");
    assert_eq!(settings.warnings.len(), 3, "{warnings}");
    assert!(
        warnings.contains("but rls.listen is not set: nothing serves"),
        "{warnings}"
    );
    let empty = Settings::from_toml("[rls]\nlisten = \"127.0.0.1:8081\"\n").unwrap();
    assert_eq!(empty.rls.listen, Some("127.0.0.1:8081".parse().unwrap()));
    assert!(
        empty
            .warnings
            .join("\n")
            .contains("no domain is configured"),
        "{:?}",
        empty.warnings
    );
    assert!(
        warnings.contains("rls.config: detailed_metric is ignored (")
            && warnings.contains("readme_example8.yaml: descriptors[0].detailed_metric)"),
        "{warnings}"
    );
    assert!(
        warnings.contains("rls.config: value_to_metric is ignored ("),
        "{warnings}"
    );
}

/// `check-config` prints `[rls]` so that it reads back to the same settings, a token
/// bucket's burst written out; with no `[rls]`, it says nothing is served.
#[test]
fn check_config_reads_back_unchanged() {
    let text = format!(
        r#"{POLICIES}
[[rls.policies]]
name = "bucket"
algorithm = "token_bucket"
limit = 5
window = "1s"

[rls]
config = [{}]
merge_domains = true

[[rls.rules]]
domain = "api"
descriptor = [{{ key = "user" }}, {{ key = "path", value = "/a/*" }}]
policies = ["per_minute", "bucket"]
name = "user_paths"
replaces = ["other"]
"#,
        fixture("readme_example1.yaml")
    );
    let settings = Settings::from_toml(&text).unwrap();
    let printed = settings.effective_toml();
    assert!(printed.contains("[rls]\n# listen is not set"), "{printed}");
    assert!(printed.contains("burst = 5"), "{printed}");
    let again = Settings::from_toml(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(again.effective_toml(), printed);
    let entries = [("user", "u"), ("path", "/a/b")];
    let first = settings.rls.domains.get_limit("api", &entries, None);
    let second = again.rls.domains.get_limit("api", &entries, None);
    assert_eq!(policies(&first), policies(&second));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.bucket, second.bucket);
    assert_eq!(first.rule.name().as_str(), "user_paths");
    assert_eq!(first.rule.replaces().collect::<Vec<_>>(), ["other"]);
    assert_eq!(second.rule.replaces().collect::<Vec<_>>(), ["other"]);
    let database = [("database", "users")];
    assert!(again
        .rls
        .domains
        .get_limit("mongo_cps", &database, None)
        .is_some());
    let default = Settings::from_toml("").unwrap();
    assert!(default.rls.domains.is_empty() && default.rls.listen.is_none());
    assert!(default
        .effective_toml()
        .contains("[rls]\n# listen is not set"));
}
