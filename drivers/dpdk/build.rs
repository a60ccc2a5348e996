//! Builds the DPDK bindings and C shim, only with the `dpdk` feature.
//!
//! pkg-config's cflags for libdpdk are passed whole (they carry `-include rte_config.h` and the
//! `-march` DPDK was built for) to both clang (bindgen) and the C compiler. bindgen sees only
//! our shim header, through an allowlist: DPDK's full headers do not produce compilable Rust.

fn main() {
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::env;
    use std::path::PathBuf;
    use std::process::Command;

    pub fn build() {
        println!("cargo:rerun-if-changed=shim/shim.c");
        println!("cargo:rerun-if-changed=shim/shim.h");
        let lib = pkg_config::Config::new()
            .atleast_version("22.11")
            .probe("libdpdk")
            .unwrap_or_else(|e| {
                panic!(
                    "dvipsec-dpdk: feature `dpdk` needs libdpdk-dev 22.11 (pkg-config libdpdk): {e}\n\
                     install with: apt-get install -y dpdk libdpdk-dev dpdk-dev pkg-config libclang-dev clang"
                )
            });
        // rte_eth_from_rings lives in the net_ring PMD, which libdpdk.pc does not list.
        println!("cargo:rustc-link-lib=dylib=rte_net_ring");
        let cflags = dpdk_cflags();
        compile_shim(&cflags, &lib.include_paths);
        generate_bindings(&cflags);
    }

    fn dpdk_cflags() -> Vec<String> {
        let out = Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .unwrap_or_else(|e| panic!("dvipsec-dpdk: cannot run pkg-config: {e}"));
        assert!(
            out.status.success(),
            "dvipsec-dpdk: pkg-config --cflags libdpdk failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    fn compile_shim(cflags: &[String], includes: &[PathBuf]) {
        let mut build = cc::Build::new();
        build.file("shim/shim.c").include("shim").warnings(true);
        for dir in includes {
            build.include(dir);
        }
        for flag in cflags {
            build.flag(flag);
        }
        build.compile("dvipsec_dpdk_shim");
    }

    fn generate_bindings(cflags: &[String]) {
        let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
        bindgen::Builder::default()
            .header("shim/shim.h")
            .clang_args(cflags)
            .allowlist_function("dvs_.*")
            .opaque_type("rte_mbuf")
            .opaque_type("rte_mempool")
            .opaque_type("rte_ring")
            .opaque_type("rte_crypto_op")
            .layout_tests(false)
            .generate()
            .unwrap_or_else(|e| panic!("dvipsec-dpdk: bindgen failed on shim/shim.h: {e}"))
            .write_to_file(out.join("bindings.rs"))
            .unwrap_or_else(|e| panic!("dvipsec-dpdk: cannot write bindings: {e}"));
    }
}
