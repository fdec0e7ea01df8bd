//! The Rust mirrors have the C header's layout: every struct's size and every
//! field's offset, as the host's C compiler lays out `bpf/ferrite_obs.h`
//! (the BPF target uses the same rules for these naturally aligned types),
//! and every constant.

use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use ferrite_obs_bpf::*;

/// `(C expression, Rust value)` pairs for every size, offset and constant.
fn facts() -> Vec<(String, usize)> {
    let mut facts = Vec::new();
    macro_rules! layout {
        ($($c:ident = $rust:ident { $($cf:ident = $rf:ident),* $(,)? })*) => {$(
            facts.push((format!("sizeof(struct {})", stringify!($c)), size_of::<$rust>()));
            $(facts.push((
                format!("offsetof(struct {}, {})", stringify!($c), stringify!($cf)),
                offset_of!($rust, $rf),
            ));)*
        )*};
    }
    layout! {
        fo_slot = Slot { user_data = user_data, command = command, seq = seq, kind = kind, generation = generation }
        fo_current = Current { command = command, kind = kind }
        fo_thread = ThreadRegistration { table = table, current = current, last_seq = last_seq, switched = switched }
        fo_registration = Registration { thread = thread, tid = tid, _pad = _pad }
        fo_inflight = Inflight {
            req = req, command = command, submit_ns = submit_ns, ctx = ctx, kind = kind, tid = tid,
            opcode = opcode, punted = punted, _pad = _pad,
        }
        fo_io_key = IoKey { kind = kind, opcode = opcode }
        fo_io_stats = IoStats {
            ops = ops, errors = errors, bytes = bytes, punts = punts,
            latency_ns = latency_ns, buckets = buckets,
        }
        fo_io_entry = IoEntry { tag = tag, stats = stats }
        fo_io_used = IoUsed { bits = bits }
        fo_offcpu = OffCpu {
            blocked_ns = blocked_ns, preempted_ns = preempted_ns, switches = switches,
            long_blocks = long_blocks,
        }
        fo_command = CommandFigures {
            command = command, io_ops = io_ops, io_ns = io_ns, blocked_ns = blocked_ns, preempted_ns = preempted_ns,
        }
        fo_switch = SwitchOut { at_ns = at_ns, command = command, kind = kind, blocked = blocked }
        fo_event = RawEvent {
            type = kind_of_event, tid = tid, command = command, duration_ns = duration_ns,
            user_data = user_data, kind = kind, res = res, opcode = opcode, _pad = _pad,
        }
    }
    facts.push(("FO_SLOT_BITS".into(), SLOT_BITS as usize));
    facts.push(("FO_SLOTS".into(), SLOTS));
    facts.push(("FO_INFLIGHT_SHIFT".into(), INFLIGHT_SHIFT as usize));
    facts.push(("FO_REGISTRATION_BITS".into(), REGISTRATION_BITS as usize));
    facts.push(("FO_REGISTRATIONS".into(), REGISTRATIONS));
    facts.push(("FO_COMMAND_BITS".into(), COMMAND_BITS as usize));
    facts.push(("FO_COMMAND_SLOTS".into(), COMMAND_SLOTS));
    facts.push(("FO_LOG2_BUCKETS".into(), LOG2_BUCKETS));
    facts.push(("FO_IO_TABLE_BITS".into(), IO_TABLE_BITS as usize));
    facts.push(("FO_IO_TABLE".into(), IO_TABLE));
    // The entry tag, encoded by the programs and decoded by the reader.
    for (kind, opcode) in [(0u32, 0u32), (7, 22), (u32::MAX, 255)] {
        let key = IoKey { kind, opcode };
        let tag = key.tag();
        let decoded = IoEntry {
            tag,
            ..IoEntry::default()
        }
        .key();
        assert_eq!(decoded, Some(key), "a tag decodes to its key");
        facts.push((format!("fo_io_tag({kind}u, {opcode})"), tag as usize));
    }
    assert_eq!(IoEntry::default().key(), None, "a free entry has no key");
    facts.push(("FO_C_COUNT".into(), COUNTERS));
    for counter in Counter::ALL {
        let name = match counter {
            Counter::Submitted => "FO_C_SUBMITTED",
            Counter::Attributed => "FO_C_ATTRIBUTED",
            Counter::Unattributed => "FO_C_UNATTRIBUTED",
            Counter::SlotMismatch => "FO_C_SLOT_MISMATCH",
            Counter::Completed => "FO_C_COMPLETED",
            Counter::Punted => "FO_C_PUNTED",
            Counter::Failed => "FO_C_FAILED",
            Counter::ShortWrites => "FO_C_SHORT_WRITES",
            Counter::CqeOverflows => "FO_C_CQE_OVERFLOWS",
            Counter::EventsDropped => "FO_C_EVENTS_DROPPED",
            Counter::ReadFaults => "FO_C_READ_FAULTS",
            Counter::InflightFull => "FO_C_INFLIGHT_FULL",
            Counter::StatsFull => "FO_C_STATS_FULL",
            Counter::SwitchOuts => "FO_C_SWITCH_OUTS",
            Counter::SwitchIns => "FO_C_SWITCH_INS",
            Counter::StaleSlots => "FO_C_STALE_SLOTS",
            Counter::CommandMisses => "FO_C_COMMAND_MISSES",
        };
        facts.push((name.into(), counter as usize));
    }
    for (name, value) in [
        ("FO_EV_SLOW_IO", EventType::SlowIo),
        ("FO_EV_FAILED_IO", EventType::FailedIo),
        ("FO_EV_BLOCKED_POLL", EventType::BlockedPoll),
    ] {
        facts.push((name.into(), value as usize));
    }
    facts
}

