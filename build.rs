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
}

/// Builds the C++ shim as a static library linked into the crate. Includes: `<torch>/include`
/// and `<torch>/include/torch/csrc/api/include`, `<torch>` being the parent of the lib dir (the
/// layout of both the pip wheel and the libtorch archive); flags as torch-sys uses them.
fn compile_shim(lib: &str) {
    println!("cargo:rerun-if-changed=csrc/grad_quant.cpp");
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
        .compile("cptlab_grad_quant");
}
