//! Wire codec for peer-relay 0.0.2 frames.
//!
//! One transport frame (a WebSocket text frame or a WebRTC data-channel string) holds one JSON
//! value. The first frame on a WebSocket link is the sender's id ([`decode_id_handshake`]);
//! every later frame is an [`Envelope`]:
//!
//! ```json
//! {"to": ID, "from": ID, "path": ["hex", ...], "nonce": "decimal", "data": PAYLOAD}
//! ```
//!
//! The payload is kept as borrowed raw JSON ([`RawValue`]) so a relay can pass it on byte for
//! byte; only the envelope is rewritten. [`Payload::decode`] interprets it when the message is
//! for us, or when a relay checks that it is safe to pass on.

use core::fmt;
use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use crate::id::PeerId;

/// Most path entries the decoder will read before rejecting a frame. Config limits are checked
/// against this bound, so a 10,000-entry path costs no allocation.
pub const PATH_DECODE_LIMIT: usize = 64;
/// Longest nonce accepted, in bytes. The original's nonces are at most 15 decimal digits.
pub const MAX_NONCE_LEN: usize = 16;

/// Why a frame could not be decoded. Every variant maps to a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecodeError {
    /// Larger than the configured frame limit.
    Oversize,
    /// JSON nested deeper than the configured limit.
    TooDeep,
    /// Not JSON, or JSON of the wrong shape.
    Malformed,
    /// An id that is neither 40 hex characters nor the Buffer form.
    BadId,
    /// A nonce that is not a string of 1..=16 plain ASCII characters.
    BadNonce,
    /// A path that is empty or longer than the limit.
    BadPath,
    /// A well-formed envelope whose payload does not have the documented shape. This is the
    /// origin's fault, not the link's.
    MalformedPayload,
}

/// Message prefixes our visitors use, so a serde error can be mapped back to its counter.
pub(crate) const ERR_ID: &str = "invalid peer id";
const ERR_NONCE: &str = "invalid nonce";
const ERR_PATH: &str = "path too long";

impl DecodeError {
    fn classify(err: &serde_json::Error) -> DecodeError {
        if err.is_syntax() || err.is_eof() {
            return DecodeError::Malformed;
        }
        let text = err.to_string();
        if text.starts_with(ERR_ID) {
            DecodeError::BadId
        } else if text.starts_with(ERR_NONCE) {
            DecodeError::BadNonce
        } else if text.starts_with(ERR_PATH) {
            DecodeError::BadPath
        } else {
            DecodeError::Malformed
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            DecodeError::Oversize => "frame larger than the limit",
            DecodeError::TooDeep => "JSON nested deeper than the limit",
            DecodeError::Malformed => "malformed frame",
            DecodeError::BadId => "invalid peer id",
            DecodeError::BadNonce => "invalid nonce",
            DecodeError::BadPath => "invalid path",
            DecodeError::MalformedPayload => "malformed payload",
        };
        f.write_str(text)
    }
}

impl std::error::Error for DecodeError {}

/// Size and shape limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct DecodeLimits {
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Deepest JSON nesting accepted (objects and arrays, the envelope included).
    pub max_json_depth: usize,
    /// Longest path accepted (at most [`PATH_DECODE_LIMIT`]).
    pub max_path_len: usize,
    /// Most ids taken from a `foundPeers` list; the rest are ignored.
    pub max_found_peers: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_frame_bytes: 1 << 20,
            max_json_depth: 128,
            max_path_len: 20,
            max_found_peers: 20,
        }
    }
}

/// Checks size and nesting before serde sees the bytes.
///
/// `RawValue` skips nested values iteratively, so without this a 100,000-level payload would
/// be accepted and passed on to JS peers, whose `JSON.stringify` recurses and overflows.
pub fn precheck(frame: &[u8], limits: &DecodeLimits) -> Result<(), DecodeError> {
    if frame.len() > limits.max_frame_bytes {
        return Err(DecodeError::Oversize);
    }
    // Fast path: the depth can't exceed the number of opening brackets, and counting them is a
    // vectorised pass. Only frames with many brackets pay for the precise, string-aware scan.
    // `b | 0x20` maps both `[` (0x5b) and `{` (0x7b), and only them, to `{`; summing into a
    // u8 per 255-byte chunk lets the compiler count 16 bytes per instruction (4x faster than
    // an iterator that stops at every bracket, on frames full of Buffer-form ids).
    let mut openers = 0usize;
    for chunk in frame.chunks(255) {
        let in_chunk = chunk
            .iter()
            .fold(0u8, |count, &b| count + u8::from(b | 0x20 == b'{'));
        openers += usize::from(in_chunk);
        if openers > limits.max_json_depth {
            break;
        }
    }
    if openers <= limits.max_json_depth || !nests_deeper_than(frame, limits.max_json_depth) {
        return Ok(());
    }
    Err(DecodeError::TooDeep)
}

