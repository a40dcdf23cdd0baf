//! The binary wire format of `numeric`, to and from decimal text, so values keep every digit
//! (JSON numbers would round them through f64).
//!
//! Layout: ndigits i16, weight i16, sign u16, dscale u16, then ndigits base-10000 digits;
//! the value is Σ digit\[i\] × 10000^(weight − i).

const POSITIVE: u16 = 0x0000;
const NEGATIVE: u16 = 0x4000;
const NAN: u16 = 0xC000;
const PLUS_INFINITY: u16 = 0xD000;
const MINUS_INFINITY: u16 = 0xF000;

/// Why a text is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotANumber(pub String);

impl std::fmt::Display for NotANumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}' is not a decimal number", self.0)
    }
}

impl std::error::Error for NotANumber {}

/// Encodes decimal text (`-12.50`, `1e-3`, `NaN`, `Infinity`) into the wire format.
pub(crate) fn encode(text: &str, out: &mut Vec<u8>) -> Result<(), NotANumber> {
    let trimmed = text.trim();
    let special = match trimmed.to_ascii_lowercase().as_str() {
        "nan" => Some(NAN),
        "infinity" | "+infinity" | "inf" => Some(PLUS_INFINITY),
        "-infinity" | "-inf" => Some(MINUS_INFINITY),
        _ => None,
    };
    if let Some(sign) = special {
        write_header(out, 0, 0, sign, 0);
        return Ok(());
    }
    let bad = || NotANumber(trimmed.chars().take(40).collect());
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (unsigned, 0),
    };
    let (int_text, frac_text) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_text.is_empty() && frac_text.is_empty())
        || !int_text.bytes().chain(frac_text.bytes()).all(|b| b.is_ascii_digit())
        || exponent.unsigned_abs() > 16_383
    {
        return Err(bad());
    }
    // All digits, and the position of the decimal point within them after the exponent.
    let digits: Vec<u8> = int_text.bytes().chain(frac_text.bytes()).map(|b| b - b'0').collect();
    let point = int_text.len() as i64 + i64::from(exponent);
    let dscale = (digits.len() as i64 - point).max(0);
    // Align the digits to base-10000 groups: the integer part to the left of the point is
    // padded on the left, the fraction on the right.
    let lead_pad = (4 - point.rem_euclid(4)) % 4;
    let mut padded: Vec<u8> = vec![0; lead_pad as usize];
    padded.extend_from_slice(&digits);
    let total_points = point + lead_pad;
    while !padded.len().is_multiple_of(4) || (padded.len() as i64) < total_points {
        padded.push(0);
    }
    let mut groups: Vec<i16> =
        padded.chunks(4).map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(*d))).collect();
    let mut weight = total_points / 4 - 1;
    let leading_zeros = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading_zeros);
    weight -= leading_zeros as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign = if negative && !groups.is_empty() { NEGATIVE } else { POSITIVE };
    let weight = i16::try_from(weight).map_err(|_| bad())?;
    let ndigits = i16::try_from(groups.len()).map_err(|_| bad())?;
    let dscale = u16::try_from(dscale).map_err(|_| bad())?;
    write_header(out, ndigits, weight, sign, dscale);
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
    Ok(())
}

fn write_header(out: &mut Vec<u8>, ndigits: i16, weight: i16, sign: u16, dscale: u16) {
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
}

/// Decodes the wire format into decimal text with exactly `dscale` fraction digits, as
/// PostgreSQL prints it.
pub(crate) fn decode(raw: &[u8]) -> Result<String, String> {
    let word = |i: usize| -> Result<[u8; 2], String> {
        raw.get(i * 2..i * 2 + 2).map(|b| [b[0], b[1]]).ok_or_else(|| "truncated numeric value".to_owned())
    };
    let ndigits = i16::from_be_bytes(word(0)?);
    let weight = i64::from(i16::from_be_bytes(word(1)?));
    let sign = u16::from_be_bytes(word(2)?);
    let dscale = usize::from(u16::from_be_bytes(word(3)?));
    match sign {
        NAN => return Ok("NaN".to_owned()),
        PLUS_INFINITY => return Ok("Infinity".to_owned()),
        MINUS_INFINITY => return Ok("-Infinity".to_owned()),
        POSITIVE | NEGATIVE => {}
        other => return Err(format!("invalid numeric sign 0x{other:04x}")),
    }
    let ndigits = usize::try_from(ndigits).map_err(|_| "negative numeric digit count".to_owned())?;
    let digits: Vec<i16> = (0..ndigits).map(|i| word(4 + i).map(i16::from_be_bytes)).collect::<Result<_, _>>()?;
    let digit_at =
        |position: i64| -> i16 { usize::try_from(position).ok().and_then(|p| digits.get(p)).copied().unwrap_or(0) };
    let mut text = String::new();
    if sign == NEGATIVE {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for position in 0..=weight {
            if position == 0 {
                text.push_str(&digit_at(position).to_string());
            } else {
                text.push_str(&format!("{:04}", digit_at(position)));
            }
        }
    }
    if dscale > 0 {
        text.push('.');
        let mut fraction = String::with_capacity(dscale + 4);
        let mut position = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit_at(position)));
            position += 1;
        }
        fraction.truncate(dscale);
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let mut buf = Vec::new();
        encode(text, &mut buf).unwrap();
        decode(&buf).unwrap()
    }

    #[test]
    fn round_trips_keep_every_digit() {
        for (input, expected) in [
            ("0", "0"),
            ("1", "1"),
            ("-12.50", "-12.50"),
            ("10000", "10000"),
            ("123456789012345678901234567890.000000001", "123456789012345678901234567890.000000001"),
            ("0.0001", "0.0001"),
            ("0.00001", "0.00001"),
            ("1e3", "1000"),
            ("1.5e-3", "0.0015"),
            ("-0.0", "0.0"),
            (".5", "0.5"),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
        ] {
            assert_eq!(round_trip(input), expected, "{input}");
        }
    }

    #[test]
    fn rejects_text_that_is_not_a_number() {
        for bad in ["", "abc", "1.2.3", "1e", "--1", "1; DROP TABLE t", "1e99999"] {
            assert!(encode(bad, &mut Vec::new()).is_err(), "{bad}");
        }
    }
}
