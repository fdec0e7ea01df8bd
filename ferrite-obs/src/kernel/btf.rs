//! The kernel's tracepoint prototypes, read from its BTF.
//!
//! Every tracepoint has a `btf_trace_<name>` typedef in the kernel's BTF: a
//! pointer to the prototype of its probe, `(void *__data, <arguments>)`. A
//! BTF tracepoint program gets exactly those arguments, so which program
//! variant fits a kernel is decided by reading them. aya parses BTF too but
//! keeps its types private; this is the small part of the format
//! (`Documentation/bpf/btf.rst`) that finding those prototypes needs.

use std::collections::HashMap;

/// An argument of a tracepoint, as a program sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Arg {
    /// A pointer to a struct or union of this name: readable directly.
    Struct(String),
    /// An untyped (`void *`) or otherwise opaque pointer: a number to the
    /// verifier.
    Opaque,
    /// An integer, enum or bool.
    Scalar,
}

impl std::fmt::Display for Arg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arg::Struct(name) => write!(f, "struct {name} *"),
            Arg::Opaque => f.write_str("void *"),
            Arg::Scalar => f.write_str("scalar"),
        }
    }
}

/// The arguments of a tracepoint's probe (without the leading `__data`),
/// written as a program reads them, for messages.
pub(super) fn describe(args: &[Arg]) -> String {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    format!("({})", args.join(", "))
}

/// Why a BTF blob could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum BtfError {
    #[error("BTF too short: {len} bytes, the header alone is 24")]
    Short { len: usize },
    #[error("no BTF magic (0xeb9f) at the start, found {found:#06x}")]
    Magic { found: u16 },
    #[error("the BTF header's sections run past its {len} bytes")]
    Sections { len: usize },
    #[error("BTF type {id} has an unknown kind {kind}")]
    Kind { id: u32, kind: u32 },
    #[error("BTF type {id} runs past the type section")]
    Truncated { id: u32 },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One type: its kind, name, `size`/`type` word and where its trailing
/// data starts.
#[derive(Clone, Copy)]
struct Type {
    kind: u32,
    name: u32,
    size_or_type: u32,
    vlen: u32,
    data: usize,
}

/// The tracepoint prototypes of one kernel's BTF.
pub(super) struct Tracepoints {
    /// Tracepoint name -> its arguments (`None`: the typedef does not lead
    /// to a prototype).
    by_name: HashMap<String, Option<Vec<Arg>>>,
}

impl Tracepoints {
    /// Reads the `btf_trace_*` prototypes of `data` (a whole BTF blob, in
    /// this machine's byte order).
    pub(super) fn parse(data: &[u8]) -> Result<Tracepoints, BtfError> {
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
        };
        if data.len() < 24 {
            return Err(BtfError::Short { len: data.len() });
        }
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic != 0xeb9f {
            return Err(BtfError::Magic { found: magic });
        }
        let sections = BtfError::Sections { len: data.len() };
        let header = word(4).ok_or(BtfError::Short { len: data.len() })? as usize;
        let [type_off, type_len, str_off, str_len] =
            [8, 12, 16, 20].map(|at| word(at).unwrap_or(u32::MAX) as usize);
        let types_at = header.checked_add(type_off).ok_or(sections)?;
        let types_end = types_at
            .checked_add(type_len)
            .filter(|end| *end <= data.len())
            .ok_or(BtfError::Sections { len: data.len() })?;
        let strings_at = header
            .checked_add(str_off)
            .ok_or(BtfError::Sections { len: data.len() })?;
        let strings = strings_at
            .checked_add(str_len)
            .and_then(|end| data.get(strings_at..end))
            .ok_or(BtfError::Sections { len: data.len() })?;
        let name = |offset: u32| -> &str {
            let rest = strings.get(offset as usize..).unwrap_or_default();
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            std::str::from_utf8(&rest[..end]).unwrap_or("")
        };

