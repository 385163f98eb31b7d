//! Decimal digits without `core::fmt`: the hot path writes numbers into header values and
//! cache keys on every request, and the formatting machinery costs several times the digits.

/// "00" to "99": two digits per division, as itoa does, halve the divisions.
const PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// Appends `n` in decimal to `out`.
pub fn push(out: &mut String, n: u64) {
    let mut buffer = [0u8; MAX_DIGITS];
    // Only ASCII digits are written.
    out.push_str(std::str::from_utf8(digits(n, &mut buffer)).expect("ASCII digits"));
}

/// The most digits a `u64` has.
pub const MAX_DIGITS: usize = 20;

/// `n` in decimal, written at the end of `buffer`: ASCII digits only.
pub fn digits(mut n: u64, buffer: &mut [u8; MAX_DIGITS]) -> &[u8] {
    let mut at = buffer.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        buffer[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        buffer[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        buffer[at] = b'0' + n as u8;
    }
    &buffer[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digits are the same as `Display`'s, at both ends of the range and between.
    #[test]
    fn writes_what_display_writes() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = String::from("x");
            push(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }
}
