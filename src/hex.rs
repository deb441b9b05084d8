//! Lowercase hexadecimal, for the few binary values that travel as text: the peer
//! handshake's nonces and proofs, and the cluster fingerprint.

/// `bytes` as lowercase hex, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The `N` bytes that `text` spells in hex (either case), or `None` if it is not
/// exactly `2 * N` hex digits.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let value = |d: u8| char::from(d).to_digit(16).map(|v| v as u8);
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_hex() {
        let bytes = [0x00, 0x01, 0x7f, 0x80, 0xab, 0xff];
        assert_eq!(encode(&bytes), "00017f80abff");
        assert_eq!(decode::<6>("00017f80abff"), Some(bytes));
        assert_eq!(decode::<6>("00017F80ABFF"), Some(bytes));
        for bad in [
            "",
            "00017f80abf",
            "00017f80abff00",
            "00017f80abfg",
            "+0017f80abff",
            "é017f80abf",
        ] {
            assert_eq!(decode::<6>(bad), None, "{bad:?}");
        }
    }
}