        // Type ids start at 1; id 0 is `void`.
        let mut types: Vec<Type> = vec![Type {
            kind: 0,
            name: 0,
            size_or_type: 0,
            vlen: 0,
            data: 0,
        }];
        let mut at = types_at;
        while at < types_end {
            let id = types.len() as u32;
            let truncated = BtfError::Truncated { id };
            let (Some(name), Some(info), Some(size_or_type)) =
                (word(at), word(at + 4), word(at + 8))
            else {
                return Err(truncated);
            };
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                _ => return Err(BtfError::Kind { id, kind }),
            };
            types.push(Type {
                kind,
                name,
                size_or_type,
                vlen,
                data: at + 12,
            });
            at += 12 + extra;
            if at > types_end {
                return Err(truncated);
            }
        }

        // Through typedefs and qualifiers to the type underneath.
        let resolve = |mut id: u32| -> Option<Type> {
            for _ in 0..32 {
                let ty = *types.get(id as usize)?;
                match ty.kind {
                    KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                        id = ty.size_or_type
                    }
                    _ => return Some(ty),
                }
            }
            None
        };
        let arg = |id: u32| -> Arg {
            match resolve(id) {
                Some(ty) if ty.kind == KIND_PTR => match resolve(ty.size_or_type) {
                    Some(to) if matches!(to.kind, KIND_STRUCT | KIND_UNION) => {
                        Arg::Struct(name(to.name).to_owned())
                    }
                    _ => Arg::Opaque,
                },
                _ => Arg::Scalar,
            }
        };
        let mut by_name = HashMap::new();
        for ty in &types {
            if ty.kind != KIND_TYPEDEF {
                continue;
            }
            let Some(tracepoint) = name(ty.name).strip_prefix("btf_trace_") else {
                continue;
            };
            let proto = resolve(ty.size_or_type)
                .filter(|p| p.kind == KIND_PTR)
                .and_then(|p| resolve(p.size_or_type))
                .filter(|p| p.kind == KIND_FUNC_PROTO);
            let args = proto.map(|proto| {
                (0..proto.vlen as usize)
                    .skip(1) // `void *__data`
                    .map(|i| arg(word(proto.data + i * 8 + 4).unwrap_or(0)))
                    .collect()
            });
            by_name.insert(tracepoint.to_owned(), args);
        }
        Ok(Tracepoints { by_name })
    }

    /// Tracepoints with these arguments, as a kernel's BTF would give them.
    #[cfg(test)]
    pub(super) fn from_args(tracepoints: &[(&str, &[Arg])]) -> Tracepoints {
        Tracepoints {
            by_name: tracepoints
                .iter()
                .map(|(name, args)| ((*name).to_owned(), Some(args.to_vec())))
                .collect(),
        }
    }

    /// Whether the kernel has tracepoint `name`.
    pub(super) fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The arguments of tracepoint `name`, if the kernel has it.
    pub(super) fn args(&self, name: &str) -> Option<&[Arg]> {
        self.by_name.get(name)?.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of `types` (each a kind, a name offset, the size/type
    /// word, a vlen and its trailing words) and `strings`.
    fn blob(types: &[(u32, u32, u32, u32, &[u32])], strings: &[u8]) -> Vec<u8> {
        let mut section = Vec::new();
        for (kind, name, size_or_type, vlen, extra) in types {
            for w in [*name, (kind << 24) | vlen, *size_or_type]
                .iter()
                .chain(extra.iter())
            {
                section.extend_from_slice(&w.to_ne_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24,
            0,
            section.len() as u32,
            section.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&u32::to_ne_bytes(w));
        }
        out.extend_from_slice(&section);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn a_tracepoint_prototype_reads_as_its_arguments_without_data() {
        // Strings: 1 "int", 5 "io_kiocb", 14 "btf_trace_io_uring_submit_sqe".
        let strings = b"\0int\0io_kiocb\0btf_trace_io_uring_submit_sqe\0";
        let types: &[(u32, u32, u32, u32, &[u32])] = &[
            (KIND_INT, 1, 4, 0, &[32]),                      // 1: int
            (KIND_STRUCT, 5, 8, 0, &[]),                     // 2: struct io_kiocb
            (KIND_PTR, 0, 2, 0, &[]),                        // 3: struct io_kiocb *
            (KIND_PTR, 0, 0, 0, &[]),                        // 4: void *
            (KIND_CONST, 0, 1, 0, &[]),                      // 5: const int
            (KIND_FUNC_PROTO, 0, 0, 3, &[0, 4, 0, 3, 0, 5]), // 6: (void *, struct io_kiocb *, const int)
            (KIND_PTR, 0, 6, 0, &[]),                        // 7
            (KIND_TYPEDEF, 14, 7, 0, &[]),                   // 8: btf_trace_io_uring_submit_sqe
        ];
        let tracepoints = Tracepoints::parse(&blob(types, strings)).unwrap();
        assert!(tracepoints.has("io_uring_submit_sqe"));
        assert!(!tracepoints.has("io_uring_submit_req"));
        let args = tracepoints.args("io_uring_submit_sqe").unwrap();
        assert_eq!(args, [Arg::Struct("io_kiocb".into()), Arg::Scalar]);
        assert_eq!(describe(args), "(struct io_kiocb *, scalar)");
    }

    #[test]
    fn malformed_btf_is_an_error_naming_what_is_wrong() {
        let error = |data: &[u8]| Tracepoints::parse(data).err().unwrap().to_string();
        assert_eq!(error(&[]), "BTF too short: 0 bytes, the header alone is 24");
        assert!(error(&[0u8; 24]).starts_with("no BTF magic"));
        let mut bad = blob(&[(KIND_INT, 0, 4, 0, &[32])], b"\0");
        bad[31] = 30; // the kind byte of type 1's info word
        assert_eq!(error(&bad), "BTF type 1 has an unknown kind 30");
    }

    #[test]
    fn the_running_kernels_btf_has_the_scheduler_tracepoint() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("SKIPPED: no /sys/kernel/btf/vmlinux on this machine");
            return;
        };
        let tracepoints = Tracepoints::parse(&data).unwrap();
        let args = tracepoints.args("sched_switch").unwrap();
        assert_eq!(args[1], Arg::Struct("task_struct".into()), "{args:?}");
        assert_eq!(args[0], Arg::Scalar, "preempt: {args:?}");
    }
}
