//! What `config check` does, for both tools that offer it (`dvipsec config check` on a box,
//! `dvipsecctl config check` where the operator stands): load and validate a site file and
//! resolve the views of its nodes, or of the one node asked for.

use std::path::Path;

use crate::{ConfigError, NodeView, SiteConfig};

/// The exit status of a `config check` whose file does not load or validate; both tools use
/// it, so scripts can tell a bad site from a failed command.
pub const EXIT_INVALID: u8 = 2;

/// A site file that loaded and validated, with the views a check reports.
#[derive(Debug)]
pub struct Checked {
    /// The configuration, for further checks (its secrets, when asked).
    pub config: SiteConfig,
    /// Every node's view in file order, or only `node`'s when one was named.
    pub views: Vec<NodeView>,
}

/// Loads and validates `file` and resolves its nodes' views (only `node`'s if given; a node
/// the site does not name is an error). Secrets are not read.
pub fn check_site(file: &Path, node: Option<&str>) -> Result<Checked, ConfigError> {
    let config = SiteConfig::load(file)?;
    let views = match node {
        Some(name) => vec![config.node_view(name)?],
        None => config.node_views(),
    };
    Ok(Checked { config, views })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site_file() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/figure4.yaml")
    }

    #[test]
    fn every_node_or_the_one_named() {
        let file = site_file();
        let all = check_site(&file, None).expect("the example loads");
        assert_eq!(all.views.len(), all.config.nodes.len());
        let first = all.views[0].node.clone();
        let one = check_site(&file, Some(&first)).expect("a named node");
        assert_eq!(one.views.len(), 1);
        assert_eq!(one.views[0].node, first);
    }

    #[test]
    fn an_unknown_node_is_an_error() {
        let file = site_file();
        let error = check_site(&file, Some("no-such-node")).expect_err("unknown node");
        assert!(matches!(error, ConfigError::NoSuchNode { .. }), "{error:?}");
    }
}
