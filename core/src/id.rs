//! Peer ids and XOR distance.
//!
//! A [`PeerId`] is 160 random bits. On the wire it appears either as 40 lowercase hex
//! characters or, because the JS original serialises Node `Buffer`s as-is, as the object
//! `{"type":"Buffer","data":[..20 byte values..]}`. Both forms are accepted everywhere; we
//! write hex, except in the id handshake where the original writes the Buffer form.

use core::fmt;
use core::fmt::Write as _;
use core::str::FromStr;

use rand_core::Rng;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::wire::ERR_ID;

/// Length of a peer id in bytes.
pub const ID_LEN: usize = 20;
/// Length of a peer id in hex characters.
pub const HEX_LEN: usize = 2 * ID_LEN;
/// Number of bits in a peer id.
pub const ID_BITS: usize = 8 * ID_LEN;

/// A 160-bit peer identifier. Ordered as a big-endian 160-bit integer.
#[derive(Clone, Copy, Default)]
pub struct PeerId([u8; ID_LEN]);

// Word-wise equality is byte equality, so hashing the bytes stays consistent with it.
impl core::hash::Hash for PeerId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// The 20 bytes as (high 128 bits, low 32 bits): comparing these two words orders ids exactly
/// like their bytes, without a `memcmp` call on hot paths (link lookups, routing).
#[inline]
fn words(bytes: &[u8; ID_LEN]) -> (u128, u32) {
    let mut hi = [0u8; 16];
    hi.copy_from_slice(&bytes[..16]);
    let mut lo = [0u8; 4];
    lo.copy_from_slice(&bytes[16..]);
    (u128::from_be_bytes(hi), u32::from_be_bytes(lo))
}

impl PartialEq for PeerId {
    #[inline]
    fn eq(&self, other: &PeerId) -> bool {
        words(&self.0) == words(&other.0)
    }
}

impl Eq for PeerId {}

impl PartialOrd for PeerId {
    #[inline]
    fn partial_cmp(&self, other: &PeerId) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PeerId {
    #[inline]
    fn cmp(&self, other: &PeerId) -> core::cmp::Ordering {
        words(&self.0).cmp(&words(&other.0))
    }
}

/// Why a string or JSON value is not a peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// Hex form that is not exactly 40 characters long.
    Length,
    /// A character that is not a hex digit.
    NotHex,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Length => write!(f, "peer id must be {HEX_LEN} hex characters"),
            IdError::NotHex => write!(f, "peer id contains a non-hex character"),
        }
    }
}

impl std::error::Error for IdError {}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Hex digit values; 0xff marks a non-hex byte.
const HEX_VALUES: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

impl PeerId {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        PeerId(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// A uniformly random id drawn from `rng`.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; ID_LEN];
        rng.fill_bytes(&mut bytes);
        PeerId(bytes)
    }

    /// Parses exactly 40 hex characters (either case).
    pub fn from_hex(hex: &str) -> Result<Self, IdError> {
        Self::from_hex_bytes(hex.as_bytes())
    }

    /// Parses exactly 40 hex characters given as bytes.
    pub fn from_hex_ascii(hex: &[u8]) -> Result<Self, IdError> {
        Self::from_hex_bytes(hex)
    }

