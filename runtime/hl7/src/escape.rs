//! HL7 escape sequences: decoding raw values to text and encoding text back.
//!
//! | sequence        | decoded as                                                    |
//! |-----------------|---------------------------------------------------------------|
//! | `\F\` `\S\` `\R\` `\T\` `\E\` `\P\` | the field, component, repetition, subcomponent, escape or truncation character |
//! | `\Xhh..\`       | those bytes, read in the message's character set              |
//! | `\.br\`, `\H\`, `\N\`, `\.sp\`, ... | kept as written (formatting commands)                 |
//! | `\Cxxyy\`, `\Mxxyyzz\`, `\Zxxx\` | kept as written (charset switches, local escapes)       |
//! | anything else   | kept as written: senders often put a bare `\` in free text     |
//!
//! Encoding escapes every delimiter and turns control characters other than tab (CR, LF,
//! NUL, MLLP's 0x0B and 0x1C, ...) into `\Xhh\` (`\X0D\` for CR), but writes the
//! sequences decoding keeps (formatting, charset switches, `\Z..\`, and `\Xhh..\`) back
//! unchanged, so decoding then encoding a value gives back what the sender wrote. A
//! backslash that starts no sequence (the "anything else" row) is text, and is written
//! as `\E\`.

use std::borrow::Cow;

use crate::{charset::Charset, delim::Delimiters};

/// Decodes one raw value (a leaf, or any slice with its delimiters left as they are).
pub(crate) fn decode<'a>(raw: &'a [u8], delims: &Delimiters, charset: Charset) -> Cow<'a, str> {
    let Some(esc) = delims.escape.filter(|e| memchr::memchr(*e, raw).is_some()) else {
        return to_text(raw, charset);
    };
    match unescape(raw, esc, delims, true) {
        Some(bytes) => match charset.decode(&bytes) {
            Some(text) => Cow::Owned(text.into_owned()),
            // `\X..\` produced bytes that are not text in this charset: keep those escapes
            // as written rather than invent characters.
            None => match unescape(raw, esc, delims, false) {
                Some(bytes) => Cow::Owned(
                    charset
                        .decode(&bytes)
                        .map(Cow::into_owned)
                        .unwrap_or_default(),
                ),
                None => to_text(raw, charset),
            },
        },
        None => to_text(raw, charset),
    }
}

fn to_text(raw: &[u8], charset: Charset) -> Cow<'_, str> {
    // Parse validated the whole message in its charset, so this cannot fail; an empty
    // string is still better than a panic should that invariant ever break.
    charset.decode(raw).unwrap_or_default()
}

