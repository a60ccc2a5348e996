//! Log output of the firmware: tracing events on stderr, at the level the site configuration's
//! `logging` section gives each module. `RUST_LOG`, when set, replaces the whole section (an
//! operator chasing a problem on one box should not have to edit the site file).

use dvipsec_config::{LogLevel, LoggingConfig};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Level of every module when the site says nothing.
const DEFAULT_LEVEL: LogLevel = LogLevel::Info;

/// The filter directives of `site_logging`: the default level first, then one
/// `module=level` per module (tracing lets the most specific directive win).
pub fn directives(site_logging: Option<&LoggingConfig>) -> String {
    let Some(logging) = site_logging else {
        return DEFAULT_LEVEL.as_str().to_owned();
    };
    let mut parts = vec![logging.level.value.as_str().to_owned()];
    parts.extend(
        logging
            .modules
            .iter()
            .map(|(module, level)| format!("{module}={level}")),
    );
    parts.join(",")
}

/// The filter to run with: `RUST_LOG` if it is set and parses, else the site's levels.
fn filter(site_logging: Option<&LoggingConfig>) -> EnvFilter {
    let from_site = || {
        EnvFilter::try_new(directives(site_logging)).unwrap_or_else(|error| {
            // Module names are validated with the configuration, so this means a bug; log at
            // the default level rather than not at all.
            eprintln!("dvipsec: the site's logging section does not make a filter: {error}");
            EnvFilter::new(DEFAULT_LEVEL.as_str())
        })
    };
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(text) if !text.trim().is_empty() => EnvFilter::try_new(&text).unwrap_or_else(|error| {
            eprintln!("dvipsec: RUST_LOG is not a valid filter ({error}); using the site's levels");
            from_site()
        }),
        _ => from_site(),
    }
}

/// Installs the process's tracing subscriber: formatted lines on stderr, filtered per module.
/// A second call (or a subscriber installed by someone else) leaves the first in place.
pub fn init(site_logging: Option<&LoggingConfig>) {
    let _already_installed = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files and pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter(site_logging))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipsec_config::{Located, LogModules};

    #[test]
    fn no_section_means_info_everywhere() {
        assert_eq!(directives(None), "info");
    }

    #[test]
    fn modules_follow_the_default_level_and_parse_as_a_filter() {
        let logging = LoggingConfig {
            level: Located::new(LogLevel::Warn),
            modules: LogModules(vec![
                (
                    Located::new("dvipsec_ike".to_owned()),
                    Located::new(LogLevel::Debug),
                ),
                (
                    Located::new("dvipsec::security".to_owned()),
                    Located::new(LogLevel::Off),
                ),
            ]),
        };
        let text = directives(Some(&logging));
        assert_eq!(text, "warn,dvipsec_ike=debug,dvipsec::security=off");
        let filter = EnvFilter::try_new(&text).unwrap();
        assert_eq!(filter.max_level_hint(), Some(tracing::Level::DEBUG.into()));
    }
}
