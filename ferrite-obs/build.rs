//! Names the platform choices once, as cfgs every module tests:
//!
//! - `ferrite_kernel`: the kernel view is built in (Linux, `ebpf` feature);
//! - `ferrite_uring`: and so is its tokio-uring adapter (`tokio-uring`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ferrite_kernel, ferrite_uring)");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let feature = |name: &str| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
    if linux && feature("EBPF") {
        println!("cargo::rustc-cfg=ferrite_kernel");
        if feature("TOKIO_URING") {
            println!("cargo::rustc-cfg=ferrite_uring");
        }
    }
}
