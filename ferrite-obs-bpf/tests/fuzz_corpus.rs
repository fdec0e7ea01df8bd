//! The `ring_record` fuzz corpus (`fuzz/corpus/ring_record/`) replayed on
//! stable, so every test run checks what the fuzzer found, nightly or not.

#[path = "../../ferrite-obs/tests/support/corpus.rs"]
mod corpus;

use corpus::replay;

#[test]
fn ring_record_corpus() {
    replay("ring_record", ferrite_obs_bpf::fuzzing::ring_record);
}

/// The check catches wrong decoders, so the replay above can fail: one that
/// ignores the padding, one that swaps two fields, one that blames the wrong
/// problem.
#[test]
fn check_rejects_wrong_decoders() {
    use ferrite_obs_bpf::fuzzing::{Decoder, check_decoder};
    use ferrite_obs_bpf::{DecodeError, Event, EventType, RawEvent};

    fn lax_padding(bytes: &[u8]) -> Result<Event, DecodeError> {
        match Event::decode(bytes) {
            Err(DecodeError::Padding) => Ok(Event {
                what: EventType::SlowIo,
                raw: RawEvent {
                    kind_of_event: 1,
                    ..RawEvent::default()
                },
            }),
            other => other,
        }
    }
    fn swapped_fields(bytes: &[u8]) -> Result<Event, DecodeError> {
        Event::decode(bytes).map(|mut event| {
            std::mem::swap(&mut event.raw.command, &mut event.raw.user_data);
            event
        })
    }
    fn wrong_error(bytes: &[u8]) -> Result<Event, DecodeError> {
        Event::decode(bytes).map_err(|_| DecodeError::Padding)
    }

    let mut record = [0u8; 48];
    record[..4].copy_from_slice(&1u32.to_ne_bytes());
    record[8..16].copy_from_slice(&7u64.to_ne_bytes());
    check_decoder(&record, Event::decode);
    let mut padded = record;
    padded[44] = 1;
    check_decoder(&padded, Event::decode);
    check_decoder(&record[..47], Event::decode);

    let cases: [(&str, Decoder, &[u8]); 3] = [
        ("lax padding", lax_padding, &padded),
        ("swapped fields", swapped_fields, &record),
        ("wrong error", wrong_error, &record[..47]),
    ];
    for (name, decoder, input) in cases {
        let caught = std::panic::catch_unwind(|| check_decoder(input, decoder)).is_err();
        assert!(caught, "the check passes a decoder with {name}");
    }
}