/// Resolves escape sequences to raw bytes of the message charset. `None` when there was
/// nothing to resolve.
fn unescape(raw: &[u8], esc: u8, delims: &Delimiters, hex: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    let mut changed = false;
    while let Some(start) = memchr::memchr(esc, rest) {
        out.extend_from_slice(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(len) = memchr::memchr(esc, after) else {
            // A lone escape character with no closing one: literal text.
            out.extend_from_slice(&rest[start..]);
            return changed.then_some(out);
        };
        let body = &after[..len];
        match resolve(body, delims, hex) {
            Some(Resolved::Byte(b)) => {
                out.push(b);
                changed = true;
            }
            Some(Resolved::Bytes(bytes)) => {
                out.extend_from_slice(&bytes);
                changed = true;
            }
            None if is_kept_sequence(body) || (!hex && is_hex_sequence(body)) => {
                out.push(esc);
                out.extend_from_slice(body);
                out.push(esc);
            }
            None => {
                // Not a sequence at all (a bare escape character in free text): its
                // "closing" character may open a real sequence, so consume only up to it.
                out.push(esc);
                out.extend_from_slice(body);
                rest = &after[len..];
                continue;
            }
        }
        rest = &after[len + 1..];
    }
    out.extend_from_slice(rest);
    changed.then_some(out)
}

enum Resolved {
    Byte(u8),
    Bytes(Vec<u8>),
}

fn resolve(body: &[u8], delims: &Delimiters, hex: bool) -> Option<Resolved> {
    match body {
        [letter] => delims.delimiter_for_letter(*letter).map(Resolved::Byte),
        [b'X', digits @ ..] if hex => decode_hex(digits).map(Resolved::Bytes),
        _ => None,
    }
}

fn decode_hex(digits: &[u8]) -> Option<Vec<u8>> {
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// Is `body` (the text between two escape characters) a sequence decoding keeps as
/// written: a formatting command, a charset switch or a local `\Z..\` escape?
fn is_kept_sequence(body: &[u8]) -> bool {
    is_formatting(body)
        || matches!(body, [b'Z', rest @ ..] if !rest.is_empty() && rest.iter().all(u8::is_ascii_alphanumeric))
}

/// Formatting commands and charset switches: with `\Z..\` and hex, the sequences encoding
/// writes back unescaped, so a value read and written again keeps its line breaks and
/// highlighting. Kept narrow on purpose: anything else a caller writes after a backslash
/// is text.
fn is_formatting(body: &[u8]) -> bool {
    const COMMANDS: [&[u8]; 8] = [b"br", b"sp", b"in", b"ti", b"sk", b"ce", b"fi", b"nf"];
    match body {
        [b'H'] | [b'N'] => true,
        [b'.', rest @ ..] if rest.len() >= 2 => {
            let (name, arg) = rest.split_at(2);
            COMMANDS.contains(&name)
                && arg
                    .iter()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_digit() || (i == 0 && matches!(c, b'+' | b'-')))
        }
        [b'C', hex @ ..] => hex.len() == 4 && hex.iter().all(u8::is_ascii_hexdigit),
        [b'M', hex @ ..] => matches!(hex.len(), 4 | 6) && hex.iter().all(u8::is_ascii_hexdigit),
        _ => false,
    }
}

/// `Xhh..`: a hex escape, kept whole when its bytes are not text in the charset.
fn is_hex_sequence(body: &[u8]) -> bool {
    matches!(body, [b'X', digits @ ..] if decode_hex(digits).is_some())
}

/// The error from [`encode_into`]: a character the message charset cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unrepresentable(pub char);

/// Appends `text` to `out` as raw bytes of the message: delimiters escaped, CR and LF as
/// hex escapes, formatting sequences kept, characters converted to the message charset.
pub(crate) fn encode_into(
    text: &str,
    delims: &Delimiters,
    charset: Charset,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let bytes = text.as_bytes();
    let mut plain_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let replacement: Option<Cow<'static, [u8]>> = if Some(c) == delims.escape {
            match kept_sequence_len(&bytes[i..], c) {
                Some(len) => {
                    // Keep `\.br\` and friends: flush the plain text and copy the sequence.
                    push_text(&text[plain_start..i], charset, out)?;
                    out.extend_from_slice(&bytes[i..i + len]);
                    i += len;
                    plain_start = i;
                    continue;
                }
                None => Some(escaped_delimiter(c, delims)),
            }
        } else if delims.escape_letter(c).is_some() {
            Some(escaped_delimiter(c, delims))
        } else if (c < 0x20 && c != b'\t') || c == 0x7F {
            // Control characters as `\Xhh\`: CR and LF would end the segment, and 0x0B and
            // 0x1C are MLLP's frame markers, so a raw one could never be sent. Tab stays.
            Some(Cow::Owned(hex_escape(c)))
        } else {
            None
        };
        if let Some(body) = replacement {
            push_text(&text[plain_start..i], charset, out)?;
            match delims.escape {
                Some(esc) => {
                    out.push(esc);
                    out.extend_from_slice(&body);
                    out.push(esc);
                }
                // Without an escape character a delimiter cannot be written at all; a space
                // keeps the structure intact, which is what receivers of such messages expect.
                None => out.push(b' '),
            }
            plain_start = i + 1;
        }
        i += 1;
    }
    push_text(&text[plain_start..], charset, out)
}

/// `X0D` for CR: the body of a `\Xhh\` escape for one byte.
fn hex_escape(c: u8) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    vec![b'X', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0x0F)]]
}

fn escaped_delimiter(c: u8, delims: &Delimiters) -> Cow<'static, [u8]> {
    match delims.escape_letter(c) {
        Some(letter) => Cow::Owned(vec![letter]),
        None => Cow::Borrowed(b""),
    }
}

fn kept_sequence_len(bytes: &[u8], esc: u8) -> Option<usize> {
    let close = memchr::memchr(esc, &bytes[1..])?;
    let body = &bytes[1..1 + close];
    (is_kept_sequence(body) || is_hex_sequence(body)).then_some(close + 2)
}