    fn from_hex_bytes(hex: &[u8]) -> Result<Self, IdError> {
        if hex.len() != HEX_LEN {
            return Err(IdError::Length);
        }
        let mut bytes = [0u8; ID_LEN];
        let mut invalid = 0u8;
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            let hi = HEX_VALUES[usize::from(pair[0])];
            let lo = HEX_VALUES[usize::from(pair[1])];
            // Branch-free: any 0xff sets the high bits; checked once at the end.
            invalid |= hi | lo;
            *byte = (hi << 4) | (lo & 0x0f);
        }
        if invalid & 0xf0 != 0 {
            return Err(IdError::NotHex);
        }
        Ok(PeerId(bytes))
    }

    /// The 40 lowercase hex characters of this id.
    pub fn to_hex(&self) -> HexId {
        let mut out = [0u8; HEX_LEN];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
            pair[1] = HEX_DIGITS[usize::from(byte & 0xf)];
        }
        HexId(out)
    }

    /// Appends the 40 lowercase hex characters to `out` (what the wire writer does for every
    /// id of every frame).
    pub fn push_hex(&self, out: &mut String) {
        // One copy of the finished digits (their 40-byte UTF-8 check is cheaper than pushing
        // 40 chars one by one, each checking capacity and encoding UTF-8).
        out.push_str(self.to_hex().as_str());
    }

    /// Appends the JS Buffer JSON form, `{"type":"Buffer","data":[..]}`.
    pub fn write_buffer_json(&self, out: &mut String) {
        out.push_str(r#"{"type":"Buffer","data":["#);
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Writing into a String cannot fail.
            let _ = write!(out, "{byte}");
        }
        out.push_str("]}");
    }

    /// The JS Buffer JSON form as a new string.
    pub fn to_buffer_json(&self) -> String {
        let mut out = String::with_capacity(100);
        self.write_buffer_json(&mut out);
        out
    }

    /// XOR distance between two ids.
    #[inline]
    pub fn distance(&self, other: &PeerId) -> Distance {
        let (a_hi, a_lo) = words(&self.0);
        let (b_hi, b_lo) = words(&other.0);
        Distance {
            hi: a_hi ^ b_hi,
            lo: a_lo ^ b_lo,
        }
    }

    /// Bit `index` (0 = most significant) of the id.
    pub fn bit(&self, index: usize) -> bool {
        debug_assert!(index < ID_BITS);
        self.0[index / 8] & (0x80 >> (index % 8)) != 0
    }

    /// Number of leading bits this id shares with `other` (160 when equal). This is the index
    /// of the XOR-distance bucket `other` falls into as seen from `self`.
    #[inline]
    pub fn common_prefix_len(&self, other: &PeerId) -> usize {
        self.distance(other).leading_zeros()
    }
}

/// The 40-character lowercase hex form of a [`PeerId`], on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexId([u8; HEX_LEN]);

impl HexId {
    /// As a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl core::ops::Deref for HexId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for HexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for HexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PeerId {
    /// Short form: the first 8 hex characters, enough to tell peers apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", &self.to_hex()[..8])
    }
}

impl FromStr for PeerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        PeerId::from_hex(s)
    }
}

impl Serialize for PeerId {
    /// The hex string the wire carries; in a binary format (a simulator snapshot) the 20
    /// bytes.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for PeerId {
    /// Accepts a 40-character hex string or the JS Buffer object form; in a binary format,
    /// the 20 bytes.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(PeerIdVisitor)
        } else {
            <[u8; ID_LEN]>::deserialize(deserializer).map(PeerId)
        }
    }
}

struct PeerIdVisitor;

