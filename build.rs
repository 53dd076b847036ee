//! Builds the CUDA kernels (feature `cuda`, on by default): kernels/*.cu compiled by nvcc into a
//! static library with their extern "C" launchers (cudart linked statically, so the binary needs
//! only the driver at run time), and kernels/scalpel_kernels.h turned into Rust by bindgen so
//! host and device share one definition of every launcher and parameter struct.
//!
//! nvcc is found through NVCC, CUDA_HOME / CUDA_PATH, PATH, or the toolchain scripts/setup.sh
//! installs from the CUDA wheels on PyPI. No GPU is needed (and nvidia-smi is never asked):
//! machine code for sm_80, sm_86, sm_89 and sm_90 plus PTX for the newest, or the list in
//! SCALPEL_CUDA_ARCHS (e.g. "90" or "80,90").

use std::env;
use std::path::{Path, PathBuf};

const HEADER: &str = "kernels/scalpel_kernels.h";
const DEFAULT_ARCHS: &str = "80,86,89,90";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "PATH",
        "SCALPEL_CUDA_ARCHS",
        "SCALPEL_CUDA_HOME",
        "XDG_CACHE_HOME",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = find_nvcc().unwrap_or_else(|| {
        panic!(
            "\n\nscalpel's CUDA backend needs nvcc, and none was found (looked at $NVCC, $CUDA_HOME/bin, \
             $CUDA_PATH/bin, $PATH and the toolchain scripts/setup.sh installs under {}).\n\
             Run scripts/setup.sh to install nvcc 13.0 from PyPI, point NVCC at an nvcc, or build the \
             CPU-only engine with `cargo build --no-default-features`.\n\n",
            setup_toolchain_dir().display()
        )
    });
    let root = nvcc.parent().and_then(Path::parent).expect("nvcc lives in <root>/bin").to_path_buf();

    let mut kernels: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ exists")
        .map(|e| e.expect("readable kernels/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    kernels.sort();
    assert!(!kernels.is_empty(), "no kernels/*.cu to build");

    let archs = env::var("SCALPEL_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.to_string());
    let archs: Vec<u32> = archs
        .split(',')
        .map(|a| {
            a.trim()
                .trim_start_matches("sm_")
                .parse()
                .unwrap_or_else(|_| panic!("SCALPEL_CUDA_ARCHS: bad arch {a:?}"))
        })
        .collect();
    let newest = *archs.iter().max().expect("at least one arch");

    // cc takes nvcc from $NVCC (a .compiler() would be taken for the host compiler instead).
    // SAFETY: build scripts are single-threaded here; nothing else reads the environment concurrently.
    unsafe { env::set_var("NVCC", &nvcc) };
    let mut build = cc::Build::new();
    build
        .cuda(true)
        .cudart("static")
        // cc adds -G (device debug) in debug profiles: tests would exercise different code than release.
        .debug(false)
        .opt_level(3)
        .include("kernels")
        .flag("-std=c++17")
        .flag("--expt-relaxed-constexpr")
        .flag("-Werror=all-warnings")
        .flag("-Xcompiler=-Wall,-Wextra,-Werror");
    for a in &archs {
        build.flag(format!("-gencode=arch=compute_{a},code=sm_{a}"));
    }
    // NVTX 3 is header-only; without its headers the ranges compile to nothing.
    if !root.join("include/nvtx3/nvToolsExt.h").is_file() {
        println!(
            "cargo:warning=NVTX headers not found under {}: Nsight timelines will show no scalpel ranges \
             (scripts/setup.sh installs the nvidia-nvtx wheel)",
            root.join("include").display()
        );
        build.define("SCALPEL_NO_NVTX", None);
    }
    build.flag(format!("-gencode=arch=compute_{newest},code=compute_{newest}"));
    build.files(&kernels).compile("scalpel_kernels");

    for lib in ["lib", "lib64"] {
        let dir = root.join(lib);
        if dir.is_dir() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
    }
    for lib in ["dl", "rt", "pthread", "stdc++"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }

    let bindings = bindgen::Builder::default()
        .header(HEADER)
        .clang_arg("-xc")
        .allowlist_function("scalpel_.*")
        .allowlist_type("Scalpel.*")
        .allowlist_var("SCALPEL_.*")
        .rustified_enum("ScalpelDType|ScalpelAct")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(false)
        .generate()
        .unwrap_or_else(|e| {
            panic!("bindgen could not read {HEADER}: {e}\n(bindgen needs libclang: `apt-get install libclang-dev`, which scripts/setup.sh does)")
        });
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("kernels.rs");
    bindings.write_to_file(&out).expect("write bindings");
}

/// Where scripts/setup.sh installs the CUDA wheels.
fn setup_toolchain_dir() -> PathBuf {
    if let Some(d) = env::var_os("SCALPEL_CUDA_HOME") {
        return PathBuf::from(d);
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cache"));
    cache.join("scalpel").join("cuda")
}

fn find_nvcc() -> Option<PathBuf> {
    let is_file = |p: PathBuf| p.is_file().then_some(p);
    if let Some(p) = env::var_os("NVCC") {
        return is_file(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env::var_os(var).and_then(|d| is_file(PathBuf::from(d).join("bin/nvcc"))) {
            return Some(p);
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            if let Some(p) = is_file(dir.join("nvcc")) {
                return Some(p);
            }
        }
    }
    let setup = setup_toolchain_dir();
    is_file(setup.join("nvidia/cu13/bin/nvcc")).or_else(|| is_file(setup.join("bin/nvcc")))
}