/// The precise, string-aware nesting scan: whether `frame` opens more than `max` brackets
/// at once outside strings.
fn nests_deeper_than(frame: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in frame {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Decodes the id handshake: the first frame on a WebSocket link, either the Buffer form or a
/// hex string.
pub fn decode_id_handshake(frame: &[u8], limits: &DecodeLimits) -> Result<PeerId, DecodeError> {
    precheck(frame, limits)?;
    serde_json::from_slice::<PeerId>(frame).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            DecodeError::Malformed
        } else {
            DecodeError::BadId
        }
    })
}

/// Encodes our id handshake frame in the form the original sends: the Buffer object.
pub fn encode_id_handshake(id: &PeerId) -> String {
    id.to_buffer_json()
}

/// A message nonce: 1..=16 bytes of printable ASCII other than `"` and `\`, so it is written
/// back without escaping. The original uses up to 15 decimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce {
    len: u8,
    bytes: [u8; MAX_NONCE_LEN],
}

impl Nonce {
    /// A nonce of the original's form: the decimal digits of `value`.
    pub fn from_u64(value: u64) -> Nonce {
        let mut digits = [0u8; 20];
        let mut n = 0;
        let mut v = value;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let n = n.min(MAX_NONCE_LEN);
        let mut bytes = [0u8; MAX_NONCE_LEN];
        for i in 0..n {
            bytes[i] = digits[n - 1 - i];
        }
        Nonce {
            len: n as u8,
            bytes,
        }
    }

    /// Parses a nonce string.
    pub fn parse(s: &str) -> Option<Nonce> {
        Self::parse_ascii(s.as_bytes())
    }

    /// Parses a nonce given as bytes.
    pub fn parse_ascii(raw: &[u8]) -> Option<Nonce> {
        if raw.is_empty() || raw.len() > MAX_NONCE_LEN {
            return None;
        }
        if !raw
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return None;
        }
        let mut bytes = [0u8; MAX_NONCE_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(Nonce {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// The nonce text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// An exact 128-bit key for the dedup cache. Valid nonces never contain NUL, so zero
    /// padding keeps nonces of different lengths apart.
    pub fn key(&self) -> u128 {
        u128::from_be_bytes(self.bytes)
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", self.as_str())
    }
}

impl serde::Serialize for Nonce {
    /// The string the wire carries.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Nonce {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NonceVisitor;
        impl Visitor<'_> for NonceVisitor {
            type Value = Nonce;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a nonce string of 1..=16 plain ASCII characters")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Nonce, E> {
                Nonce::parse(v).ok_or_else(|| E::custom(ERR_NONCE))
            }
        }
        deserializer
            .deserialize_str(NonceVisitor)
            .map_err(|_: D::Error| de::Error::custom(ERR_NONCE))
    }
}

/// The ids a message has passed through, its origin first. Inline for typical lengths.
pub type Path = SmallVec<[PeerId; 8]>;

/// Deserialises a path, refusing more than [`PATH_DECODE_LIMIT`] entries without allocating
/// for them.
struct PathField(Path);

impl<'de> Deserialize<'de> for PathField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathVisitor;
        impl<'de> Visitor<'de> for PathVisitor {
            type Value = PathField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path array of peer ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PathField, A::Error> {
                let mut path = Path::new();
                while let Some(id) = seq.next_element::<PeerId>()? {
                    if path.len() == PATH_DECODE_LIMIT {
                        return Err(de::Error::custom(ERR_PATH));
                    }
                    path.push(id);
                }
                Ok(PathField(path))
            }
        }
        deserializer.deserialize_seq(PathVisitor)
    }
}

#[derive(Deserialize)]
struct EnvelopeFields<'a> {
    to: PeerId,
    from: PeerId,
    path: PathField,
    nonce: Nonce,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A decoded envelope. The payload is decoded too, and its JSON text is kept, borrowed from
/// the frame, so a relay can pass it on byte for byte.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Final recipient.
    pub to: PeerId,
    /// Original sender.
    pub from: PeerId,
    /// Peers the message passed through, the origin first.
    pub path: Path,
    /// Message identity for duplicate suppression.
    pub nonce: Nonce,
    /// The decoded payload.
    pub payload: Payload<'a>,
    /// The payload's JSON text exactly as received (one valid JSON value).
    payload_json: &'a str,
}

