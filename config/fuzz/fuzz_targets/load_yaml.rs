//! Fuzzes the site-configuration loader: any text must give a configuration or an
//! error with a position, never a panic; whatever loads must survive its own
//! serialization unchanged.
//!
//! Run: `cd config/fuzz && cargo +nightly fuzz run load_yaml -- -max_total_time=60`
//! (seed the corpus with `cp ../examples/*.yaml ../tests/broken/*.yaml corpus/load_yaml/`).
#![no_main]

use dvipsec_config::SiteConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match SiteConfig::from_str_named(text, "fuzz.yaml") {
        Ok(config) => {
            for view in config.node_views() {
                let _ = view.summary();
                let _ = view.to_yaml();
            }
            let yaml = config.to_yaml().expect("a loaded config serializes");
            let again = SiteConfig::from_str_named(&yaml, "again.yaml")
                .unwrap_or_else(|err| panic!("reparse failed:\n{}\n{yaml}", err.render()));
            assert_eq!(again, config, "round trip changed the config:\n{yaml}");
        }
        Err(err) => {
            let _ = err.render();
            let _ = err.position();
        }
    }
});
