//! JSON encoding for message payloads.
//!
//! [`append_json`] writes exactly what `serde_json::to_writer` writes. It only adds a fast path
//! for string values that need no escaping, the common shape of pre-serialized payloads:
//! serde_json checks such a string byte by byte through a lookup table, which measured about
//! 1,000 instructions for a 100-byte message (callgrind, `node_kafka_producer_pool_effect`),
//! as much as librdkafka's whole enqueue.

use serde_json::Value;

/// Appends `value` as JSON to `out`.
pub fn append_json(out: &mut Vec<u8>, value: &Value) -> Result<(), serde_json::Error> {
    if let Value::String(text) = value
        && !needs_escaping(text.as_bytes())
    {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return Ok(());
    }
    serde_json::to_writer(out, value)
}

/// Whether serde_json would escape any byte of `bytes`: control characters, `"` and `\`.
/// Checked sixteen bytes at a time without early exit inside a block: blocks of a constant
/// length are unrolled and vectorized (`chunks`, whose blocks have a variable length, compiled
/// to a loop of about 2.5 instructions per byte).
fn needs_escaping(bytes: &[u8]) -> bool {
    fn escaped(b: u8) -> bool {
        (b < 0x20) | (b == b'"') | (b == b'\\')
    }
    let mut blocks = bytes.chunks_exact(16);
    let tail = blocks.remainder();
    blocks.any(|block| block.iter().fold(false, |hit, &b| hit | escaped(b))) || tail.iter().any(|&b| escaped(b))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn encoded(value: &Value) -> Vec<u8> {
        let mut out = b"prefix".to_vec();
        append_json(&mut out, value).unwrap();
        out.split_off(6)
    }

    #[test]
    fn output_is_byte_identical_to_serde_json() {
        let long = "x".repeat(100);
        let cases = [
            json!("plain text"),
            json!(""),
            json!(long),
            json!("quote \" inside"),
            json!("back\\slash"),
            json!("tab\tand\nnewline"),
            json!("\u{1}control"),
            json!("unicode é ✓ 🚀 stays as is"),
            json!("del \u{7f} is not escaped"),
            json!(format!("{}\"", "y".repeat(31))),
            json!({"k": "v", "n": 1, "a": [1.5, null, true]}),
            json!(42),
            json!(null),
        ];
        for value in cases {
            assert_eq!(encoded(&value), serde_json::to_vec(&value).unwrap(), "{value}");
        }
    }

    #[test]
    fn an_escaped_byte_is_found_in_every_position_of_a_block_and_of_the_tail() {
        for escaped in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
            for at in 0..40 {
                let mut text: Vec<char> = "a".repeat(40).chars().collect();
                text[at] = escaped;
                let value = Value::String(text.into_iter().collect());
                assert_eq!(encoded(&value), serde_json::to_vec(&value).unwrap(), "{value}");
            }
        }
    }
}