impl<'de> Visitor<'de> for PeerIdVisitor {
    type Value = PeerId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 40-character hex string or {\"type\":\"Buffer\",\"data\":[20 bytes]}")
    }

    // Every failure starts with `ERR_ID`, so the codec can count it as a bad id.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<PeerId, E> {
        PeerId::from_hex(v).map_err(|e| E::custom(format_args!("{ERR_ID}: {e}")))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<PeerId, E> {
        PeerId::from_hex_bytes(v).map_err(|e| E::custom(format_args!("{ERR_ID}: {e}")))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<PeerId, E> {
        Err(E::custom(ERR_ID))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<PeerId, E> {
        Err(E::custom(ERR_ID))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<PeerId, E> {
        Err(E::custom(ERR_ID))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<PeerId, E> {
        Err(E::custom(ERR_ID))
    }

    fn visit_unit<E: de::Error>(self) -> Result<PeerId, E> {
        Err(E::custom(ERR_ID))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<PeerId, A::Error> {
        Err(de::Error::custom(ERR_ID))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PeerId, A::Error> {
        buffer_form(map).map_err(|_| de::Error::custom(ERR_ID))
    }
}

/// Reads the fields of `{"type":"Buffer","data":[..20 bytes..]}`.
fn buffer_form<'de, A: MapAccess<'de>>(mut map: A) -> Result<PeerId, A::Error> {
    let mut saw_type = false;
    let mut data: Option<[u8; ID_LEN]> = None;
    while let Some(key) = map.next_key::<BufferKey>()? {
        match key {
            BufferKey::Type => {
                if saw_type {
                    return Err(de::Error::duplicate_field("type"));
                }
                map.next_value::<BufferTag>()?;
                saw_type = true;
            }
            BufferKey::Data => {
                if data.is_some() {
                    return Err(de::Error::duplicate_field("data"));
                }
                data = Some(map.next_value::<IdBytes>()?.0);
            }
        }
    }
    if !saw_type {
        return Err(de::Error::missing_field("type"));
    }
    data.map(PeerId)
        .ok_or_else(|| de::Error::missing_field("data"))
}

/// Field names of the Buffer object form.
enum BufferKey {
    Type,
    Data,
}

impl<'de> Deserialize<'de> for BufferKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = BufferKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`type` or `data`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BufferKey, E> {
                match v {
                    "type" => Ok(BufferKey::Type),
                    "data" => Ok(BufferKey::Data),
                    other => Err(E::unknown_field(other, &["type", "data"])),
                }
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// The literal string `"Buffer"`.
struct BufferTag;

impl<'de> Deserialize<'de> for BufferTag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagVisitor;
        impl Visitor<'_> for TagVisitor {
            type Value = BufferTag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the string \"Buffer\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BufferTag, E> {
                if v == "Buffer" {
                    Ok(BufferTag)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_str(TagVisitor)
    }
}

/// Exactly 20 integers in 0..=255; stops reading at the 21st element.
struct IdBytes([u8; ID_LEN]);

impl<'de> Deserialize<'de> for IdBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = IdBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of 20 byte values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdBytes, A::Error> {
                let mut bytes = [0u8; ID_LEN];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = seq
                        .next_element::<u8>()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(ID_LEN + 1, &self));
                }
                Ok(IdBytes(bytes))
            }
        }
        deserializer.deserialize_seq(BytesVisitor)
    }
}

/// XOR distance between two ids; ordered as a 160-bit unsigned integer. Held as two
/// machine words (high 128 bits, low 32), so building and comparing distances is a few
/// instructions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Distance {
    hi: u128,
    lo: u32,
}

impl Distance {
    /// Number of leading zero bits (160 for distance zero).
    #[inline]
    pub fn leading_zeros(&self) -> usize {
        if self.hi != 0 {
            self.hi.leading_zeros() as usize
        } else {
            128 + self.lo.leading_zeros() as usize
        }
    }

    /// Bit `index` (0 = most significant).
    #[inline]
    pub fn bit(&self, index: usize) -> bool {
        if index < 128 {
            self.hi & (1u128 << (127 - index)) != 0
        } else {
            self.lo & (1u32 << (159 - index)) != 0
        }
    }

    /// The big-endian bytes.
    pub fn to_bytes(&self) -> [u8; ID_LEN] {
        let mut out = [0u8; ID_LEN];
        out[..16].copy_from_slice(&self.hi.to_be_bytes());
        out[16..].copy_from_slice(&self.lo.to_be_bytes());
        out
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Distance({})", PeerId(self.to_bytes()).to_hex().as_str())
    }
}

