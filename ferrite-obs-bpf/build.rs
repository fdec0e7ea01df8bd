//! Compiles the eBPF programs under `bpf/` with clang into `$OUT_DIR`, where
//! `src/lib.rs` embeds them. Only with the `programs` feature: without it the
//! crate holds just the layout types and needs no clang.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs, each compiled to `$OUT_DIR/<name>.bpf.o`.
const PROGRAMS: &[&str] = &["ferrite_obs"];
/// Headers the programs include from `bpf/`.
const HEADERS: &[&str] = &["ferrite_obs.h"];

const PACKAGES: &str = "clang-19 libbpf-dev linux-libc-dev";

fn main() {
    println!("cargo::rerun-if-env-changed=CLANG");
    if env::var_os("CARGO_FEATURE_PROGRAMS").is_none() {
        return;
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let bpf = manifest.join("bpf");
    for header in HEADERS {
        println!("cargo::rerun-if-changed={}", bpf.join(header).display());
    }
    let clang = find_clang();
    for program in PROGRAMS {
        let source = bpf.join(format!("{program}.bpf.c"));
        println!("cargo::rerun-if-changed={}", source.display());
        compile(&clang, &bpf, &source, &out.join(format!("{program}.bpf.o")));
    }
}

/// `$CLANG`, else the first of `clang-19`, `clang` that runs.
fn find_clang() -> String {
    if let Some(clang) = env::var_os("CLANG") {
        return clang.to_string_lossy().into_owned();
    }
    for candidate in ["clang-19", "clang"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate.to_owned();
        }
    }
    fail(&format!(
        "no clang found (tried $CLANG, clang-19, clang). The eBPF programs are C compiled by \
         clang: install it (Debian: `apt-get install {PACKAGES}`), point $CLANG at one, or build \
         without eBPF (`default-features = false` on ferrite-obs, or without the `programs` \
         feature of ferrite-obs-bpf)"
    ))
}

fn compile(clang: &str, include: &Path, source: &Path, object: &Path) {
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => ("x86", "x86_64-linux-gnu"),
        Ok("aarch64") => ("arm64", "aarch64-linux-gnu"),
        Ok(other) => fail(&format!(
            "eBPF programs are built for x86_64 and aarch64 only, not {other}: build without \
             the `programs` feature"
        )),
        Err(_) => fail("CARGO_CFG_TARGET_ARCH is not set"),
    };
    let output = Command::new(clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{}", arch.0))
        .arg(format!("-I/usr/include/{}", arch.1))
        .arg("-I")
        .arg(include)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .output()
        .unwrap_or_else(|e| fail(&format!("running {clang}: {e}")));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("file not found") {
            format!(
                "\nA header is missing: install {PACKAGES} (Debian: `apt-get install {PACKAGES}`)."
            )
        } else {
            String::new()
        };
        fail(&format!(
            "{clang} failed on {}:\n{stderr}{hint}",
            source.display()
        ));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: ferrite-obs-bpf: {message}");
    std::process::exit(1);
}