fn push_text(text: &str, charset: Charset, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    charset.encode_into(text, out).map_err(Unrepresentable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(raw: &str) -> String {
        decode(raw.as_bytes(), &Delimiters::default(), Charset::Utf8).into_owned()
    }

    fn enc(text: &str) -> String {
        let mut out = Vec::new();
        encode_into(text, &Delimiters::default(), Charset::Utf8, &mut out).expect("utf-8");
        String::from_utf8(out).expect("utf-8 out")
    }

    #[test]
    fn delimiter_escapes_decode() {
        assert_eq!(dec(r"a\F\b\S\c\R\d\T\e\E\f"), r"a|b^c~d&e\f");
    }

    #[test]
    fn hex_escapes_decode_in_the_message_charset() {
        assert_eq!(dec(r"line\X0D0A\next"), "line\r\nnext");
        assert_eq!(dec(r"caf\XC3A9\"), "café");
        let latin = decode(br"caf\XE9\", &Delimiters::default(), Charset::Latin1);
        assert_eq!(latin, "café");
        // A lone Latin-1 byte is not UTF-8: kept as written rather than garbled.
        assert_eq!(dec(r"caf\XE9\"), r"caf\XE9\");
    }

    #[test]
    fn formatting_and_unknown_sequences_are_kept() {
        assert_eq!(dec(r"one\.br\two"), r"one\.br\two");
        assert_eq!(dec(r"\H\bold\N\"), r"\H\bold\N\");
        assert_eq!(dec(r"\C2842\x\M2442\"), r"\C2842\x\M2442\");
        assert_eq!(dec(r"C:\temp\file"), r"C:\temp\file");
        assert_eq!(dec(r"trailing\"), r"trailing\");
        assert_eq!(dec(r"\Xzz\"), r"\Xzz\");
    }

    #[test]
    fn encode_escapes_delimiters_and_line_breaks() {
        assert_eq!(enc("a|b^c~d&e\\f"), r"a\F\b\S\c\R\d\T\e\E\f");
        assert_eq!(enc("x\r\ny"), r"x\X0D\\X0A\y");
    }

    #[test]
    fn encode_escapes_control_characters_but_not_tab() {
        // 0x1C and 0x0B are MLLP's frame markers: raw, the message could not be sent.
        assert_eq!(enc("a\x1cb\x0bc"), r"a\X1C\b\X0B\c");
        assert_eq!(enc("nul\0del\x7f"), r"nul\X00\del\X7F\");
        assert_eq!(enc("col1\tcol2"), "col1\tcol2");
        // And they decode back to the same bytes.
        assert_eq!(dec(&enc("a\x1cb\0c")), "a\x1cb\0c");
    }

    #[test]
    fn encode_keeps_formatting_sequences() {
        for raw in [
            r"one\.br\two",
            r"\H\bold\N\",
            r"\.sp2\x",
            r"\.in-4\x",
            r"\C2842\x",
        ] {
            assert_eq!(enc(&dec(raw)), raw, "{raw}");
        }
    }

    #[test]
    fn encode_escapes_backslashes_that_only_look_like_sequences() {
        assert_eq!(enc(r"\.xx\"), r"\E\.xx\E\");
        assert_eq!(enc(r"a\Q\b"), r"a\E\Q\E\b");
        assert_eq!(dec(&enc(r"a\Q\b")), r"a\Q\b");
        // What decoding keeps as a sequence (a local `\Z..\`, hex that is not text in
        // the charset) is written back as one, so an edited value keeps its meaning; a
        // path that happens to look like one round-trips all the same.
        assert_eq!(enc(r"C:\Zeta\f"), r"C:\Zeta\f");
        assert_eq!(dec(&enc(r"C:\Zeta\f")), r"C:\Zeta\f");
    }

    #[test]
    fn kept_local_and_hex_sequences_are_written_back_as_sequences() {
        for raw in [r"SMITH \Z12\JO", r"caf\XE9\ x", r"\XE9\\F\"] {
            let once = enc(&dec(raw));
            assert_eq!(dec(&once), dec(raw), "{raw}");
            assert!(!once.contains(r"\E\"), "{raw} -> {once}");
        }
    }

    #[test]
    fn undecodable_hex_is_kept_whole_and_later_escapes_still_decode() {
        assert_eq!(dec(r"\XE9\\F\"), r"\XE9\|");
    }

    #[test]
    fn decode_then_encode_is_identity_for_escaped_delimiters() {
        for raw in [r"a\F\b", r"\E\\E\", r"x\S\y\T\z", r"plain"] {
            assert_eq!(enc(&dec(raw)), raw, "{raw}");
        }
    }

    #[test]
    fn latin1_refuses_what_it_cannot_hold() {
        let mut out = Vec::new();
        let err = encode_into("日本", &Delimiters::default(), Charset::Latin1, &mut out);
        assert_eq!(err, Err(Unrepresentable('日')));
    }
}