/// An id with the given first and last bytes, zeros between: unit tests place ids in a
/// table's buckets by their first byte.
#[cfg(test)]
pub(crate) fn test_id(first: u8, last: u8) -> PeerId {
    let mut bytes = [0u8; ID_LEN];
    bytes[0] = first;
    bytes[ID_LEN - 1] = last;
    PeerId::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    const HEX: &str = "aa26b030a144fa86a1a884edb33ac39ce52ddce3";
    const BUFFER: &str = r#"{"type":"Buffer","data":[170,38,176,48,161,68,250,134,161,168,132,237,179,58,195,156,229,45,220,227]}"#;

    #[test]
    fn hex_round_trip() {
        let id = PeerId::from_hex(HEX).unwrap();
        assert_eq!(id.to_string(), HEX);
        assert_eq!(PeerId::from_hex(&HEX.to_uppercase()).unwrap(), id);
        assert_eq!(format!("{id:?}"), "PeerId(aa26b030)");
        let mut out = String::from("x");
        id.push_hex(&mut out);
        assert_eq!(out, format!("x{HEX}"));
    }

    #[test]
    fn hex_rejects_bad_input() {
        assert_eq!(PeerId::from_hex(""), Err(IdError::Length));
        assert_eq!(PeerId::from_hex(&HEX[..39]), Err(IdError::Length));
        assert_eq!(PeerId::from_hex(&format!("{HEX}0")), Err(IdError::Length));
        let bad = format!("g{}", &HEX[1..]);
        assert_eq!(PeerId::from_hex(&bad), Err(IdError::NotHex));
        // Multi-byte characters must not be split into "hex pairs".
        let uni = format!("é{}", &HEX[2..]);
        assert!(PeerId::from_hex(&uni).is_err());
    }

    #[test]
    fn buffer_form_round_trip() {
        let id = PeerId::from_hex(HEX).unwrap();
        assert_eq!(id.to_buffer_json(), BUFFER);
        let parsed: PeerId = serde_json::from_str(BUFFER).unwrap();
        assert_eq!(parsed, id);
        let reordered = r#"{"data":[170,38,176,48,161,68,250,134,161,168,132,237,179,58,195,156,229,45,220,227],"type":"Buffer"}"#;
        assert_eq!(serde_json::from_str::<PeerId>(reordered).unwrap(), id);
        let from_hex: PeerId = serde_json::from_str(&format!("\"{HEX}\"")).unwrap();
        assert_eq!(from_hex, id);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{HEX}\""));
    }

    #[test]
    fn buffer_form_rejects_bad_shapes() {
        for bad in [
            r#"{"type":"Buffer","data":[1,2,3]}"#,
            r#"{"type":"Buffer","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]}"#,
            r#"{"type":"Buffer","data":[256,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}"#,
            r#"{"type":"Buffer","data":[-1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}"#,
            r#"{"type":"Nope","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}"#,
            r#"{"data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}"#,
            r#"{"type":"Buffer"}"#,
            r#"{"type":"Buffer","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],"x":1}"#,
            r#"{}"#,
            "12345",
            "null",
            "[]",
            "true",
        ] {
            assert!(
                serde_json::from_str::<PeerId>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn distance_orders_numerically() {
        let zero = PeerId::from_bytes([0; ID_LEN]);
        let mut one = [0u8; ID_LEN];
        one[ID_LEN - 1] = 1;
        let mut top = [0u8; ID_LEN];
        top[0] = 0x80;
        let one = PeerId::from_bytes(one);
        let top = PeerId::from_bytes(top);
        assert!(zero.distance(&one) < zero.distance(&top));
        assert_eq!(zero.distance(&zero).leading_zeros(), ID_BITS);
        assert_eq!(zero.distance(&one).leading_zeros(), ID_BITS - 1);
        assert_eq!(zero.distance(&top).leading_zeros(), 0);
        assert!(top.bit(0) && !top.bit(1) && one.bit(ID_BITS - 1));
        assert_eq!(one.distance(&top), top.distance(&one));
    }

    #[test]
    fn random_ids_follow_the_seed() {
        let mut a = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut b = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut c = Xoshiro256PlusPlus::seed_from_u64(8);
        let x = PeerId::random(&mut a);
        assert_eq!(x, PeerId::random(&mut b));
        assert_ne!(x, PeerId::random(&mut c));
    }
}
