//! Builds the kernels of kernels/ twice, and their Rust bindings once.
//!
//! - Always: the mock device — every kernels/*.cu rewritten into host C++ (build/mock.rs) and
//!   compiled with kernels/mock/mock_cuda.h force-included and kernels/mock/runtime.cpp beside
//!   it, optimized even in the test profile; its symbols are renamed scalpel_mock_*. It needs only
//!   a C++17 compiler, so `--device mock` exists in every build.
//! - With the `cuda` feature (the default): the real kernels, compiled by nvcc into a static
//!   library with their extern "C" launchers (cudart linked statically, so the binary needs only
//!   the driver at run time). nvcc is found through NVCC, CUDA_HOME / CUDA_PATH, PATH, or the
//!   toolchain scripts/setup.sh installs from the CUDA wheels on PyPI. No GPU is needed (and
//!   nvidia-smi is never asked): machine code for sm_80, sm_86, sm_89 and sm_90 plus PTX for the
//!   newest, or the list in SCALPEL_CUDA_ARCHS (e.g. "90" or "80,90").
//! - kernels/scalpel_kernels.h becomes Rust through bindgen (build/bindings.rs): host and both
//!   device builds share one definition of every launcher and parameter struct. bindgen loads
//!   libclang when this script runs: found through LIBCLANG_PATH, the system's, or the copy
//!   scripts/setup.sh installs from the PyPI wheel.
//!
//! SCALPEL_MOCK_SANITIZE=address builds the mock kernels with AddressSanitizer and UBSan's
//! alignment check (scripts/mock_asan.sh).

#[path = "build/bindings.rs"]
mod bindings;
#[path = "build/mock.rs"]
mod mock;

use std::env;
use std::path::{Path, PathBuf};

