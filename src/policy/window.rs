//! Lengths written with a unit: a policy's [`Window`] (whole seconds, as `RateLimit-Policy`
//! advertises it) and the configuration's durations ([`parse_duration`]).

use std::num::NonZeroU64;
use std::time::Duration;

use super::MAX_WINDOW_MS;

/// A window length: a whole, positive number of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(NonZeroU64);

impl Window {
    /// A window of `ms` milliseconds; `None` for zero or more than [`MAX_WINDOW_MS`].
    ///
    /// Library users may pick any number of milliseconds; headers then round the window up to
    /// whole seconds, as `RateLimit-Policy` counts in seconds.
    pub fn from_millis(ms: u64) -> Option<Self> {
        NonZeroU64::new(ms)
            .filter(|ms| ms.get() <= MAX_WINDOW_MS)
            .map(Window)
    }

    /// Parses a configured window, `"30s"`, `"1m"`, `"2h"` or `"1d"`: whole seconds, minutes,
    /// hours or days, so that `RateLimit-Policy` advertises it exactly. The error says what is
    /// wrong and lists exactly the units a window takes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ms = u64::try_from(parse_in(text, &WINDOW_UNITS)?.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return Err(format!("{text:?} is not a positive length"));
        }
        Window::from_millis(ms).ok_or_else(|| format!("{text:?} is longer than 100 years"))
    }

    /// The length in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0.get()
    }

    /// The length in whole seconds, rounded up, as `RateLimit-Policy`'s `w` wants it.
    pub fn as_secs_ceil(self) -> u64 {
        self.0.get().div_ceil(1000)
    }

    /// The length as a `Duration`.
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0.get())
    }
}

/// The units a length may be written in, and the examples its errors give.
struct Units {
    /// Each unit and its length in milliseconds.
    units: &'static [(&'static str, u64)],
    /// How a length is written, for the error about a missing unit.
    examples: &'static str,
}

impl Units {
    /// `"ms, s, m, h or d"`: exactly the units accepted.
    fn list(&self) -> String {
        let names: Vec<&str> = self.units.iter().map(|(name, _)| *name).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// Durations: timeouts and cool-downs.
const DURATION_UNITS: Units = Units {
    units: &[
        ("ms", 1),
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ],
    examples: "\"100ms\", \"30s\" or \"1m\"",
};

/// Windows: no `ms`, because `RateLimit-Policy` advertises a window in whole seconds.
const WINDOW_UNITS: Units = Units {
    units: &[
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ],
    examples: "\"30s\", \"1m\" or \"1d\"",
};

/// Parses a duration written as a whole number and a unit: `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_in(text, &DURATION_UNITS)
}

/// Parses a whole number and one of `units`; an error lists exactly those units.
fn parse_in(text: &str, units: &Units) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!(
            "{text:?} has no unit; use {}, as in {}",
            units.list(),
            units.examples
        )
    })?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let Some(&(_, unit_ms)) = units.units.iter().find(|(name, _)| *name == unit) else {
        // Only windows refuse a unit that durations take: `ms`.
        if DURATION_UNITS.units.iter().any(|(name, _)| *name == unit) {
            return Err(format!(
                "{text:?}: use {} (not {unit}: RateLimit-Policy advertises a window in whole \
                 seconds)",
                units.list()
            ));
        }
        return Err(format!(
            "{text:?} has an unknown unit {unit:?}; use {}",
            units.list()
        ));
    };
    number
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations parse in every unit and reject what is not a duration.
    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1 fortnight").is_err());
        assert!(Window::parse("0s").is_err());
        assert!(Window::parse("1500ms").is_err(), "not whole seconds");
        assert!(Window::parse("36501d").is_err(), "over 100 years");
        assert_eq!(
            Window::parse("30000d").unwrap().as_millis(),
            30_000 * 86_400_000
        );
    }

    /// A window takes exactly the units its errors offer: s, m, h and d parse, and ms (whole
    /// seconds or not) is refused and never offered.
    #[test]
    fn window_errors_offer_exactly_the_units_windows_take() {
        for unit in ["s", "m", "h", "d"] {
            assert!(Window::parse(&format!("2{unit}")).is_ok(), "{unit}");
        }
        for text in ["1500ms", "1000ms", "1 minute", "60", "1w"] {
            let error = Window::parse(text).expect_err(text);
            assert!(error.contains(" s, m, h or d"), "{text}: {error}");
            assert!(!error.contains("ms, "), "{text} offers ms: {error}");
        }
        let error = parse_duration("1 minute").unwrap_err();
        assert!(error.contains("use ms, s, m, h or d"), "{error}");
    }
}
