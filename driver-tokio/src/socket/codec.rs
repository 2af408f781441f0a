//! The JS original's socket payload, as it travels in a `user` message's `data`:
//!
//! ```json
//! {"buffer":{"type":"Buffer","data":[104,105]},"address":"<sender id, 40 hex>","port":4242}
//! ```
//!
//! `buffer` is what Node's `JSON.stringify` makes of a `Buffer`, `address` is the *sender's*
//! id and `port` the *sender's* port (the original's `wgram.js` writes
//! `self.peer.id.toString('hex')` and `self._port`; the destination port is not sent at all).
//!
//! A datagram of 60,000 bytes is about 230 KB of JSON numbers, so both directions go byte by
//! byte through serde without a `serde_json::Value` per byte (see the `socket_codec` bench).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `family` the original reports in every address: `"peer-relay"`.
pub const FAMILY: &str = "peer-relay";

/// One socket payload to encode: serialising it (with `serde_json`) gives the original's
/// wire form, in the original's key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The datagram.
    pub data: &'a [u8],
    /// The sender's id as 40 hex characters.
    pub address: &'a str,
    /// The sender's port.
    pub port: u16,
}

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut payload = serializer.serialize_struct("Payload", 3)?;
        payload.serialize_field("buffer", &NodeBuffer(self.data))?;
        payload.serialize_field("address", self.address)?;
        payload.serialize_field("port", &self.port)?;
        payload.end()
    }
}

/// A Node `Buffer`'s JSON form: `{"type":"Buffer","data":[...]}`.
struct NodeBuffer<'a>(&'a [u8]);

impl Serialize for NodeBuffer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = serializer.serialize_struct("Buffer", 2)?;
        buffer.serialize_field("type", "Buffer")?;
        buffer.serialize_field("data", &ByteArray(self.0))?;
        buffer.end()
    }
}

/// Bytes as a JSON array of numbers (explicitly a sequence: `serialize_bytes` is
/// format-specific).
struct ByteArray<'a>(&'a [u8]);

impl Serialize for ByteArray<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for byte in self.0 {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }
}

/// Encodes a payload to its JSON text.
pub fn encode_payload(data: &[u8], address: &str, port: u16) -> String {
    let mut out = Vec::with_capacity(data.len() * 4 + 96);
    let payload = Payload {
        data,
        address,
        port,
    };
    // Writing into a Vec cannot fail and every part is valid UTF-8.
    serde_json::to_writer(&mut out, &payload).expect("a payload always serialises");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The datagram.
    pub data: Vec<u8>,
    /// The `address` field as sent (the original puts the sender's id there).
    pub address: String,
    /// The sender's port.
    pub port: u16,
}

/// Why a `user` message was not a socket payload; such messages are dropped and counted
/// ([`SocketStats::malformed`](crate::SocketStats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum Malformed {
    /// The message data is not a JSON object (a plain `PeerRelay` message, say).
    NotAnObject,
    /// No `buffer` field.
    MissingBuffer,
    /// `buffer` is neither `{"type":"Buffer","data":[bytes]}` nor an array of bytes (an
    /// element that is not an integer 0-255, a wrong `type`, ...).
    BadBuffer,
    /// No `address` field.
    MissingAddress,
    /// `address` is not a string of 40 hex characters.
    BadAddress,
    /// `address` names another peer than the message's sender.
    AddressMismatch,
    /// No `port` field.
    MissingPort,
    /// `port` is not an integer 0-65535.
    BadPort,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::NotAnObject => "not a JSON object",
            Malformed::MissingBuffer => "no `buffer`",
            Malformed::BadBuffer => "`buffer` is not a Buffer of bytes",
            Malformed::MissingAddress => "no `address`",
            Malformed::BadAddress => "`address` is not 40 hex characters",
            Malformed::AddressMismatch => "`address` is not the sender's id",
            Malformed::MissingPort => "no `port`",
            Malformed::BadPort => "`port` is not an integer 0-65535",
        })
    }
}

impl std::error::Error for Malformed {}

