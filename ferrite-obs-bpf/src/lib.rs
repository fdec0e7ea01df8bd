//! eBPF programs of ferrite-obs and the layouts they share with userspace.
//!
//! The programs are C, under `bpf/`, compiled by clang in `build.rs` when the
//! `programs` feature is on (the default) and embedded: [`object`] returns the
//! ELF object that the runtime loads with aya. `bpf/ferrite_obs.h` is the one
//! source of truth for every map key, map value and ring-buffer record; the
//! `#[repr(C)]` types here mirror it, and a test compiles the header with the
//! host's C compiler to check every size and field offset.
//!
//! | feature    | what it adds                                         | needs        |
//! |------------|------------------------------------------------------|--------------|
//! | `programs` | the compiled object, [`object`]                      | clang, libbpf headers (Debian: `clang-19 libbpf-dev`) |
//! | `aya`      | `aya::Pod` for the types, to read maps with aya      | —            |

#![no_std]

#[doc(hidden)]
pub mod fuzzing;
mod layout;
#[doc(hidden)]
pub mod model;
mod opcode;

pub use layout::*;
pub use opcode::opcode_name;

/// The compiled eBPF object (ELF, BTF included), aligned for aya to parse.
#[cfg(feature = "programs")]
pub fn object() -> &'static [u8] {
    #[repr(C, align(32))]
    struct Aligned<T: ?Sized>(T);
    static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
        env!("OUT_DIR"),
        "/ferrite_obs.bpf.o"
    )));
    &OBJECT.0
}
