//! National Provider Identifier check.
//!
//! An NPI is 10 digits; the last is a Luhn check digit computed over the first nine with
//! the prefix `80840` (the NPI's issuer prefix in ISO 7812 card-number form).

/// Is `npi` 10 digits with a correct check digit?
pub fn is_valid(npi: &str) -> bool {
    if npi.len() != 10 || !npi.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let digits = b"80840"
        .iter()
        .chain(npi.as_bytes())
        .map(|b| u32::from(b - b'0'));
    // Luhn from the right: every second digit, starting with the one left of the check
    // digit, is doubled.
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| match (i % 2, d * 2) {
            (1, doubled) if doubled > 9 => doubled - 9,
            (1, doubled) => doubled,
            _ => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn check_digits() {
        // The example NPI from the CMS check-digit paper, and the golden cases' NPIs.
        for good in [
            "1234567893",
            "1111111112",
            "1222222220",
            "1333333338",
            "1444444446",
        ] {
            assert!(is_valid(good), "{good}");
        }
        for bad in [
            "1234567890",
            "123456789",
            "12345678931",
            "123456789X",
            "",
            "1234 67893",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