const HEADER: &str = "kernels/scalpel_kernels.h";
const DEFAULT_ARCHS: &str = "80,86,89,90";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=kernels");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "LIBCLANG_PATH",
        "PATH",
        "SCALPEL_CUDA_ARCHS",
        "SCALPEL_CUDA_HOME",
        "SCALPEL_MOCK_SANITIZE",
        "XDG_CACHE_HOME",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let kernels = kernel_sources();

    let libclang = load_libclang();
    // tests/bindings.rs runs bindgen on headers of its own with the same libclang.
    println!("cargo:rustc-env=SCALPEL_LIBCLANG={}", libclang.display());
    let generated = bindings::generate(Path::new(HEADER)).unwrap_or_else(|e| panic!("{HEADER}: {e}"));
    write(&out.join("kernels.rs"), &generated.rust);
    write(&out.join("mock/mock_names.h"), &generated.mock_names);

    build_mock(&out, &kernels);
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_cuda(&kernels);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create OUT_DIR subfolder");
    // Unchanged files keep their timestamps, so cc does not rebuild what has not changed.
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn kernel_sources() -> Vec<PathBuf> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ exists")
        .map(|e| e.expect("readable kernels/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    kernels.sort();
    assert!(!kernels.is_empty(), "no kernels/*.cu to build");
    kernels
}

fn build_mock(out: &Path, kernels: &[PathBuf]) {
    let dir = out.join("mock");
    let mut sources = vec![PathBuf::from("kernels/mock/runtime.cpp")];
    // The mock's own rule-breaking kernels (tests/mock_device.rs) are rewritten like the real ones.
    let selftest = PathBuf::from("kernels/mock/selftest.cu");
    for k in kernels.iter().chain([&selftest]) {
        let rel = k.to_string_lossy().replace('\\', "/");
        let src = std::fs::read_to_string(k).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let cpp = mock::rewrite(&src, &rel).unwrap_or_else(|e| panic!("mock build: {e}"));
        let name = k.file_stem().expect("a file name").to_string_lossy().into_owned();
        let path = dir.join(format!("{name}.cpp"));
        write(&path, &cpp);
        sources.push(path);
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let sanitize = env::var("SCALPEL_MOCK_SANITIZE").ok().filter(|v| !v.is_empty());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        // Optimized in every profile: the mock runs whole models in the tests.
        .opt_level(2)
        .debug(sanitize.is_some())
        .include(root.join("kernels/mock/include"))
        .include(root.join("kernels"))
        .include(&root)
        .define("SCALPEL_NO_NVTX", None)
        .flag("-include")
        .flag(dir.join("mock_names.h").to_str().expect("a UTF-8 OUT_DIR"))
        .flag("-include")
        .flag(root.join("kernels/mock/mock_cuda.h").to_str().expect("a UTF-8 path"))
        // The kernels read bf16 through uint4 pointers, as CUDA code does.
        .flag("-fno-strict-aliasing")
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-Werror")
        .flag("-Wno-unknown-pragmas");
    if let Some(s) = &sanitize {
        assert_eq!(s, "address", "SCALPEL_MOCK_SANITIZE: only `address` is supported");
        build
            .flag("-fsanitize=address,alignment")
            .flag("-fno-sanitize-recover=all")
            .flag("-fno-omit-frame-pointer");
        // rustc links with -nodefaultlibs, so the compiler's -fsanitize link step adds no runtime:
        // name the compiler's own ASan and UBSan libraries (scripts/mock_asan.sh then lets ASan
        // run without being first in the library list).
        let compiler = build.get_compiler();
        for lib in ["asan", "ubsan"] {
            let out = std::process::Command::new(compiler.path())
                .arg(format!("-print-file-name=lib{lib}.so"))
                .output()
                .unwrap_or_else(|e| {
                    panic!("SCALPEL_MOCK_SANITIZE: running {}: {e}", compiler.path().display())
                });
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            assert!(
                path.is_absolute() && path.exists(),
                "SCALPEL_MOCK_SANITIZE: {} has no lib{lib}.so (GCC's sanitizer runtimes are needed: \
                 Debian's libasan8 and libubsan1 come with g++)",
                compiler.path().display()
            );
            println!("cargo:rustc-link-search=native={}", path.parent().expect("a directory").display());
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
        println!("cargo:rustc-cfg=scalpel_mock_asan");
    }
    println!("cargo:rustc-check-cfg=cfg(scalpel_mock_asan)");
    build.files(&sources).compile("scalpel_mock");
    for lib in ["stdc++", "pthread"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}

fn build_cuda(kernels: &[PathBuf]) {
    let nvcc = find_nvcc().unwrap_or_else(|| {
        panic!(
            "\n\nscalpel's CUDA backend needs nvcc, and none was found (looked at $NVCC, $CUDA_HOME/bin, \
             $CUDA_PATH/bin, $PATH and the toolchain scripts/setup.sh installs under {}).\n\
             Run scripts/setup.sh to install nvcc 13.0 from PyPI, point NVCC at an nvcc, or build without \
             the real CUDA backend with `cargo build --no-default-features` (the mock device stays).\n\n",
            setup_toolchain_dir().display()
        )
    });
    let root = nvcc.parent().and_then(Path::parent).expect("nvcc lives in <root>/bin").to_path_buf();

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
    build.files(kernels).compile("scalpel_kernels");

    for lib in ["lib", "lib64"] {
        let dir = root.join(lib);
        if dir.is_dir() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
    }
    for lib in ["dl", "rt", "pthread", "stdc++"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}

/// scripts/setup.sh's folder: $XDG_CACHE_HOME/scalpel, or ~/.cache/scalpel.
fn setup_cache_dir() -> PathBuf {
    let cache = env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cache"));
    cache.join("scalpel")
}

/// Where scripts/setup.sh installs the CUDA wheels.
fn setup_toolchain_dir() -> PathBuf {
    env::var_os("SCALPEL_CUDA_HOME").map(PathBuf::from).unwrap_or_else(|| setup_cache_dir().join("cuda"))
}

/// Loads libclang for bindgen and returns its path: from LIBCLANG_PATH when it is set, else the
/// system's (wherever clang-sys looks: llvm-config, LD_LIBRARY_PATH, /usr/lib/llvm-*/lib, …), else
/// the PyPI wheel's that scripts/setup.sh installs where no system copy is found. clang-sys reads
/// LIBCLANG_PATH when it loads, so the fallback is that variable set here, before bindgen runs.
fn load_libclang() -> PathBuf {
    // An empty LIBCLANG_PATH means unset, as for XDG_CACHE_HOME (clang-sys would search "" only).
    if env::var_os("LIBCLANG_PATH").is_some_and(|v| v.is_empty()) {
        // SAFETY: build scripts are single-threaded here; nothing else reads the environment concurrently.
        unsafe { env::remove_var("LIBCLANG_PATH") };
    }
    let setup = setup_cache_dir().join("libclang");
    let wheel = setup.join("clang/native");
    let mut loaded = clang_sys::load();
    if loaded.is_err() && env::var_os("LIBCLANG_PATH").is_none() && wheel.is_dir() {
        // SAFETY: as above.
        unsafe { env::set_var("LIBCLANG_PATH", &wheel) };
        loaded = clang_sys::load();
    }
    if let Err(e) = loaded {
        panic!(
            "\n\nscalpel's build reads kernels/scalpel_kernels.h with bindgen, which needs libclang, and none \
             was found ({e}).\nInstall Debian's libclang-dev (`apt-get install libclang-dev`), or run \
             scripts/setup.sh (it installs that, or the PyPI wheel `libclang` under {}), or set \
             LIBCLANG_PATH to the folder that holds libclang.so.\n\n",
            setup.display()
        );
    }
    clang_sys::get_library().expect("libclang was just loaded").path().to_path_buf()
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
