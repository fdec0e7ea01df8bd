//! Checks shared by the fuzz targets (`fuzz/`) and the stable tests that
//! replay their corpora, so both exercise exactly the same property.
//!
//! `no_std` like the rest of the crate: messages are written into a fixed
//! buffer instead of a `String`.

use core::fmt::{self, Write as _};
use core::mem::size_of;

use crate::{DecodeError, Event, EventType, RawEvent};

/// Size of `struct fo_event`.
const RECORD: usize = size_of::<RawEvent>();

/// Any bytes as one ring-buffer record: [`Event::decode`] never panics.
///
/// - `Ok` only for exactly `RECORD` bytes with a known type (1..=3) and zero
///   padding, and writing the decoded fields back in `struct fo_event`'s
///   layout (native byte order, as the kernel writes them) gives back the
///   input, byte for byte.
/// - Otherwise the error is the first problem in the order the decoder
///   checks (size, type, padding), carries the offending values, and its
///   message is non-empty and names that problem and those values.
pub fn ring_record(data: &[u8]) {
    check_decoder(data, Event::decode);
}

/// A ring-buffer record decoder, as [`Event::decode`].
pub type Decoder = fn(&[u8]) -> Result<Event, DecodeError>;

/// [`ring_record`]'s check against any decoder, so tests can show that it
/// catches a wrong one.
pub fn check_decoder(data: &[u8], decode: Decoder) {
    let expected = expected_error(data);
    match decode(data) {
        Ok(event) => {
            assert_eq!(expected, None, "decoded a record that is not one");
            assert_eq!(data.len(), RECORD);
            let kind = event.raw.kind_of_event;
            assert!((1..=3).contains(&kind), "decoded type {kind}");
            assert_eq!(event.what as u32, kind, "type field and EventType differ");
            assert_eq!(event.raw._pad, 0, "decoded non-zero padding");
            assert_eq!(
                &encode(&event.raw)[..],
                data,
                "re-encoding changes the bytes"
            );
        }
        Err(error) => {
            assert_eq!(Some(error), expected, "wrong error for the record");
            check_message(&error);
        }
    }
}

/// The error `Event::decode` must return for `data`, worked out from the
/// header's layout independently of the decoder; `None` for a valid record.
fn expected_error(data: &[u8]) -> Option<DecodeError> {
    let Ok(record) = <&[u8; RECORD]>::try_from(data) else {
        return Some(DecodeError::Size {
            got: data.len(),
            expected: RECORD,
        });
    };
    let field = |at: usize| {
        u32::from_ne_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]])
    };
    let kind = field(0);
    if !matches!(kind, 1..=3) {
        return Some(DecodeError::Type { value: kind });
    }
    if field(44) != 0 {
        return Some(DecodeError::Padding);
    }
    None
}

/// `raw` in `struct fo_event`'s layout, native byte order.
fn encode(raw: &RawEvent) -> [u8; RECORD] {
    let mut bytes = [0u8; RECORD];
    let mut put = |at: usize, field: &[u8]| bytes[at..at + field.len()].copy_from_slice(field);
    put(0, &raw.kind_of_event.to_ne_bytes());
    put(4, &raw.tid.to_ne_bytes());
    put(8, &raw.command.to_ne_bytes());
    put(16, &raw.duration_ns.to_ne_bytes());
    put(24, &raw.user_data.to_ne_bytes());
    put(32, &raw.kind.to_ne_bytes());
    put(36, &raw.res.to_ne_bytes());
    put(40, &raw.opcode.to_ne_bytes());
    put(44, &raw._pad.to_ne_bytes());
    bytes
}

/// The message is non-empty and names the problem and its values.
fn check_message(error: &DecodeError) {
    let message = Text::of(format_args!("{error}"));
    assert!(!message.as_str().is_empty(), "empty message for {error:?}");
    assert!(
        message.as_str().contains("ring-buffer record"),
        "{error:?}: message does not name the record: {}",
        message.as_str()
    );
    match *error {
        DecodeError::Size { got, expected } => {
            assert_contains(&message, Text::of(format_args!("of {got} bytes")).as_str());
            assert_contains(
                &message,
                Text::of(format_args!("expected {expected}")).as_str(),
            );
        }
        DecodeError::Type { value } => {
            assert_contains(
                &message,
                Text::of(format_args!("unknown type {value}")).as_str(),
            );
        }
        DecodeError::Padding => assert_contains(&message, "padding"),
    }
}

fn assert_contains(message: &Text, needle: &str) {
    assert!(
        message.as_str().contains(needle),
        "message {:?} does not say {needle:?}",
        message.as_str()
    );
}

/// A formatted message in a fixed buffer. Every message of [`DecodeError`]
/// fits; one that would not fails the check rather than being cut.
struct Text {
    buffer: [u8; 256],
    len: usize,
}

impl Text {
    fn of(arguments: fmt::Arguments<'_>) -> Text {
        let mut text = Text {
            buffer: [0; 256],
            len: 0,
        };
        assert!(
            text.write_fmt(arguments).is_ok(),
            "message longer than {} bytes",
            text.buffer.len()
        );
        text
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever appended, so the prefix is UTF-8.
        core::str::from_utf8(&self.buffer[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let target = self.buffer.get_mut(self.len..end).ok_or(fmt::Error)?;
        target.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Kept in step with [`EventType`]: the check above hard-codes 1..=3.
const _: () = {
    assert!(EventType::SlowIo as u32 == 1);
    assert!(EventType::FailedIo as u32 == 2);
    assert!(EventType::BlockedPoll as u32 == 3);
};
