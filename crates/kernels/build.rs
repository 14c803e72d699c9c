//! Compiles `kernels/*.cu` (repository root) to PTX with nvcc, only when the `cuda` feature is on.
//! `SCONCE_CUDA_ARCH` (default `80,90`) lists the virtual architectures; nvcc comes from
//! `$CUDA_ROOT/bin` or `PATH`. A CPU build never looks for nvcc.

use std::path::{Path, PathBuf};
use std::process::Command;

const KERNELS: &[&str] = &["reshape_and_cache", "paged_attention", "fused"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=SCONCE_CUDA_ARCH");
    println!("cargo::rerun-if-env-changed=CUDA_ROOT");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src_dir = manifest.join("../../kernels");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo::rerun-if-changed={}", src_dir.join("common.cuh").display());
    let archs = arch_list();
    let mut table = String::from("pub(crate) const PTX: &[(&str, u32, &str)] = &[\n");
    for name in KERNELS {
        let src = src_dir.join(format!("{name}.cu"));
        println!("cargo::rerun-if-changed={}", src.display());
        for &arch in &archs {
            let ptx = out_dir.join(format!("{name}.compute_{arch}.ptx"));
            compile(&src, &ptx, arch);
            table.push_str(&format!("    (\"{name}\", {arch}, include_str!({:?})),\n", ptx.display().to_string()));
        }
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("ptx_table.rs"), table).expect("write ptx_table.rs");
}

fn arch_list() -> Vec<u32> {
    let spec = std::env::var("SCONCE_CUDA_ARCH").unwrap_or_else(|_| "80,90".into());
    let mut archs: Vec<u32> = spec
        .split(',')
        .map(|a| a.trim().trim_start_matches("sm_").trim_start_matches("compute_").trim_end_matches('a'))
        .filter(|a| !a.is_empty())
        .map(|a| a.parse().unwrap_or_else(|_| panic!("SCONCE_CUDA_ARCH: bad architecture `{a}`")))
        .collect();
    archs.sort_unstable();
    archs.dedup();
    assert!(!archs.is_empty(), "SCONCE_CUDA_ARCH lists no architecture");
    archs
}

fn nvcc() -> PathBuf {
    match std::env::var_os("CUDA_ROOT") {
        Some(root) if Path::new(&root).join("bin/nvcc").exists() => Path::new(&root).join("bin/nvcc"),
        _ => PathBuf::from("nvcc"),
    }
}

fn compile(src: &Path, ptx: &Path, arch: u32) {
    let nvcc = nvcc();
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "--use_fast_math", &format!("-arch=compute_{arch}"), "-o"])
        .arg(ptx)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (set CUDA_ROOT or PATH)", nvcc.display()));
    assert!(status.success(), "nvcc failed on {}", src.display());
}
