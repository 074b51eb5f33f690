//! Files and batches: `[FHS] { [BHS] { MSH ... } [BTS] } [FTS]`.
//!
//! A batch is checked for structure (envelope segments in their places, no segment
//! outside a message) and then offers two views: each message on its own, and the whole
//! input as one flat list of segments, so `BTS[2]-1` or `MSH[3]-10` can be read directly.

use crate::error::{BatchError, ParseError};
use crate::message::{Index, Message};

/// A file or batch of messages.
#[derive(Clone)]
pub struct Batch<'a> {
    flat: Message<'a>,
    messages: Vec<(usize, usize)>,
}

impl<'a> Batch<'a> {
    /// Parses and checks a batch; a lone message (or several with no envelope) is a batch too.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let flat = Message::from_index(bytes, Index::build_batch(bytes)?);
        let messages = structure(&flat)?;
        Ok(Batch { flat, messages })
    }

    /// Every segment of the input, envelope included, as one message-like view.
    pub fn flat(&self) -> &Message<'a> {
        &self.flat
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// No messages at all (an envelope only).
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The raw bytes of each message.
    pub fn raw_messages(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.messages
            .iter()
            .map(|&(a, b)| &self.flat.as_bytes()[a..b])
    }

    /// Each message, parsed on its own (a message can fail while its neighbours parse).
    pub fn messages(&self) -> impl Iterator<Item = Result<Message<'_>, ParseError>> + '_ {
        self.raw_messages().map(Message::parse)
    }
}

/// Checks the envelope and returns each message's byte range.
fn structure(flat: &Message<'_>) -> Result<Vec<(usize, usize)>, BatchError> {
    let mut messages = Vec::new();
    let mut open: Option<usize> = None;
    let mut in_batch = false;
    let mut seen_fhs = false;
    let bad = |segment: usize, reason| {
        Err(BatchError::Structure {
            segment: segment + 1,
            reason,
        })
    };
    for seg in flat.segments() {
        let i = seg.position();
        let start = flat.segment_span(i).0;
        let name = seg.name();
        match name {
            "FHS" if seen_fhs => return bad(i, "a second FHS: a file has one header"),
            "FHS" if i > 0 => return bad(i, "FHS must be the first segment of a file"),
            "FHS" => seen_fhs = true,
            "BHS" if in_batch => {
                return bad(i, "a second BHS opens before BTS closed the first batch");
            }
            "BHS" => in_batch = true,
            "BTS" => in_batch = false,
            _ => {}
        }
        if matches!(name, "MSH" | "FHS" | "BHS" | "BTS" | "FTS") {
            // A header or envelope segment ends the open message; only MSH opens one.
            if let Some(from) = open.take() {
                messages.push((from, start));
            }
            if name == "MSH" {
                open = Some(start);
            }
        } else if open.is_none() {
            return bad(i, "a segment comes before any MSH");
        }
    }
    if let Some(from) = open {
        messages.push((from, flat.as_bytes().len()));
    }
    Ok(messages)
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("messages", &self.messages.len())
            .field("len", &self.flat.as_bytes().len())
            .finish()
    }
}