/// Decodes a payload's JSON text. Accepts what the original's receiver accepts through
/// `new Buffer(msg.buffer)` as long as it is exact: the `Buffer` object or a bare array of
/// integers 0-255. Stricter than Node, which would coerce `300` to `44`, `"7"` to `7` and a
/// string to its UTF-8 bytes: those are [`Malformed::BadBuffer`]. Unknown fields are
/// ignored; of duplicate fields the last wins, as with `JSON.parse`.
///
/// Does not check `address` against the sender: the caller knows the sender.
pub fn decode_payload(json: &str) -> Result<Decoded, Malformed> {
    match decode_canonical(json.as_bytes()) {
        Some(decoded) => Ok(decoded),
        None => decode_general(json),
    }
}

/// The fast path: exactly what `JSON.stringify` (and [`encode_payload`]) writes, no
/// whitespace, keys in the original's order. `None` sends anything else, including every
/// malformed payload, to the general parser, which names the reason.
fn decode_canonical(json: &[u8]) -> Option<Decoded> {
    let rest = json.strip_prefix(br#"{"buffer":{"type":"Buffer","data":["#)?;
    // Every byte takes at least two characters ("0,").
    let mut data = Vec::with_capacity(rest.len() / 2);
    let mut i = 0;
    if rest.first() == Some(&b']') {
        i = 1;
    } else {
        loop {
            let (byte, len) = parse_u8(&rest[i..])?;
            data.push(byte);
            i += len;
            match rest.get(i) {
                Some(b',') => i += 1,
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    let rest = rest[i..].strip_prefix(br#"},"address":""#)?;
    let (address, rest) = rest.split_at_checked(40)?;
    if !address.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digits = rest.strip_prefix(br#"","port":"#)?.strip_suffix(b"}")?;
    if digits.is_empty() || digits.len() > 5 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut port = 0u32;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(d - b'0');
    }
    Some(Decoded {
        data,
        // Checked to be ASCII hex above.
        address: String::from_utf8(address.to_vec()).ok()?,
        port: u16::try_from(port).ok()?,
    })
}

/// A JSON integer 0-255 at the start of `text` (no sign, no leading zero, no fraction or
/// exponent after it) and its length.
#[inline]
fn parse_u8(text: &[u8]) -> Option<(u8, usize)> {
    let digit = |i: usize| text.get(i).filter(|d| d.is_ascii_digit()).map(|d| d - b'0');
    let first = digit(0)?;
    if first == 0 {
        return Some((0, 1)); // a following digit fails at the separator check
    }
    let Some(second) = digit(1) else {
        return Some((first, 1));
    };
    let Some(third) = digit(2) else {
        return Some((first * 10 + second, 2));
    };
    if digit(3).is_some() {
        return None;
    }
    let value = u16::from(first) * 100 + u16::from(second) * 10 + u16::from(third);
    Some((u8::try_from(value).ok()?, 3))
}

/// The general path: any JSON object, with the reason when it is not a payload.
fn decode_general(json: &str) -> Result<Decoded, Malformed> {
    let field = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let parsed = PayloadSeed { field: &field }
        .deserialize(&mut deserializer)
        .and_then(|parsed| deserializer.end().map(|()| parsed));
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(_) => {
            return Err(match field.get() {
                Some(Field::Buffer) => Malformed::BadBuffer,
                Some(Field::Address) => Malformed::BadAddress,
                Some(Field::Port) => Malformed::BadPort,
                None => Malformed::NotAnObject,
            });
        }
    };
    let data = parsed.data.ok_or(Malformed::MissingBuffer)?;
    let address = parsed.address.ok_or(Malformed::MissingAddress)?;
    if address.len() != 40 || !address.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Malformed::BadAddress);
    }
    let port = parsed.port.ok_or(Malformed::MissingPort)?;
    Ok(Decoded {
        data,
        address: address.into_owned(),
        port,
    })
}

/// The field being parsed when an error struck, to name the reason.
#[derive(Debug, Clone, Copy)]
enum Field {
    Buffer,
    Address,
    Port,
}

struct Parsed<'de> {
    data: Option<Vec<u8>>,
    address: Option<Cow<'de, str>>,
    port: Option<u16>,
}

struct PayloadSeed<'f> {
    field: &'f Cell<Option<Field>>,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = Parsed<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Parsed<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed<'_> {
    type Value = Parsed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a socket payload object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
        let mut parsed = Parsed {
            data: None,
            address: None,
            port: None,
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Buffer => {
                    self.field.set(Some(Field::Buffer));
                    parsed.data = Some(map.next_value::<BufferJson>()?.0);
                }
                Key::Address => {
                    self.field.set(Some(Field::Address));
                    parsed.address = Some(map.next_value::<BorrowedStr<'de>>()?.0);
                }
                Key::Port => {
                    self.field.set(Some(Field::Port));
                    parsed.port = Some(map.next_value::<u16>()?);
                }
                Key::Other => {
                    self.field.set(None);
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.field.set(None);
        Ok(parsed)
    }
}

/// A payload key, recognised without allocating.
enum Key {
    Buffer,
    Address,
    Port,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "buffer" => Key::Buffer,
                    "address" => Key::Address,
                    "port" => Key::Port,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// A string borrowed from the input when it has no escapes.
struct BorrowedStr<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = BorrowedStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// `{"type":"Buffer","data":[bytes]}` or `[bytes]`.
struct BufferJson(Vec<u8>);

impl<'de> Deserialize<'de> for BufferJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BufferVisitor;
        impl<'de> Visitor<'de> for BufferVisitor {
            type Value = BufferJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Node Buffer or an array of bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<BufferJson, A::Error> {
                ByteVisitor.visit_seq(seq).map(BufferJson)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BufferJson, A::Error> {
                let mut is_buffer = false;
                let mut data = None;
                while let Some(key) = map.next_key::<BorrowedStr<'de>>()? {
                    match &*key.0 {
                        "type" => is_buffer = map.next_value::<BorrowedStr<'de>>()?.0 == "Buffer",
                        "data" => data = Some(map.next_value::<Bytes>()?.0),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                match data {
                    // Node's Buffer.from(object) needs both.
                    Some(data) if is_buffer => Ok(BufferJson(data)),
                    _ => Err(de::Error::custom("not a Buffer")),
                }
            }
        }
        deserializer.deserialize_any(BufferVisitor)
    }
}

/// A JSON array of integers 0-255.
struct Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ByteVisitor).map(Bytes)
    }
}

struct ByteVisitor;

impl<'de> Visitor<'de> for ByteVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of integers 0-255")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // JSON gives no length; start with room for a typical small datagram.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(256).min(1 << 16));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn encodes_like_node_json_stringify() {
        // What `JSON.stringify({buffer: Buffer.from([0, 104, 255]), address, port})` prints.
        assert_eq!(
            encode_payload(&[0, 104, 255], ID, 4242),
            format!(
                r#"{{"buffer":{{"type":"Buffer","data":[0,104,255]}},"address":"{ID}","port":4242}}"#
            )
        );
        assert_eq!(
            encode_payload(&[], ID, 0),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[]}},"address":"{ID}","port":0}}"#)
        );
    }

    #[test]
    fn every_byte_value_round_trips() {
        let data: Vec<u8> = (0..=255).collect();
        let json = encode_payload(&data, ID, 65535);
        let decoded = decode_payload(&json).unwrap();
        assert_eq!(decoded.data, data);
        assert_eq!(decoded.address, ID);
        assert_eq!(decoded.port, 65535);
    }

    #[test]
    fn large_datagram_round_trips() {
        let data: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let json = encode_payload(&data, ID, 1);
        assert_eq!(decode_payload(&json).unwrap().data, data);
    }

    #[test]
    fn fast_path_agrees_with_the_general_parser() {
        let data: Vec<u8> = (0..=255).chain([0, 0, 9, 10, 99, 100, 255]).collect();
        for (data, port) in [(&data[..], 4242), (&[][..], 0), (&[7][..], 65535)] {
            let json = encode_payload(data, ID, port);
            let fast = decode_canonical(json.as_bytes()).expect("canonical form");
            assert_eq!(Ok(fast), decode_general(&json));
        }
        // Near misses leave the fast path; the general parser decides.
        let near_misses = [
            format!(r#"{{"buffer":{{"type":"Buffer","data":[01]}},"address":"{ID}","port":1}}"#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[256]}},"address":"{ID}","port":1}}"#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[1,]}},"address":"{ID}","port":1}}"#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[1000]}},"address":"{ID}","port":1}}"#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[1.0]}},"address":"{ID}","port":1}}"#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[1 ]}},"address":"{ID}","port":1}}"#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[-1]}},"address":"{ID}","port":1}}"#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[1]}},"address":"{ID}","port":65536}}"#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[1]}},"address":"{ID}","port":01}}"#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[1]}},"address":"{ID}","port":1}} "#),
            format!(r#"{{"buffer":{{"type":"Buffer","data":[1]}},"address":"{ID}","port":1,"x":2}}"#),
            r#"{"buffer":{"type":"Buffer","data":[1]},"address":"z123456789abcdef0123456789abcdef01234567","port":1}"#.to_owned(),
            r#"{"buffer":{"type":"Buffer","data":[1]},"address":"0123","port":1}"#.to_owned(),
        ];
        for json in &near_misses {
            assert_eq!(decode_canonical(json.as_bytes()), None, "{json}");
            assert_eq!(decode_payload(json), decode_general(json), "{json}");
        }
        assert_eq!(decode_payload(&near_misses[1]), Err(Malformed::BadBuffer));
        // Whitespace or extra fields are still fine, through the general path.
        assert_eq!(decode_payload(&near_misses[5]).unwrap().data, [1]);
        assert_eq!(decode_payload(&near_misses[9]).unwrap().data, [1]);
    }

    #[test]
    fn accepts_what_node_accepts_exactly() {
        // Other key order, whitespace, extra fields, a bare array, escapes in the address.
        let other = format!(
            r#" {{ "port" : 7, "extra": {{"x": [1]}}, "address": "{ID}",
                 "buffer": {{"data": [1, 2], "type": "Buffer", "more": null}} }} "#
        );
        let decoded = decode_payload(&other).unwrap();
        assert_eq!((decoded.data, decoded.port), (vec![1, 2], 7));
        let bare = format!(r#"{{"buffer":[9],"address":"{ID}","port":1}}"#);
        assert_eq!(decode_payload(&bare).unwrap().data, vec![9]);
        let escaped = format!(r#"{{"buffer":[],"address":"\u0030{}","port":1}}"#, &ID[1..]);
        assert_eq!(decode_payload(&escaped).unwrap().address, ID);
        // Duplicate keys: the last wins, as in JSON.parse.
        let dup = format!(r#"{{"buffer":[1],"buffer":[2],"address":"{ID}","port":1}}"#);
        assert_eq!(decode_payload(&dup).unwrap().data, vec![2]);
    }

    #[test]
    fn malformed_payloads_are_named() {
        let cases: &[(&str, Malformed)] = &[
            (r#""TEST""#, Malformed::NotAnObject),
            ("[1,2,3]", Malformed::NotAnObject),
            ("null", Malformed::NotAnObject),
            ("{", Malformed::NotAnObject),
            (r#"{"address":"A","port":1}"#, Malformed::MissingBuffer),
            (r#"{"buffer":[256],"port":1}"#, Malformed::BadBuffer),
            (r#"{"buffer":[-1]}"#, Malformed::BadBuffer),
            (r#"{"buffer":[1.5]}"#, Malformed::BadBuffer),
            (r#"{"buffer":["7"]}"#, Malformed::BadBuffer),
            (r#"{"buffer":"hi"}"#, Malformed::BadBuffer),
            (r#"{"buffer":null}"#, Malformed::BadBuffer),
            (r#"{"buffer":{"data":[1]}}"#, Malformed::BadBuffer),
            (r#"{"buffer":{"type":"Buffer"}}"#, Malformed::BadBuffer),
            (
                r#"{"buffer":{"type":"Uint8Array","data":[1]}}"#,
                Malformed::BadBuffer,
            ),
            (r#"{"buffer":[],"port":1}"#, Malformed::MissingAddress),
            (
                r#"{"buffer":[],"address":7,"port":1}"#,
                Malformed::BadAddress,
            ),
            (
                r#"{"buffer":[],"address":"xyz","port":1}"#,
                Malformed::BadAddress,
            ),
            (
                r#"{"buffer":[],"address":"0123456789abcdef0123456789abcdef0123456g","port":1}"#,
                Malformed::BadAddress,
            ),
        ];
        for (json, reason) in cases {
            assert_eq!(decode_payload(json), Err(*reason), "{json}");
        }
        let port = |p: &str| format!(r#"{{"buffer":[],"address":"{ID}","port":{p}}}"#);
        assert_eq!(
            decode_payload(&format!(r#"{{"buffer":[],"address":"{ID}"}}"#)),
            Err(Malformed::MissingPort)
        );
        for bad in ["65536", "-1", "1.5", "\"80\"", "null"] {
            assert_eq!(decode_payload(&port(bad)), Err(Malformed::BadPort), "{bad}");
        }
        assert_eq!(decode_payload(&port("65535")).unwrap().port, 65535);
    }
}
