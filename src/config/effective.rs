//! The effective configuration that `check-config` prints: every key with its value, derived
//! defaults included, and each secret only said to be set or not.

use std::time::Duration;

use super::Settings;

impl Settings {
    /// The effective configuration as TOML, every key with its value, derived defaults
    /// included; a secret is a comment saying whether it is set, so that the text read back as
    /// a file changes nothing but the secrets it cannot show.
    pub fn effective_toml(&self) -> String {
        let mut shown = self.effective.clone();
        let mut notes: Vec<(&str, String)> = Vec::new();
        if shown.redis.url.is_none() {
            notes.push(("redis", "# url is not set: the memory store decides".into()));
        } else if self.url_had_secret {
            notes.push(("redis", "# url holds a password (not shown)".into()));
        }
        if shown.forward_auth.path.is_none() {
            notes.push((
                "forward_auth",
                "# path is not set: there is no forward-auth endpoint".into(),
            ));
        }
        if !shown.rls.listen_is_set() {
            notes.push((
                "rls",
                "# listen is not set: Envoy's rate limit protocol is not served".into(),
            ));
        }
        if shown.server.max_connections.is_none() {
            notes.push((
                "server",
                "# max_connections is not set: sized when serving starts, from the descriptor \
                 limit"
                    .into(),
            ));
        }
        for (table, key, secret) in [
            ("redis", "password", shown.redis.password.take()),
            ("identity", "hash_key", shown.identity.hash_key.take()),
        ] {
            let state = if secret.is_some() {
                "is set (not shown)"
            } else {
                "is not set"
            };
            notes.push((table, format!("# {key} {state}")));
        }
        let text = toml::to_string(&shown).expect("the configuration serializes to TOML");
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for (table, note) in notes {
            let header = format!("[{table}]");
            match lines.iter().position(|line| *line == header) {
                Some(at) => {
                    let after = lines[at + 1..]
                        .iter()
                        .take_while(|line| line.starts_with('#'))
                        .count();
                    lines.insert(at + 1 + after, note);
                }
                None => lines.extend([String::new(), header, note]),
            }
        }
        lines.join("\n") + "\n"
    }
}

/// A duration as the configuration writes one, in the largest unit that keeps it exact.
pub(super) fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ]
    .into_iter()
    .find(|&(_, unit)| ms != 0 && ms.is_multiple_of(unit))
    .map_or_else(
        || format!("{ms}ms"),
        |(name, unit)| format!("{}{name}", ms / unit),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::variables::known_keys;

    /// `check-config` prints every key the configuration takes, found from serde's own field
    /// lists, so a key added later cannot be left out: each as `key = ` or, for a secret or an
    /// unset key, as a `# key ` comment, in its table.
    #[test]
    fn effective_toml_names_every_key() {
        let keys = known_keys();
        assert!(keys.iter().any(|k| k == "redis.connections"), "{keys:?}");
        for text in [
            Settings::from_toml("").unwrap().effective_toml(),
            Settings::from_toml(
                "[redis]\nurl = \"redis://:pw@127.0.0.1:6379\"\npassword = \"pw\"\n\
                 [identity]\nhash_key = \"pepper\"\n",
            )
            .unwrap()
            .effective_toml(),
        ] {
            let table: toml::Table = text.parse().expect("check-config prints TOML");
            assert!(!text.contains("pw") && !text.contains("pepper"), "{text}");
            for key in keys.iter().filter(|k| !k.starts_with("policies")) {
                let (section, name) = key.split_once('.').map_or(("", key.as_str()), |s| s);
                let lines: Vec<&str> = if section.is_empty() {
                    text.lines().take_while(|l| !l.starts_with('[')).collect()
                } else {
                    let header = format!("[{section}]");
                    text.lines()
                        .skip_while(|l| *l != header)
                        .skip(1)
                        .take_while(|l| !l.starts_with('['))
                        .collect()
                };
                assert!(
                    lines.iter().any(|l| l.starts_with(&format!("{name} = "))
                        || l.starts_with(&format!("# {name} "))),
                    "{key} is not printed:\n{text}"
                );
            }
            assert!(table["redis"].get("connections").is_some(), "{text}");
        }
    }

    /// A duration prints in the largest unit that keeps it exact.
    #[test]
    fn durations_print_exactly() {
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(2000)), "2s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
