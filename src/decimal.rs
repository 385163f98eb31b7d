//! Decimal digits without `core::fmt`: the hot path writes numbers into header values and
//! cache keys on every request, and the formatting machinery costs several times the digits.

/// Appends `n` in decimal to `out`.
pub fn push(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
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
