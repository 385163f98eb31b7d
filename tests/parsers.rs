//! Property tests that the parsers of untrusted input (forwarding headers, CIDRs, route
//! patterns, durations, policy names, configuration) return `Ok` or a one-line `Err`, and never
//! panic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tollgate::caller::address::{bucket, Cidr, ForwardedHeader, Proxies};
use tollgate::policy::{parse_duration, MAX_WINDOW_MS};
use tollgate::scope::RoutePattern;
use tollgate::{PolicyName, Settings, Window};

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
    "[[policies]]\nname = {}\nlimit = 3\nwindow = \"1m\"",
    "[[policies]]\nname = \"p\"\nalgorithm = {}\nlimit = 3\nwindow = \"1m\"",
    "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = {}",
    "[[policies]]\nname = \"p\"\nalgorithm = \"token_bucket\"\nlimit = 3\nwindow = {}\nburst = 9",
    "[[policies]]\nname = \"p\"\nalgorithm = \"sliding_window\"\nlimit = 1000000\nwindow = {}",
    "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\nroutes = [{}]",
    "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\nby = {}",
    "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\nby = [\"user\", {}]",
    "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\ncosts = { {} = 2 }",
    "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\n{} = 1",
];

/// Configurations with one `{}` to fill with a number.
const NUMBER_SLOTS: &[&str] = &[
    "[identity]\nipv6_prefix = {}",
    "[[policies]]\nname = \"p\"\nlimit = {}\nwindow = \"1s\"",
    "[[policies]]\nname = \"p\"\nlimit = {}\nwindow = \"36500d\"\nalgorithm = \"sliding_window\"",
    "[[policies]]\nname = \"p\"\nlimit = {}\nwindow = \"1s\"\nalgorithm = \"token_bucket\"",
    "[[policies]]\nname = \"p\"\nlimit = 1000\nwindow = \"36500d\"\nalgorithm = \"token_bucket\"\nburst = {}",
    "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\ncost = {}",
    "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\ncosts = { \"/a\" = {} }",
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
            "tests/proptest-regressions/parsers.txt",
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
