//! envoyproxy/ratelimit's YAML files, loaded and matched as ratelimit does: its README's
//! examples and its own test files (tests/fixtures/ratelimit/, verbatim), the loader's errors,
//! wildcards, `replaces`, `unlimited`, 0 that blocks, Envoy's override and `shadow_mode`.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tollgate::policy::Algorithm;
use tollgate::rls::{
    Bucket, Descriptor, Domains, Limits, LoadError, Loader, Matched, Override, Unit,
};

/// A file of tests/fixtures/ratelimit/.
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ratelimit")
        .join(name)
}

/// The domains of these fixture files, which must load.
fn load(names: &[&str]) -> Domains {
    let mut loader = Loader::new();
    for name in names {
        loader
            .load_path(&fixture(name))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    loader.finish()
}

/// The error loading these fixture files gives, domains merged or not.
fn load_error(names: &[&str], merge: bool) -> LoadError {
    let mut loader = Loader::new().merge_domains(merge);
    for name in names {
        if let Err(error) = loader.load_path(&fixture(name)) {
            return error;
        }
    }
    panic!("{names:?} loaded without an error")
}

/// The error for one file's `text`.
fn text_error(text: &str) -> String {
    let mut loader = Loader::new();
    loader.load_str("t.yaml", text).expect_err(text).to_string()
}

/// The match of one descriptor, without an override.
fn get(domains: &Domains, domain: &str, entries: &[(&str, &str)]) -> Option<Matched> {
    domains.get_limit(domain, entries, None)
}

/// A match in a few words: `500 per 1s`, `10 per 1s shadow`, `block (second)`, `unlimited`.
fn describe(matched: &Option<Matched>) -> String {
    let Some(matched) = matched else {
        return "none".into();
    };
    match matched.rule.limits() {
        Limits::Count(policies) => policies
            .iter()
            .map(|p| {
                let algorithm = match p.algorithm() {
                    Algorithm::FixedWindow => String::new(),
                    other => format!(" {}", other.as_str()),
                };
                let shadow = if p.shadow() { " shadow" } else { "" };
                format!(
                    "{} per {}s{algorithm}{shadow}",
                    p.limit(),
                    p.window().as_millis() / 1000
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        Limits::Block { unit, shadow } => {
            format!(
                "block ({}){}",
                unit.as_str(),
                if *shadow { " shadow" } else { "" }
            )
        }
        Limits::Unlimited => "unlimited".into(),
    }
}

/// The descriptors of a request, without overrides.
fn request(descriptors: &[&[(&str, &str)]]) -> Vec<Descriptor> {
    descriptors
        .iter()
        .map(|entries| Descriptor {
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            limit: None,
        })
        .collect()
}

/// Example 1: two values of one key, each its own limit; another value has none.
#[test]
fn readme_example_1_values_of_one_key() {
    let d = load(&["readme_example1.yaml"]);
    let users = get(&d, "mongo_cps", &[("database", "users")]);
    assert_eq!(describe(&users), "500 per 1s");
    assert_eq!(users.unwrap().rule.name().as_str(), "database_users");
    assert_eq!(
        describe(&get(&d, "mongo_cps", &[("database", "default")])),
        "500 per 1s"
    );
    assert_eq!(
        describe(&get(&d, "mongo_cps", &[("database", "other")])),
        "none"
    );
    assert_eq!(
        describe(&get(&d, "other_domain", &[("database", "users")])),
        "none"
    );
}

/// Example 2: a nested key without a value counts each value apart, at its own depth; one
/// request may carry both descriptors, and both apply.
#[test]
fn readme_example_2_nested_key_only() {
    let d = load(&["readme_example2.yaml"]);
    let marketing = |number: &'static str| {
        get(
            &d,
            "messaging",
            &[("message_type", "marketing"), ("to_number", number)],
        )
    };
    let first = marketing("2061111111").unwrap();
    let second = marketing("2062222222").unwrap();
    assert_eq!(describe(&Some(first.clone())), "5 per 86400s");
    assert_eq!(first.rule, second.rule);
    assert_ne!(first.bucket, second.bucket, "one counter per number");
    assert_eq!(
        first.rule.name().as_str(),
        "message_type_marketing.to_number"
    );
    assert_eq!(
        first.bucket.to_string(),
        r#"messaging: message_type="marketing", to_number="2061111111""#
    );
    let any = get(&d, "messaging", &[("to_number", "2061111111")]);
    assert_eq!(describe(&any), "100 per 86400s");
    assert_eq!(
        describe(&get(&d, "messaging", &[("message_type", "marketing")])),
        "none"
    );
    let both = d.limits(
        "messaging",
        &request(&[
            &[("message_type", "marketing"), ("to_number", "2061111111")],
            &[("to_number", "2061111111")],
        ]),
    );
    let both: Vec<String> = both.iter().map(describe).collect();
    assert_eq!(both, ["5 per 86400s", "100 per 86400s"]);
}

/// Example 3: `key_value` is tried before the key alone, and 0 blocks every request.
#[test]
fn readme_example_3_most_specific_first_and_zero_blocks() {
    let d = load(&["readme_example3.yaml"]);
    let ip = |address| {
        describe(&get(
            &d,
            "edge_proxy_per_ip",
            &[("remote_address", address)],
        ))
    };
    assert_eq!(ip("50.0.0.1"), "10 per 1s");
    assert_eq!(ip("50.0.0.5"), "block (second)");
}

/// Example 4: a limit applies only at the descriptor's last entry, at the config's depth.
#[test]
fn readme_example_4_same_depth_only() {
    let shallow = load(&["readme_example4a.yaml"]);
    let deep = load(&["readme_example4b.yaml"]);
    let two = [("key", "value"), ("subkey", "subvalue")];
    assert_eq!(describe(&get(&shallow, "example4", &two)), "none");
    assert_eq!(
        describe(&get(&shallow, "example4", &two[..1])),
        "300 per 1s"
    );
    assert_eq!(describe(&get(&deep, "example4", &two)), "300 per 1s");
    assert_eq!(describe(&get(&deep, "example4", &two[..1])), "none");
    let three = [("key", "value"), ("subkey", "subvalue"), ("more", "x")];
    assert_eq!(describe(&get(&deep, "example4", &three)), "none");
}

/// Example 5: an unlimited descriptor is a match, told apart from no match.
#[test]
fn readme_example_5_unlimited() {
    let d = load(&["readme_example5.yaml"]);
    assert_eq!(
        describe(&get(&d, "internal", &[("ldap", "x")])),
        "unlimited"
    );
    assert_eq!(
        describe(&get(&d, "internal", &[("azure", "x")])),
        "100 per 60s"
    );
    assert_eq!(describe(&get(&d, "internal", &[("gcp", "x")])), "none");
}

/// Example 6: `shadow_mode` makes the rule's policy a shadow policy, for that rule only.
#[test]
fn readme_example_6_shadow_mode() {
    let d = load(&["readme_example6.yaml"]);
    let user = |name| {
        describe(&get(
            &d,
            "example6",
            &[("service", "auth-service"), ("user", name)],
        ))
    };
    assert_eq!(user("user-a"), "10 per 1s shadow");
    assert_eq!(user("user-b"), "20 per 1s");
    assert_eq!(user("user-c"), "none");
}

/// Example 7: a rule that `replaces` a named one drops it from a request they both match,
/// and only then.
#[test]
fn readme_example_7_replaces() {
    let d = load(&["readme_example7.yaml"]);
    let first: &[(&str, &str)] = &[("key_1", "value_1"), ("user", "bkthomps")];
    let second: &[(&str, &str)] = &[("key_2", "value_2"), ("user", "bkthomps")];
    let alone = d.limits("example7", &request(&[first]));
    assert_eq!(describe(&alone[0]), "5 per 1s");
    assert_eq!(
        alone[0].as_ref().unwrap().rule.name().as_str(),
        "specific_limit"
    );
    assert_eq!(
        describe(&d.limits("example7", &request(&[second]))[0]),
        "10 per 1s"
    );
    let both = d.limits("example7", &request(&[first, second]));
    let both: Vec<String> = both.iter().map(describe).collect();
    assert_eq!(
        both,
        ["none", "10 per 1s"],
        "the replaced limit is not counted"
    );
    let reversed = d.limits("example7", &request(&[second, first]));
    let reversed: Vec<String> = reversed.iter().map(describe).collect();
    assert_eq!(reversed, ["10 per 1s", "none"], "whatever the order");
}

/// Example 8: `detailed_metric` loads, matches as without it, and is warned about once.
#[test]
fn readme_example_8_detailed_metric_is_ignored() {
    let mut loader = Loader::new();
    loader.load_path(&fixture("readme_example8.yaml")).unwrap();
    let warnings = loader.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("detailed_metric is ignored"),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("descriptors[0].detailed_metric"),
        "{warnings:?}"
    );
    let d = loader.finish();
    let any = get(&d, "example8", &[("key1", "unspecified_value")]).unwrap();
    assert_eq!(describe(&Some(any.clone())), "10 per 60s");
    assert_eq!(any.rule.name().as_str(), "key1", "no value in the name");
    assert_eq!(
        describe(&get(&d, "example8", &[("key1", "value1")])),
        "20 per 60s"
    );
}

/// Example 9: trailing, middle and multiple wildcards, each value its own counter.
#[test]
fn readme_example_9_wildcards() {
    let trailing = load(&["readme_example9_trailing.yaml"]);
    let middle = load(&["readme_example9_middle.yaml"]);
    let multiple = load(&["readme_example9_multiple.yaml"]);
    for value in ["value1", "value2", "valueXYZ", "value"] {
        assert_eq!(
            describe(&get(&trailing, "example9", &[("key1", value)])),
            "20 per 60s"
        );
    }
    assert_eq!(
        describe(&get(&trailing, "example9", &[("key1", "valu")])),
        "none"
    );
    let one = get(&trailing, "example9", &[("key1", "value1")]).unwrap();
    let two = get(&trailing, "example9", &[("key1", "value2")]).unwrap();
    assert_ne!(
        one.bucket, two.bucket,
        "without share_threshold, one counter per value"
    );
    for value in ["/api/123/action", "/api/user-id/action"] {
        assert_eq!(
            describe(&get(&middle, "example9", &[("path", value)])),
            "20 per 60s"
        );
    }
    assert_eq!(
        describe(&get(&middle, "example9", &[("path", "/api/123/other")])),
        "none"
    );
    for value in ["/api/v1/resource/123/action", "/api/v2/resource/456/action"] {
        assert_eq!(
            describe(&get(&multiple, "example9", &[("route", value)])),
            "20 per 60s"
        );
    }
    assert_eq!(
        describe(&get(&multiple, "example9", &[("route", "/api/v1/action")])),
        "none"
    );
}

/// Example 10: `value_to_metric` loads and is warned about, and metrics keep naming the
/// rule by its path, without the request's values.
#[test]
fn readme_example_10_value_to_metric_is_ignored() {
    let mut loader = Loader::new();
    loader.load_path(&fixture("readme_example10.yaml")).unwrap();
    loader
        .load_path(&fixture("readme_example10_wildcard.yaml"))
        .unwrap();
    let warnings = loader.warnings();
    assert_eq!(warnings.len(), 1, "one warning per key: {warnings:?}");
    assert!(
        warnings[0].contains("value_to_metric is ignored"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("and 3 more"), "{warnings:?}");
    let d = loader.finish();
    let m = get(
        &d,
        "example10",
        &[
            ("route", "api"),
            ("http_method", "GET"),
            ("subject_id", "123"),
        ],
    );
    assert_eq!(describe(&m), "60 per 60s");
    assert_eq!(
        m.unwrap().rule.name().as_str(),
        "route.http_method.subject_id"
    );
    let w = get(
        &d,
        "example10_wildcard",
        &[
            ("user", "alice"),
            ("action", "readfile"),
            ("resource", "documents"),
        ],
    );
    assert_eq!(describe(&w), "100 per 60s");
    let read_star = w.unwrap().rule.name().clone();
    assert!(
        read_star
            .as_str()
            .starts_with("user.action_read_.resource-"),
        "{read_star}"
    );
}

/// Example 11: under `share_threshold` every value a wildcard matches shares one counter;
/// without it each has its own.
#[test]
fn readme_example_11_share_threshold() {
    let d = load(&["readme_example11.yaml", "readme_example11_metrics.yaml"]);
    let files = |key, value| get(&d, "example11", &[(key, value)]).unwrap();
    let a = files("files", "files/a.pdf");
    let b = files("files", "files/b.csv");
    assert_eq!(describe(&Some(a.clone())), "10 per 3600s");
    assert_eq!(a.bucket, b.bucket);
    assert_eq!(
        a.bucket.entries().collect::<Vec<_>>(),
        [("files", "files/*")]
    );
    let c = files("files_no_share", "files_no_share/a.pdf");
    let e = files("files_no_share", "files_no_share/b.csv");
    assert_ne!(c.bucket, e.bucket);
    let route = |v| get(&d, "example11_metrics", &[("route", v), ("method", "GET")]).unwrap();
    assert_eq!(
        route("api/v1").bucket,
        route("api/v2").bucket,
        "shared above the limit's level"
    );
    let entries: Vec<_> = route("api/v1")
        .bucket
        .entries()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(entries, ["route=api/*", "method=GET"]);
}

/// ratelimit's own basic_config.yaml, matched as its TestBasicConfig expects.
#[test]
fn ratelimit_basic_config() {
    let d = load(&["test_basic_config.yaml"]);
    let td = |entries: &[(&str, &str)]| describe(&get(&d, "test-domain", entries));
    assert_eq!(
        describe(&get(&d, "foo_domain", &[("key1", "value1")])),
        "none"
    );
    assert_eq!(
        describe(&d.get_limit::<&str, &str>("test-domain", &[], None)),
        "none"
    );
    assert_eq!(td(&[("key1", "something")]), "none");
    assert_eq!(td(&[("key1", "value1")]), "none");
    assert_eq!(td(&[("key2", "value2"), ("subkey", "subvalue")]), "none");
    assert_eq!(td(&[("key5", "value5"), ("subkey5", "subvalue")]), "none");
    assert_eq!(
        td(&[("key1", "value1"), ("subkey1", "something")]),
        "5 per 1s"
    );
    assert_eq!(
        td(&[("key1", "value1"), ("subkey1", "subvalue1")]),
        "10 per 1s"
    );
    assert_eq!(td(&[("key2", "something")]), "20 per 60s");
    assert_eq!(td(&[("key2", "value2")]), "30 per 60s");
    assert_eq!(
        td(&[("key2", "value3")]),
        "none",
        "a value without a limit whitelists it"
    );
    assert_eq!(td(&[("key3", "foo")]), "1 per 3600s");
    let key4 = get(&d, "test-domain", &[("key4", "foo")]).unwrap();
    assert_eq!(key4.rule.limit_name(), Some("key4_rate_limit"));
    assert_eq!(key4.rule.name().as_str(), "key4_rate_limit");
    assert_eq!(describe(&Some(key4)), "1 per 86400s");
    assert_eq!(td(&[("key5", "value5")]), "15 per 86400s");
    assert_eq!(
        td(&[("key5", "value5"), ("subkey5", "subvalue5")]),
        "25 per 86400s"
    );
    assert_eq!(td(&[("key6", "foo")]), "unlimited");
    assert_eq!(td(&[("key7", "unspecified_value")]), "70 per 60s");
}

/// ratelimit's wildcard.yaml, matched as its TestWildcardConfig expects.
#[test]
fn ratelimit_wildcards() {
    let d = load(&["test_wildcard.yaml"]);
    let td = |key, value| describe(&get(&d, "test-domain", &[(key, value)]));
    assert_eq!(td("noVal", "foo1"), "20 per 60s");
    assert_eq!(td("wild", "foo1"), "20 per 60s");
    assert_eq!(td("wild", "bar"), "none");
    assert_eq!(td("noWild", "foo1"), "none", "a value without '*' is exact");
    for value in ["barab", "bar123b", "barb"] {
        assert_eq!(td("midWild", value), "20 per 60s", "{value}");
    }
    assert_eq!(td("midWild", "bara"), "none");
    assert_eq!(td("midWild", "xbarb"), "none");
    assert_eq!(td("multiWild", "foo123bar456baz"), "10 per 60s");
    assert_eq!(td("multiWild", "foobarbaz"), "10 per 60s");
    assert_eq!(td("multiWild", "foo123baz"), "none");
    assert_eq!(td("multiWild", "bar456baz"), "none");
    let nested = get(
        &d,
        "test-domain",
        &[("nestedWild", "val1"), ("wild", "goo2")],
    );
    assert_eq!(describe(&nested), "20 per 60s");
}

/// ratelimit's share_threshold.yaml: the wildcard stands for the value at its own level,
/// nested ones each at theirs, and an exact value still comes first.
#[test]
fn ratelimit_share_threshold() {
    let d = load(&["test_share_threshold.yaml"]);
    let entries = |m: Matched| -> Vec<String> {
        m.bucket
            .entries()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    };
    let m = get(
        &d,
        "test-domain",
        &[("files", "top/file1.txt"), ("files", "nested/file1.txt")],
    );
    assert_eq!(describe(&m), "300 per 60s");
    assert_eq!(entries(m.unwrap()), ["files=top/*", "files=nested/*"]);
    let m = get(
        &d,
        "test-domain",
        &[("path", "path/foo"), ("file", "file/doc1"), ("type", "pdf")],
    );
    assert_eq!(
        entries(m.unwrap()),
        ["path=path/*", "file=file/doc1", "type=pdf"]
    );
    assert_eq!(
        describe(&get(&d, "test-domain", &[("file", "test1")])),
        "50 per 60s"
    );
    let m = get(&d, "test-domain", &[("file", "test2")]);
    assert_eq!(describe(&m), "100 per 60s");
    assert_eq!(entries(m.unwrap()), ["file=test*"]);
    let m = get(&d, "test-domain", &[("multiroute", "svc-a-ep-b-rpc")]);
    assert_eq!(entries(m.unwrap()), ["multiroute=svc*ep*rpc"]);
}

/// An exact value that matched is never left for the key alone, even when only the key
/// alone leads deeper: ratelimit does not backtrack.
#[test]
fn no_backtracking_from_an_exact_value() {
    let mut loader = Loader::new();
    let text = "domain: d\ndescriptors:\n  - key: a\n    value: x\n    descriptors:\n      - key: b\n        rate_limit: {unit: second, requests_per_unit: 1}\n  - key: a\n    descriptors:\n      - key: c\n        rate_limit: {unit: second, requests_per_unit: 2}\n";
    loader.load_str("t.yaml", text).unwrap();
    let d = loader.finish();
    assert_eq!(
        describe(&get(&d, "d", &[("a", "x"), ("b", "1")])),
        "1 per 1s"
    );
    assert_eq!(
        describe(&get(&d, "d", &[("a", "y"), ("c", "1")])),
        "2 per 1s"
    );
    assert_eq!(describe(&get(&d, "d", &[("a", "x"), ("c", "1")])), "none");
}

/// The first wildcard declared that matches wins, before the key alone.
#[test]
fn first_declared_wildcard_wins() {
    let mut loader = Loader::new();
    let text = "domain: d\ndescriptors:\n  - key: k\n    value: ab*\n    rate_limit: {unit: second, requests_per_unit: 1}\n  - key: k\n    value: a*\n    rate_limit: {unit: second, requests_per_unit: 2}\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 3}\n";
    loader.load_str("t.yaml", text).unwrap();
    let d = loader.finish();
    let k = |value| describe(&get(&d, "d", &[("k", value)]));
    assert_eq!(
        (k("abc"), k("acd"), k("xyz")),
        ("1 per 1s".into(), "2 per 1s".into(), "3 per 1s".into())
    );
}

/// Envoy's override replaces the configured limit, for any descriptor of a known domain,
/// named by its unit only; 0 blocks; an unknown domain still has no limit.
#[test]
fn envoy_override_replaces_the_configured_limit() {
    let d = load(&["test_basic_config.yaml"]);
    let entries = [("key1", "value1"), ("subkey1", "something")];
    let day = Override {
        requests_per_unit: 10,
        unit: Unit::Day,
    };
    let m = d.get_limit("test-domain", &entries, Some(day));
    assert_eq!(describe(&m), "10 per 86400s");
    let m = m.unwrap();
    assert_eq!(m.rule.name().as_str(), "override.day");
    assert_eq!(m.bucket, Bucket::new("test-domain", &entries));
    let unmatched = d.get_limit("test-domain", &[("nothing", "here")], Some(day));
    assert_eq!(describe(&unmatched), "10 per 86400s");
    let zero = Override {
        requests_per_unit: 0,
        unit: Unit::Hour,
    };
    assert_eq!(
        describe(&d.get_limit("test-domain", &entries, Some(zero))),
        "block (hour)"
    );
    assert_eq!(
        describe(&d.get_limit("foo_domain", &entries, Some(day))),
        "none"
    );
    let unlimited = d.get_limit("test-domain", &[("key6", "x")], Some(day));
    assert_eq!(
        describe(&unlimited),
        "10 per 86400s",
        "the override bypasses unlimited too"
    );
}

/// `shadow_mode` on a blocking rate_limit lets requests through and only reports them;
/// `replaces` never drops an unlimited rule, which stays unlimited as in ratelimit.
#[test]
fn shadow_block_and_unlimited_replaced() {
    let mut loader = Loader::new();
    let text = "domain: d\ndescriptors:\n  - key: blocked\n    shadow_mode: yes\n    rate_limit: {unit: minute, requests_per_unit: 0}\n  - key: free\n    rate_limit: {unlimited: true, name: free}\n  - key: boss\n    rate_limit: {unit: second, requests_per_unit: 1, replaces: [{name: free}]}\n";
    loader.load_str("t.yaml", text).unwrap();
    let d = loader.finish();
    assert_eq!(
        describe(&get(&d, "d", &[("blocked", "x")])),
        "block (minute) shadow"
    );
    let both = d.limits("d", &request(&[&[("free", "x")], &[("boss", "y")]]));
    let both: Vec<String> = both.iter().map(describe).collect();
    assert_eq!(both, ["unlimited", "1 per 1s"]);
}

/// ratelimit's bad test files are refused with its reasons, each naming the file and where.
#[test]
fn ratelimit_bad_files_are_refused() {
    let cases: [(&str, &str, &str); 9] = [
        (
            "test_duplicate_key.yaml",
            "descriptors[1]",
            "duplicate descriptor \"key1_value1\"",
        ),
        (
            "test_bad_limit_unit.yaml",
            "descriptors[0].rate_limit.unit",
            "invalid rate limit unit \"foo\"",
        ),
        (
            "test_replaces_self.yaml",
            "descriptors[0].descriptors[0].rate_limit.replaces[0].name",
            "cannot replace itself",
        ),
        (
            "test_replaces_empty.yaml",
            "descriptors[0].descriptors[0].rate_limit.replaces[0].name",
            "should not be empty",
        ),
        (
            "test_unlimited_with_unit.yaml",
            "descriptors[0].rate_limit.unit",
            "should not specify rate limit unit when unlimited",
        ),
        (
            "test_misspelled_key.yaml",
            "descriptors[0].ratelimit",
            "unknown key \"ratelimit\"",
        ),
        (
            "test_misspelled_key2.yaml",
            "descriptors[0].rate_limit.requestsperunit",
            "unknown key \"requestsperunit\"",
        ),
        (
            "test_non_map_list.yaml",
            "descriptors[0]",
            "expected a mapping at descriptors[0], found \"a\"",
        ),
        (
            "test_empty_key.yaml",
            "descriptors[0]",
            "descriptor has empty key",
        ),
    ];
    for (file, path, reason) in cases {
        let error = load_error(&[file], false);
        assert!(error.file.ends_with(file), "{error}");
        assert_eq!(error.path, path, "{error}");
        assert!(error.reason.contains(reason), "{file}: {error}");
        assert!(
            error.to_string().contains(&format!("{file}: {path}: ")),
            "{error}"
        );
    }
    let error = load_error(&["test_non_string_key.yaml"], false);
    assert!(error.reason.contains("a key is not text: 0.25"), "{error}");
    let error = load_error(&["test_empty_domain.yaml"], false);
    assert_eq!(
        (error.path.as_str(), error.reason.as_str()),
        ("domain", "is missing: each file names its domain")
    );
}

/// One domain in two files is an error unless domains merge; merged, a descriptor declared in
/// both is still a duplicate, and each file's descriptors apply.
#[test]
fn domains_merge_only_when_asked() {
    let files = ["test_merge_domain_key1.yaml", "test_merge_domain_key2.yaml"];
    let error = load_error(&files, false);
    assert!(
        error.file.ends_with("key2.yaml") && error.path == "domain",
        "{error}"
    );
    assert!(
        error.reason.contains("duplicate domain \"test-domain\""),
        "{error}"
    );
    assert!(
        error.reason.contains("test_merge_domain_key1.yaml"),
        "names the first: {error}"
    );
    let mut loader = Loader::new().merge_domains(true);
    for file in files {
        loader.load_path(&fixture(file)).unwrap();
    }
    let d = loader.finish();
    assert_eq!(
        describe(&get(&d, "test-domain", &[("key1", "value1")])),
        "10 per 60s"
    );
    assert_eq!(
        describe(&get(&d, "test-domain", &[("key2", "value2")])),
        "20 per 60s"
    );
    let twice = ["test_merge_domain_key1.yaml", "test_merge_domain_key1.yaml"];
    let error = load_error(&twice, true);
    assert!(
        error
            .reason
            .contains("duplicate descriptor \"key1_value1\""),
        "{error}"
    );
}

/// Mistakes ratelimit would load silently, or that tollgate cannot honour, are refused with
/// their path; YAML 1.1's booleans and merge keys read as ratelimit reads them.
#[test]
fn other_mistakes_name_their_path() {
    let cases = [
        ("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, shadow_mode: true}\n",
         "t.yaml: descriptors[0].rate_limit.shadow_mode: unknown key \"shadow_mode\""),
        ("domain: d\ndescriptors:\n  - key: k\n    quota_mode: true\n", "descriptors[0].quota_mode: is not supported"),
        ("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second}\n", "descriptors[0].rate_limit: requests_per_unit is missing"),
        ("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: -1}\n", "requests_per_unit: expected a whole number from 0 to 4294967295, found -1"),
        ("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n", "invalid rate limit unit \"fortnight\""),
        ("domain: d\ndescriptors:\n  - key: \"k*\"\n", "descriptors[0].key: \"k*\": only a value may hold a '*' wildcard"),
        ("domain: d\ndescriptors:\n  - key: k\n    share_threshold: true\n", "descriptors[0].share_threshold: can only be used with wildcard values"),
        ("domain: d\ndescriptors:\n  - key: k\n    value: 1.5\n", "descriptors[0].value: 1.5 is a number with a fraction"),
        ("domain: d\ndescriptors:\n  - key: k\n    shadow_mode: maybe\n", "shadow_mode: expected true or false, found \"maybe\""),
        ("domain: d\nkey: k\n", "t.yaml: key: unknown key \"key\"; expected one of: domain, descriptors (key belongs in a descriptor"),
        ("domain: [d]\n", "t.yaml: domain: expected text, found a list"),
        ("domain: d\ndescriptors: {key: k}\n", "descriptors: expected a list of descriptors, found a mapping"),
        ("", "t.yaml: domain: is missing"),
        ("domain: d\n  bad: indent\n", "t.yaml: is not YAML: "),
    ];
    for (text, expected) in cases {
        let error = text_error(text);
        assert!(
            error.contains(expected),
            "{text:?}\ngave {error:?}\nnot {expected:?}"
        );
    }
    let mut loader = Loader::new();
    let text = "limits: &ten {unit: minute, requests_per_unit: 10}\n";
    assert!(
        loader.load_str("t.yaml", text).is_err(),
        "a stray top-level key is refused"
    );
    let text = "domain: d\ndescriptors:\n  - key: a\n    value: 007\n    shadow_mode: on\n    rate_limit: &ten {unit: Minute, requests_per_unit: 10}\n  - key: b\n    rate_limit:\n      <<: *ten\n      requests_per_unit: 20\n";
    loader.load_str("t.yaml", text).unwrap();
    let d = loader.finish();
    assert_eq!(
        describe(&get(&d, "d", &[("a", "007")])),
        "10 per 60s shadow"
    );
    assert_eq!(describe(&get(&d, "d", &[("b", "x")])), "20 per 60s");
}

/// A directory loads each of its YAML files in name order; an empty one is an error.
#[test]
fn a_directory_loads_its_yaml_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), "domain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 2}\n").unwrap();
    std::fs::write(dir.path().join("a.yml"), "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "not yaml: [").unwrap();
    let mut loader = Loader::new();
    loader.load_path(dir.path()).unwrap();
    let d = loader.finish();
    let mut names: Vec<&str> = d.names().collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let empty = tempfile::tempdir().unwrap();
    let error = Loader::new().load_path(empty.path()).unwrap_err();
    assert!(
        error.reason.contains("holds no .yaml or .yml file"),
        "{error}"
    );
    let error = Loader::new()
        .load_path(&dir.path().join("nope.yaml"))
        .unwrap_err();
    assert!(error.reason.starts_with("cannot be read"), "{error}");
}

/// A strategy for short text that includes the bytes an encoding could confuse.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!['a', '_', ':', '0', '1', '\0', '.', 'é']),
        0..4,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/rls_buckets.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// Two buckets are equal exactly when their domains and entries are: no two different
    /// descriptors share a counter, whatever characters or lengths they hold.
    #[test]
    fn buckets_collide_only_when_equal(
        a in (text(), prop::collection::vec((text(), text()), 0..3)),
        b in (text(), prop::collection::vec((text(), text()), 0..3)),
    ) {
        let left = Bucket::new(&a.0, &a.1);
        let right = Bucket::new(&b.0, &b.1);
        prop_assert_eq!(left == right, a == b);
        prop_assert_eq!(left.as_bytes() == right.as_bytes(), a == b);
        prop_assert_eq!(left.domain(), a.0.as_str());
        let entries: Vec<(String, String)> =
            left.entries().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        prop_assert_eq!(entries, a.1);
    }
}