impl<'a> Envelope<'a> {
    /// Decodes an envelope frame and its payload.
    ///
    /// Frames in the canonical shape that both this crate and the JS original write
    /// (`to, from, path, nonce, data` in that order, hex ids, no whitespace) take a
    /// hand-written fast path; anything else (Buffer-form ids after a JS relay, escapes, other
    /// key orders) goes through serde. Both accept exactly the same frames with the same
    /// result; the fast path only ever answers "yes, and here it is" or "ask serde".
    pub fn decode(frame: &'a [u8], limits: &DecodeLimits) -> Result<Envelope<'a>, DecodeError> {
        precheck(frame, limits)?;
        if let Some(envelope) = Self::decode_canonical(frame, limits) {
            return Ok(envelope);
        }
        let text = core::str::from_utf8(frame).map_err(|_| DecodeError::Malformed)?;
        Self::decode_general(text, limits)
    }

    /// The payload's JSON text, exactly as received.
    pub fn payload_json(&self) -> &'a str {
        self.payload_json
    }

    /// The serde path: any key order, either id form, escapes, whitespace.
    pub fn decode_general(
        text: &'a str,
        limits: &DecodeLimits,
    ) -> Result<Envelope<'a>, DecodeError> {
        // serde would also take the fields as an array; the protocol says object.
        if text.trim_start().as_bytes().first() != Some(&b'{') {
            return Err(DecodeError::Malformed);
        }
        let fields: EnvelopeFields<'a> =
            serde_json::from_str(text).map_err(|e| DecodeError::classify(&e))?;
        let path = fields.path.0;
        if path.is_empty() || path.len() > limits.max_path_len {
            return Err(DecodeError::BadPath);
        }
        let payload_json = fields.data.get();
        let payload = Payload::decode(payload_json, limits.max_found_peers)?;
        Ok(Envelope {
            to: fields.to,
            from: fields.from,
            path,
            nonce: fields.nonce,
            payload,
            payload_json,
        })
    }

    /// The fast path for the canonical shape; `None` means "not canonical or not valid: ask
    /// serde", never an answer different from serde's.
    pub fn decode_canonical(frame: &'a [u8], limits: &DecodeLimits) -> Option<Envelope<'a>> {
        let mut cur = Cursor {
            bytes: frame,
            at: 0,
        };
        cur.literal(br#"{"to":""#)?;
        let to = cur.hex_id()?;
        cur.literal(br#"","from":""#)?;
        let from = cur.hex_id()?;
        cur.literal(br#"","path":["#)?;
        let mut path = Path::new();
        loop {
            cur.literal(b"\"")?;
            path.push(cur.hex_id()?);
            cur.literal(b"\"")?;
            if path.len() > limits.max_path_len {
                return None;
            }
            match cur.next()? {
                b',' => continue,
                b']' => break,
                _ => return None,
            }
        }
        cur.literal(br#","nonce":""#)?;
        let start = cur.at;
        let len = cur.bytes[start..].iter().position(|&b| b == b'"')?;
        // Escapes and other exotic characters make `parse` refuse; serde then decides.
        let nonce = Nonce::parse_ascii(&frame[start..start + len])?;
        cur.at = start + len;
        cur.literal(br#"","data":"#)?;
        if cur.bytes.last() != Some(&b'}') || cur.at >= cur.bytes.len() {
            return None;
        }
        // Everything before the payload was checked ASCII; only the payload needs UTF-8 checks.
        let payload_json = core::str::from_utf8(&frame[cur.at..frame.len() - 1]).ok()?;
        let payload_json = payload_json.trim_matches(JSON_WHITESPACE);
        // Parsing the payload also proves it is exactly one JSON value.
        let payload = Payload::decode(payload_json, limits.max_found_peers).ok()?;
        Some(Envelope {
            to,
            from,
            path,
            nonce,
            payload,
            payload_json,
        })
    }
}

const JSON_WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];

/// A byte cursor for the canonical fast path.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        let end = self.at + expected.len();
        (self.bytes.get(self.at..end)? == expected).then(|| self.at = end)
    }

    fn hex_id(&mut self) -> Option<PeerId> {
        let end = self.at + crate::id::HEX_LEN;
        let id = PeerId::from_hex_ascii(self.bytes.get(self.at..end)?).ok()?;
        self.at = end;
        Some(id)
    }

    fn next(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }
}

/// Writes an envelope frame: ids as hex, `path` followed by `hop` when given (a relay appends
/// itself), and the payload verbatim.
pub fn write_envelope(
    out: &mut String,
    to: &PeerId,
    from: &PeerId,
    path: &[PeerId],
    hop: Option<&PeerId>,
    nonce: &Nonce,
    payload: &str,
) {
    // Fixed text (up to a 16-byte nonce) is 160 bytes; each path entry adds 43.
    out.reserve(160 + 43 * (path.len() + 1) + payload.len());
    out.push_str(r#"{"to":""#);
    to.push_hex(out);
    out.push_str(r#"","from":""#);
    from.push_hex(out);
    out.push_str(r#"","path":["#);
    for (i, id) in path.iter().chain(hop).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        id.push_hex(out);
        out.push('"');
    }
    out.push_str(r#"],"nonce":""#);
    out.push_str(nonce.as_str());
    out.push_str(r#"","data":"#);
    out.push_str(payload);
    out.push('}');
}

/// The `type` tag of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub enum PayloadKind {
    /// Application data.
    User,
    /// A request for peers near an id.
    FindPeers,
    /// A reply listing candidate ids.
    FoundPeers,
    /// "Tell me how I can connect to you."
    HandshakeOffer,
    /// The transports the sender offers.
    HandshakeAnswer,
    /// A WebRTC signal.
    Signal,
    /// A type this version does not know.
    Unknown,
}

impl PayloadKind {
    /// Messages that ask for a reply: relays remember the link they came over so the reply
    /// can retrace their path (the asker may not be reachable greedily yet).
    pub fn is_request(self) -> bool {
        matches!(
            self,
            PayloadKind::FindPeers | PayloadKind::HandshakeOffer | PayloadKind::Signal
        )
    }

    /// Replies, which follow the path their request came by where it is known.
    pub fn is_reply(self) -> bool {
        matches!(
            self,
            PayloadKind::FoundPeers | PayloadKind::HandshakeAnswer | PayloadKind::Signal
        )
    }
}

/// A decoded payload. `user` and `signal` data stay raw.
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    /// Application data (`null` when the sender left `data` out, as JS `undefined` does).
    User(&'a RawValue),
    /// Find peers near this id.
    FindPeers(PeerId),
    /// Candidate ids, at most the configured number (the rest is ignored).
    FoundPeers {
        /// The ids taken.
        ids: Vec<PeerId>,
        /// How many further ids the sender listed beyond the limit.
        ignored: usize,
    },
    /// A connection request.
    HandshakeOffer,
    /// A connection answer.
    HandshakeAnswer {
        /// The sender's WebSocket url, if it runs a server.
        ws: Option<Cow<'a, str>>,
        /// Whether the sender can do WebRTC.
        wrtc: bool,
    },
    /// A WebRTC signal in simple-peer's format.
    Signal(&'a RawValue),
    /// Some other type, ignored when addressed to us and relayed otherwise.
    Unknown,
}

#[derive(Deserialize)]
struct PayloadFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AnswerFields<'a> {
    #[serde(borrow, default)]
    ws: Option<Cow<'a, str>>,
    #[serde(default)]
    wrtc: Option<bool>,
}

struct IdListSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for IdListSeed {
    type Value = (Vec<PeerId>, usize);
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        struct ListVisitor {
            max: usize,
        }
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = (Vec<PeerId>, usize);
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of peer ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut ids = Vec::with_capacity(self.max.min(32));
                let mut ignored = 0usize;
                while let Some(id) = seq.next_element::<PeerId>()? {
                    if ids.len() < self.max {
                        ids.push(id);
                    } else {
                        ignored += 1;
                    }
                }
                Ok((ids, ignored))
            }
        }
        deserializer.deserialize_seq(ListVisitor { max: self.max })
    }
}

const NULL_JSON: &str = "null";

/// The JSON `null` as a raw value.
pub fn raw_null() -> &'static RawValue {
    // A constant, valid JSON text.
    serde_json::from_str::<&RawValue>(NULL_JSON).unwrap_or_else(|_| unreachable!())
}

impl<'a> Payload<'a> {
    /// Decodes a payload from its JSON text. `max_found_peers` bounds the ids taken from a
    /// `foundPeers` list. Every error is [`DecodeError::MalformedPayload`].
    pub fn decode(json: &'a str, max_found_peers: usize) -> Result<Payload<'a>, DecodeError> {
        Self::decode_fields(json, max_found_peers).map_err(|_| DecodeError::MalformedPayload)
    }

    fn decode_fields(json: &'a str, max_found_peers: usize) -> Result<Payload<'a>, DecodeError> {
        let fields: PayloadFields<'a> =
            serde_json::from_str(json).map_err(|_| DecodeError::Malformed)?;
        let data = fields.data;
        Ok(match fields.kind.as_ref() {
            "user" => Payload::User(data.unwrap_or_else(|| raw_null())),
            "findPeers" => {
                let data = data.ok_or(DecodeError::Malformed)?;
                Payload::FindPeers(
                    serde_json::from_str::<PeerId>(data.get()).map_err(|_| DecodeError::BadId)?,
                )
            }
            "foundPeers" => {
                let data = data.ok_or(DecodeError::Malformed)?;
                let mut de = serde_json::Deserializer::from_str(data.get());
                let (ids, ignored) = IdListSeed {
                    max: max_found_peers,
                }
                .deserialize(&mut de)
                .map_err(|e| {
                    if e.is_data() {
                        DecodeError::BadId
                    } else {
                        DecodeError::Malformed
                    }
                })?;
                Payload::FoundPeers { ids, ignored }
            }
            "handshake-offer" => Payload::HandshakeOffer,
            "handshake-answer" => {
                let data = data.ok_or(DecodeError::Malformed)?;
                let answer: AnswerFields<'a> =
                    serde_json::from_str(data.get()).map_err(|_| DecodeError::Malformed)?;
                Payload::HandshakeAnswer {
                    ws: answer.ws,
                    wrtc: answer.wrtc.unwrap_or(false),
                }
            }
            "signal" => {
                let data = data.ok_or(DecodeError::Malformed)?;
                if !data.get().starts_with('{') {
                    return Err(DecodeError::Malformed);
                }
                Payload::Signal(data)
            }
            _ => Payload::Unknown,
        })
    }

    /// The payload's type tag.
    pub fn kind(&self) -> PayloadKind {
        match self {
            Payload::User(_) => PayloadKind::User,
            Payload::FindPeers(_) => PayloadKind::FindPeers,
            Payload::FoundPeers { .. } => PayloadKind::FoundPeers,
            Payload::HandshakeOffer => PayloadKind::HandshakeOffer,
            Payload::HandshakeAnswer { .. } => PayloadKind::HandshakeAnswer,
            Payload::Signal(_) => PayloadKind::Signal,
            Payload::Unknown => PayloadKind::Unknown,
        }
    }
}

#[derive(Deserialize)]
struct SignalKind<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// Whether a simple-peer signal is an SDP offer (`{"type":"offer",...}`).
pub fn is_sdp_offer(signal: &str) -> bool {
    serde_json::from_str::<SignalKind<'_>>(signal).is_ok_and(|s| s.kind.as_deref() == Some("offer"))
}

/// A payload this node originates, written with [`OutgoingPayload::write`].
#[derive(Debug, Clone)]
pub enum OutgoingPayload<'a> {
    /// Application data, already JSON.
    User(&'a str),
    /// Ask for peers near this id (our own).
    FindPeers(PeerId),
    /// Candidates for the asker.
    FoundPeers(&'a [PeerId]),
    /// Request a direct link.
    HandshakeOffer,
    /// Our transports.
    HandshakeAnswer {
        /// Our advertised WebSocket url.
        ws: Option<&'a str>,
        /// Whether we do WebRTC.
        wrtc: bool,
    },
    /// A WebRTC signal, already JSON.
    Signal(&'a str),
}

impl OutgoingPayload<'_> {
    /// The payload's type tag.
    pub fn kind(&self) -> PayloadKind {
        match self {
            OutgoingPayload::User(_) => PayloadKind::User,
            OutgoingPayload::FindPeers(_) => PayloadKind::FindPeers,
            OutgoingPayload::FoundPeers(_) => PayloadKind::FoundPeers,
            OutgoingPayload::HandshakeOffer => PayloadKind::HandshakeOffer,
            OutgoingPayload::HandshakeAnswer { .. } => PayloadKind::HandshakeAnswer,
            OutgoingPayload::Signal(_) => PayloadKind::Signal,
        }
    }

    /// Appends the payload JSON.
    pub fn write(&self, out: &mut String) {
        match self {
            OutgoingPayload::User(data) => {
                out.push_str(r#"{"type":"user","data":"#);
                out.push_str(data);
                out.push('}');
            }
            OutgoingPayload::FindPeers(id) => {
                out.push_str(r#"{"type":"findPeers","data":""#);
                id.push_hex(out);
                out.push_str(r#""}"#);
            }
            OutgoingPayload::FoundPeers(ids) => {
                out.push_str(r#"{"type":"foundPeers","data":["#);
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    id.push_hex(out);
                    out.push('"');
                }
                out.push_str("]}");
            }
            OutgoingPayload::HandshakeOffer => out.push_str(r#"{"type":"handshake-offer"}"#),
            OutgoingPayload::HandshakeAnswer { ws, wrtc } => {
                out.push_str(r#"{"type":"handshake-answer","data":{"ws":"#);
                match ws {
                    // Serialising a &str into JSON cannot fail.
                    Some(url) => out.push_str(&serde_json::to_string(url).unwrap_or_default()),
                    None => out.push_str("null"),
                }
                out.push_str(r#","wrtc":"#);
                out.push_str(if *wrtc { "true" } else { "false" });
                out.push_str("}}");
            }
            OutgoingPayload::Signal(data) => {
                out.push_str(r#"{"type":"signal","data":"#);
                out.push_str(data);
                out.push('}');
            }
        }
    }

    /// The payload JSON as a new string.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64);
        self.write(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aa26b030a144fa86a1a884edb33ac39ce52ddce3";
    const B: &str = "40f6ab6d185f7725d7e117134be4727926da3e1c";

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    fn id(hex: &str) -> PeerId {
        PeerId::from_hex(hex).unwrap()
    }

    #[test]
    fn nonce_forms() {
        let n = Nonce::from_u64(394687779752301);
        assert_eq!(n.as_str(), "394687779752301");
        assert_eq!(Nonce::from_u64(0).as_str(), "0");
        assert_eq!(Nonce::parse("394687779752301"), Some(n));
        assert_ne!(
            Nonce::parse("1").unwrap().key(),
            Nonce::parse("10").unwrap().key()
        );
        for bad in ["", "12345678901234567", "a\"b", "a\\b", "tab\t", "é"] {
            assert!(Nonce::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn envelope_round_trip_keeps_payload_bytes() {
        let payload = r#"{"type":"user","data":{"b":1,  "a":[1.50,"x\u0041"]}}"#;
        let mut frame = String::new();
        let path = [id(A)];
        let nonce = Nonce::from_u64(42);
        write_envelope(&mut frame, &id(B), &id(A), &path, None, &nonce, payload);
        let env = Envelope::decode(frame.as_bytes(), &limits()).unwrap();
        assert_eq!(env.to, id(B));
        assert_eq!(env.from, id(A));
        assert_eq!(env.path.as_slice(), &path);
        assert_eq!(env.nonce, nonce);
        assert_eq!(
            env.payload_json(),
            payload,
            "payload must pass through byte for byte"
        );
        let mut relayed = String::new();
        write_envelope(
            &mut relayed,
            &env.to,
            &env.from,
            &env.path,
            Some(&id(B)),
            &env.nonce,
            env.payload_json(),
        );
        let again = Envelope::decode(relayed.as_bytes(), &limits()).unwrap();
        assert_eq!(again.path.as_slice(), &[id(A), id(B)]);
        assert_eq!(again.payload_json(), payload);
    }

    #[test]
    fn envelope_accepts_buffer_ids_and_extra_fields() {
        let to = id(B).to_buffer_json();
        let from = id(A).to_buffer_json();
        let frame = format!(
            r#"{{"extra":true,"to":{to},"from":{from},"path":["{A}"],"nonce":"7","data":{{"type":"x"}}}}"#
        );
        let env = Envelope::decode(frame.as_bytes(), &limits()).unwrap();
        assert_eq!((env.to, env.from), (id(B), id(A)));
    }

    #[test]
    fn envelope_rejections_are_classified() {
        let ok_path = format!(r#"["{A}"]"#);
        let case = |to: &str, path: &str, nonce: &str| {
            format!(
                r#"{{"to":{to},"from":"{A}","path":{path},"nonce":{nonce},"data":{{"type":"user"}}}}"#
            )
        };
        let b = format!("\"{B}\"");
        let cases = [
            (case("12345", &ok_path, "\"1\""), DecodeError::BadId),
            (case("null", &ok_path, "\"1\""), DecodeError::BadId),
            (case("\"abc\"", &ok_path, "\"1\""), DecodeError::BadId),
            (case(&b, &ok_path, "1"), DecodeError::BadNonce),
            (case(&b, &ok_path, "\"\""), DecodeError::BadNonce),
            (case(&b, "[]", "\"1\""), DecodeError::BadPath),
            (case(&b, "[1]", "\"1\""), DecodeError::BadId),
            ("not json".to_string(), DecodeError::Malformed),
            (format!(r#"{{"to":"{B}"}}"#), DecodeError::Malformed),
            ("[]".to_string(), DecodeError::Malformed),
        ];
        for (frame, want) in cases {
            assert_eq!(
                Envelope::decode(frame.as_bytes(), &limits()).unwrap_err(),
                want,
                "{frame}"
            );
        }
    }

    #[test]
    fn long_paths_are_refused() {
        let entry = format!("\"{A}\"");
        for n in [21, 64, 65, 10_000] {
            let path = vec![entry.as_str(); n].join(",");
            let frame = format!(
                r#"{{"to":"{B}","from":"{A}","path":[{path}],"nonce":"1","data":{{"type":"user"}}}}"#
            );
            assert_eq!(
                Envelope::decode(frame.as_bytes(), &limits()).unwrap_err(),
                DecodeError::BadPath,
                "{n} entries"
            );
        }
    }

    #[test]
    fn precheck_bounds_size_and_depth() {
        let small = DecodeLimits {
            max_frame_bytes: 10,
            ..limits()
        };
        assert_eq!(precheck(&[b' '; 11], &small), Err(DecodeError::Oversize));
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert_eq!(
            precheck(deep.as_bytes(), &limits()),
            Err(DecodeError::TooDeep)
        );
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert_eq!(precheck(ok.as_bytes(), &limits()), Ok(()));
        // Brackets inside strings do not count.
        let quoted = format!("[\"{}\"]", "[".repeat(1000));
        assert_eq!(precheck(quoted.as_bytes(), &limits()), Ok(()));
        let escaped = format!("[\"\\\"{}\"]", "[".repeat(1000));
        assert_eq!(precheck(escaped.as_bytes(), &limits()), Ok(()));
        // Many shallow brackets are fine.
        let wide = format!("[{}]", vec!["[]"; 1000].join(","));
        assert_eq!(precheck(wide.as_bytes(), &limits()), Ok(()));
    }

    #[test]
    fn id_handshake_forms() {
        let frame = encode_id_handshake(&id(A));
        assert_eq!(decode_id_handshake(frame.as_bytes(), &limits()), Ok(id(A)));
        assert_eq!(
            decode_id_handshake(format!("\"{A}\"").as_bytes(), &limits()),
            Ok(id(A))
        );
        for bad in ["12345", "null", "{}", "\"zz\""] {
            assert_eq!(
                decode_id_handshake(bad.as_bytes(), &limits()),
                Err(DecodeError::BadId)
            );
        }
        assert_eq!(
            decode_id_handshake(b"nope", &limits()),
            Err(DecodeError::Malformed)
        );
    }

    fn decode_payload(json: &str) -> Result<Payload<'_>, DecodeError> {
        Payload::decode(json, 20)
    }

    #[test]
    fn payload_kinds() {
        assert!(
            matches!(decode_payload(r#"{"type":"user","data":[1]}"#), Ok(Payload::User(d)) if d.get() == "[1]")
        );
        assert!(
            matches!(decode_payload(r#"{"type":"user"}"#), Ok(Payload::User(d)) if d.get() == "null")
        );
        assert!(
            matches!(decode_payload(&format!(r#"{{"type":"findPeers","data":"{A}"}}"#)), Ok(Payload::FindPeers(x)) if x == id(A))
        );
        let found_json = format!(r#"{{"type":"foundPeers","data":["{A}","{B}"]}}"#);
        let found = decode_payload(&found_json);
        assert!(
            matches!(found, Ok(Payload::FoundPeers { ids, ignored: 0 }) if ids == vec![id(A), id(B)])
        );
        assert!(matches!(
            decode_payload(r#"{"type":"handshake-offer"}"#),
            Ok(Payload::HandshakeOffer)
        ));
        let answer = decode_payload(
            r#"{"type":"handshake-answer","data":{"ws":"ws://localhost:1","wrtc":true}}"#,
        );
        assert!(
            matches!(answer, Ok(Payload::HandshakeAnswer { ws: Some(u), wrtc: true }) if u == "ws://localhost:1")
        );
        let answer =
            decode_payload(r#"{"type":"handshake-answer","data":{"ws":null,"wrtc":false}}"#);
        assert!(matches!(
            answer,
            Ok(Payload::HandshakeAnswer {
                ws: None,
                wrtc: false
            })
        ));
        assert!(matches!(
            decode_payload(r#"{"type":"signal","data":{"type":"offer","sdp":"v=0"}}"#),
            Ok(Payload::Signal(_))
        ));
        assert!(matches!(
            decode_payload(r#"{"type":"future","data":1}"#),
            Ok(Payload::Unknown)
        ));
    }

    #[test]
    fn payload_rejections() {
        for bad in [
            "null",
            "5",
            r#"{"data":1}"#,
            r#"{"type":5}"#,
            r#"{"type":"findPeers","data":{}}"#,
            r#"{"type":"findPeers"}"#,
            r#"{"type":"foundPeers","data":5}"#,
            r#"{"type":"foundPeers","data":["zz"]}"#,
            r#"{"type":"handshake-answer","data":5}"#,
            r#"{"type":"handshake-answer","data":{"wrtc":"yes"}}"#,
            r#"{"type":"signal","data":"x"}"#,
        ] {
            assert!(decode_payload(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn found_peers_take_at_most_the_limit() {
        let list = vec![format!("\"{A}\""); 50].join(",");
        let json = format!(r#"{{"type":"foundPeers","data":[{list}]}}"#);
        match Payload::decode(&json, 20).unwrap() {
            Payload::FoundPeers { ids, ignored } => assert_eq!((ids.len(), ignored), (20, 30)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outgoing_payloads_decode_back() {
        let ids = [id(A), id(B)];
        let cases = [
            OutgoingPayload::User(r#"{"x":1}"#),
            OutgoingPayload::FindPeers(id(A)),
            OutgoingPayload::FoundPeers(&ids),
            OutgoingPayload::HandshakeOffer,
            OutgoingPayload::HandshakeAnswer {
                ws: Some("ws://h:1/\"q"),
                wrtc: true,
            },
            OutgoingPayload::HandshakeAnswer {
                ws: None,
                wrtc: false,
            },
            OutgoingPayload::Signal(r#"{"type":"answer","sdp":"v=0"}"#),
        ];
        for case in cases {
            let json = case.to_json();
            let decoded = decode_payload(&json).unwrap();
            assert_ne!(decoded.kind(), PayloadKind::Unknown, "{json}");
            if let (
                OutgoingPayload::HandshakeAnswer { ws, .. },
                Payload::HandshakeAnswer { ws: got, .. },
            ) = (&case, &decoded)
            {
                assert_eq!(ws.as_deref(), got.as_deref());
            }
        }
    }

    fn same(a: &Envelope<'_>, b: &Envelope<'_>) -> bool {
        a.to == b.to
            && a.from == b.from
            && a.path == b.path
            && a.nonce == b.nonce
            && a.payload_json() == b.payload_json()
            && format!("{:?}", a.payload) == format!("{:?}", b.payload)
    }

    #[test]
    fn canonical_frames_take_the_fast_path() {
        let mut frame = String::new();
        let path = [id(A), id(B)];
        let payload = r#"{"type":"user","data":{"x":[1,2]}}"#;
        write_envelope(
            &mut frame,
            &id(B),
            &id(A),
            &path,
            None,
            &Nonce::from_u64(9),
            payload,
        );
        let fast = Envelope::decode_canonical(frame.as_bytes(), &limits()).expect("canonical");
        let slow = Envelope::decode_general(&frame, &limits()).unwrap();
        assert!(same(&fast, &slow));
        // Buffer ids (after a JS relay), whitespace and escapes go the general way.
        let buffer = frame.replacen(&format!("\"{B}\""), &id(B).to_buffer_json(), 1);
        assert!(Envelope::decode_canonical(buffer.as_bytes(), &limits()).is_none());
        assert!(Envelope::decode(buffer.as_bytes(), &limits()).is_ok());
        let spaced = frame.replacen(r#""data":"#, r#""data": "#, 1);
        let fast = Envelope::decode_canonical(spaced.as_bytes(), &limits())
            .expect("leading space trimmed");
        assert_eq!(fast.payload_json(), payload);
    }

    proptest::proptest! {
        /// The vectorised bracket count only ever skips the precise scan, never changes its
        /// verdict: frames of brackets, quotes and escapes, across chunk boundaries.
        #[test]
        fn precheck_agrees_with_the_precise_scan(
            bytes in proptest::collection::vec(proptest::sample::select(
                b"[]{}\"\\ a".to_vec()), 0..1200),
            max in 0usize..200,
        ) {
            let limits = DecodeLimits { max_json_depth: max, ..limits() };
            let expected = if nests_deeper_than(&bytes, max) {
                Err(DecodeError::TooDeep)
            } else {
                Ok(())
            };
            proptest::prop_assert_eq!(precheck(&bytes, &limits), expected);
        }

        /// Whatever the bytes, the fast path never disagrees with serde: when it accepts a
        /// frame, serde accepts it with the same result.
        #[test]
        fn fast_path_agrees_with_serde(
            edits in proptest::collection::vec((0usize..400, proptest::sample::select(vec![
                b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'a', b'0', b'Z',
            ])), 0..4),
            cut in 0usize..8,
            kind in 0usize..4,
        ) {
            let payloads = [
                r#"{"type":"user","data":{"k":"v"}}"#,
                r#"{"type":"foundPeers","data":["aa26b030a144fa86a1a884edb33ac39ce52ddce3"]}"#,
                r#"{"type":"handshake-answer","data":{"ws":"ws://x:1","wrtc":true}}"#,
                r#"{"type":"signal","data":{"candidate":{"candidate":"c","sdpMLineIndex":0}}}"#,
            ];
            let mut frame = String::new();
            write_envelope(&mut frame, &id(B), &id(A), &[id(A)], None, &Nonce::from_u64(1234), payloads[kind]);
            let mut bytes = frame.into_bytes();
            for (pos, byte) in edits {
                let pos = pos % bytes.len();
                bytes[pos] = byte;
            }
            bytes.truncate(bytes.len().saturating_sub(cut));
            let text = String::from_utf8(bytes).unwrap();
            if let Some(fast) = Envelope::decode_canonical(text.as_bytes(), &limits()) {
                let slow = Envelope::decode_general(&text, &limits());
                proptest::prop_assert!(slow.is_ok(), "fast accepted, serde refused: {text}");
                proptest::prop_assert!(same(&fast, &slow.unwrap()), "different results: {text}");
            }
        }
    }
}
