//! Generates bindings against the system DPDK (pkg-config libdpdk) and compiles
//! the shim that gives DPDK's static inline functions a symbol.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(true)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            // One line, and what to do about it: the rest of the pkg-config
            // diagnostics only distract from the fix.
            let why = e.to_string().lines().next().unwrap_or("").to_string();
            eprintln!(
                "error: DPDK 22.11 (pkg-config libdpdk) not found ({why}); run `sudo scripts/setup.sh` to install it"
            );
            std::process::exit(1);
        }
    };

    // Debian builds DPDK with `-include rte_config.h -march=corei7`; both the
    // shim and bindgen must see the same flags or struct layouts drift.
    let mut clang_args: Vec<String> =
        dpdk.include_paths.iter().map(|p| format!("-I{}", p.display())).collect();
    clang_args.push("-include".into());
    clang_args.push("rte_config.h".into());
    clang_args.push("-march=corei7".into());

    let mut build = cc::Build::new();
    build
        .file("shim/shim.c")
        .flag("-include")
        .flag("rte_config.h")
        .flag("-march=corei7")
        .opt_level(3);
    for p in &dpdk.include_paths {
        build.include(p);
    }
    build.warnings(false).compile("lazarus_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(&clang_args)
        .allowlist_function("lz_.*")
        .allowlist_function("rte_eal_(init|cleanup|mp_wait_lcore|remote_launch|wait_lcore|process_type|has_hugepages|get_configuration)")
        .allowlist_function("rte_eth_(dev_adjust_nb_rx_tx_desc|dev_(count_avail|get_port_by_name|get_name_by_port|info_get|configure|start|stop|close|is_valid_port|socket_id)|rx_queue_setup|tx_queue_setup|promiscuous_(enable|get)|stats_get|stats_reset|macaddr_get|link_get_nowait|find_next_owned_by)")
        .allowlist_function("rte_pktmbuf_(pool_create|free_bulk)")
        .allowlist_function("rte_mempool_(free|avail_count|in_use_count|lookup)")
        .allowlist_function("rte_(zmalloc_socket|free)")
        .allowlist_function("rte_memzone_(reserve_aligned|lookup)|rte_eal_get_runtime_dir|rte_malloc_dump_heaps|rte_malloc")
        .allowlist_function("rte_(lcore_(is_enabled|count|to_socket_id|to_cpu_id)|get_main_lcore|get_next_lcore|socket_id|get_tsc_hz|strerror|version)")
        .allowlist_function("rte_telemetry_.*|rte_tel_data_.*")
        .allowlist_type("rte_eth_(conf|dev_info|stats|rxconf|txconf|link)")
        .allowlist_var("RTE_ETH_.*|RTE_MAX_ETHPORTS|RTE_MAX_LCORE|RTE_MBUF_DEFAULT_BUF_SIZE|RTE_PKTMBUF_HEADROOM|SOCKET_ID_ANY|RTE_ETHER_.*|RTE_TEL_.*")
        .opaque_type("rte_arp_ipv4|rte_arp_hdr|rte_l2tpv2_combined_msg_hdr|rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate();
    let bindings = match bindings {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: bindgen could not read the DPDK headers ({e}); run `sudo scripts/setup.sh` (it installs clang and libclang-dev)");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings.write_to_file(out.join("bindings.rs")).expect("OUT_DIR is writable");
}
