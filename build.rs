//! Link-time settings for libtorch.
//!
//! torch-sys finds libtorch (with `LIBTORCH_USE_PYTORCH=1`, inside the venv's torch package) and
//! reports its `lib/` directory to direct dependents as `DEP_TCH_LIBTORCH_LIB`. We add two things
//! it does not:
//! - an rpath to that directory, so `target/release/cptlab` runs without `LD_LIBRARY_PATH`;
//! - `libtorch_cuda` linked with `--no-as-needed`: nothing in our code references a CUDA symbol
//!   directly, so an as-needed linker drops the library and CUDA silently disappears from tch.
//!
//! It also compiles `csrc/grad_quant.cpp` (custom autograd Functions that quantize the error
//! signal in backward, which tch cannot express) against the same libtorch headers.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report the libtorch lib dir; no rpath added");
        println!("cargo:rustc-env=CPTLAB_TORCH_VERSION=unknown");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // torch's python package records its version beside lib/ (`__version__ = '2.11.0+cu130'`).
    let version_py = Path::new(&lib).join("../version.py");
    let version = std::fs::read_to_string(&version_py)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim_matches(['\'', '"']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CPTLAB_TORCH_VERSION={version}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    compile_shim(&lib);
    compile_c10d(&lib);
}

/// Builds the C++ shim as a static library linked into the crate. Includes: `<torch>/include`
/// and `<torch>/include/torch/csrc/api/include`, `<torch>` being the parent of the lib dir (the
/// layout of both the pip wheel and the libtorch archive); flags as torch-sys uses them.
fn compile_shim(lib: &str) {
    println!("cargo:rerun-if-changed=csrc/grad_quant.cpp");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/memory.cpp");
    println!("cargo:rerun-if-changed=csrc/runtime.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let root = Path::new(lib).join("..");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        // Optimised (-O3: the loops must vectorise) and without debug info in every profile;
        // debug info of the torch headers only slows the compile.
        .opt_level(3)
        .debug(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/grad_quant.cpp")
        .file("csrc/autocast.cpp")
        .file("csrc/memory.cpp")
        .file("csrc/runtime.cpp")
        .compile("cptlab_grad_quant");
}

/// Compiles `csrc/c10d.cpp` (TCPStore, PrefixStore and ProcessGroupGloo from libtorch's c10d).
/// torch's wheel ships `ProcessGroupGloo.hpp` but not gloo's own headers; Debian's `libgloo-dev`
/// provides them (`/usr/include/gloo`, or `GLOO_INCLUDE_DIR`). Without them the Gloo backend is
/// left out (the `cptlab_gloo` cfg is unset) and the binary says so when asked for CPU
/// multi-process. The gloo code itself is torch's, in `libtorch_cpu`: nothing else is linked.
fn compile_c10d(lib: &str) {
    println!("cargo:rerun-if-changed=csrc/c10d.cpp");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE_DIR");
    println!("cargo::rustc-check-cfg=cfg(cptlab_gloo)");
    let root = Path::new(lib).join("..");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let gloo_dir = std::env::var("GLOO_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include".into());
    let gloo = Path::new(&gloo_dir).join("gloo/config.h").exists();
    // A path that does not exist would rerun this script on every build: watch the directory
    // the headers would appear in instead.
    if gloo {
        println!("cargo:rerun-if-changed={gloo_dir}/gloo/config.h");
    } else {
        println!("cargo:rerun-if-changed={gloo_dir}");
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .opt_level(2)
        .debug(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT");
    if gloo {
        // `-I/usr/include` would break libstdc++'s `#include_next`: the default path has it.
        if gloo_dir != "/usr/include" {
            build.include(&gloo_dir);
        }
        build.flag("-DUSE_C10D_GLOO");
        println!("cargo:rustc-cfg=cptlab_gloo");
    } else {
        println!(
            "cargo:warning=gloo headers not found ({gloo_dir}/gloo): built without the Gloo backend (install libgloo-dev)"
        );
    }
    build.file("csrc/c10d.cpp").compile("cptlab_c10d");
}