/// The C compiler to check with: `$CC`, else `cc`.
fn c_compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_owned())
}

#[test]
fn rust_mirrors_match_the_c_header() {
    let facts = facts();
    let mut program = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"ferrite_obs.h\"\nint main(void) {\n",
    );
    for (expression, _) in &facts {
        writeln!(program, "    printf(\"%zu\\n\", (size_t)({expression}));").unwrap();
    }
    program.push_str("    return 0;\n}\n");

    let dir = std::env::temp_dir().join(format!("ferrite-obs-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("layout.c");
    let binary = dir.join("layout");
    std::fs::write(&source, program).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let cc = c_compiler();
    let compiled = Command::new(&cc)
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` ($CC): {e}"));
    assert!(
        compiled.status.success(),
        "{cc} failed on the header:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let output = Command::new(&binary).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let printed: Vec<usize> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(printed.len(), facts.len());
    let wrong: Vec<String> = facts
        .iter()
        .zip(&printed)
        .filter(|((_, rust), c)| rust != *c)
        .map(|((expression, rust), c)| format!("{expression}: C {c}, Rust {rust}"))
        .collect();
    assert!(wrong.is_empty(), "layout differs:\n{}", wrong.join("\n"));
}

#[test]
fn events_decode_and_malformed_records_are_named() {
    let raw = RawEvent {
        kind_of_event: 2,
        tid: 7,
        command: 42,
        duration_ns: 1_000,
        user_data: 9,
        kind: 3,
        res: -5,
        opcode: 22,
        _pad: 0,
    };
    // SAFETY: RawEvent is repr(C) with integer fields and no implicit padding.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&raw as *const RawEvent).cast::<u8>(),
            size_of::<RawEvent>(),
        )
    };
    let event = Event::decode(bytes).unwrap();
    assert_eq!((event.what, event.raw), (EventType::FailedIo, raw));

    assert_eq!(
        Event::decode(&bytes[..40]),
        Err(DecodeError::Size {
            got: 40,
            expected: 48
        })
    );
    let mut bad = bytes.to_vec();
    bad[0] = 9;
    let error = Event::decode(&bad).unwrap_err();
    assert_eq!(error, DecodeError::Type { value: 9 });
    assert!(error.to_string().contains("unknown type 9"), "{error}");
    let mut bad = bytes.to_vec();
    bad[44] = 1;
    assert_eq!(Event::decode(&bad), Err(DecodeError::Padding));
}
