//! Every example under config/examples loads and validates, and figure4.yaml resolves
//! to the seed's Figure 4.

use std::path::PathBuf;

use dvipsec_config::{Capability, NodeView, PortSet, SiteConfig};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn load_example(name: &str) -> SiteConfig {
    let path = examples_dir().join(name);
    match SiteConfig::load(&path) {
        Ok(config) => config,
        Err(err) => panic!("{} does not load:\n{}", path.display(), err.render()),
    }
}

#[test]
fn every_example_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            if let Err(err) = SiteConfig::load(&path) {
                panic!("{} does not load:\n{}", path.display(), err.render());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected at least two examples, found {checked}"
    );
}

fn view(config: &SiteConfig, node: &str) -> NodeView {
    config.node_view(node).unwrap()
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| name(i).to_owned()).collect()
}

#[test]
fn figure4_mvs1_owns_dva1_distributed_to_xcf1_xcf2_xcf4() {
    let config = load_example("figure4.yaml");
    let mvs1 = view(&config, "MVS1");
    assert_eq!(names(&mvs1.owns, |o| &o.dvipa), ["DVA1"]);
    let dva1 = &mvs1.owns[0];
    assert_eq!(dva1.targets, ["MVS1", "MVS2", "MVS4"]);
    assert!(matches!(&dva1.ports, PortSet::List(p) if p.len() == 1 && p[0].value == 60));
    assert_eq!(dva1.backups.len(), 1);
    assert_eq!(
        (dva1.backups[0].node.as_str(), dva1.backups[0].rank),
        ("MVS5", 100)
    );
    assert!(mvs1.backs.is_empty());
    // branch-a for the DVA1 it owns, branch-b because DESTIP ALL makes it serve DVB1.
    assert_eq!(names(&mvs1.peers, |p| &p.name), ["branch-a", "branch-b"]);
    assert_eq!(mvs1.peers[0].dvipas, ["DVA1"]);
    assert_eq!(mvs1.peers[1].dvipas, ["DVB1"]);
}

#[test]
fn figure4_mvs5_owns_dvb1_for_all_and_backs_dva1_for_xcf2_xcf3_xcf4() {
    let config = load_example("figure4.yaml");
    let mvs5 = view(&config, "MVS5");
    assert_eq!(names(&mvs5.owns, |o| &o.dvipa), ["DVB1"]);
    assert_eq!(
        mvs5.owns[0].targets,
        ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"]
    );
    assert_eq!(names(&mvs5.backs, |b| &b.dvipa), ["DVA1"]);
    let backed = &mvs5.backs[0];
    assert_eq!(backed.owner, "MVS1");
    assert_eq!(backed.rank, 100);
    assert_eq!(backed.takeover_order, 1);
    assert_eq!(backed.targets, ["MVS2", "MVS3", "MVS4"]);
    let mut peers = names(&mvs5.peers, |p| &p.name);
    peers.sort();
    assert_eq!(peers, ["branch-a", "branch-b"]);
}

#[test]
fn figure4_targets_serve_what_the_seed_says() {
    let config = load_example("figure4.yaml");
    // The seed: SAs of DVA1 go to MVS2 and MVS4, SAs of DVB1 to MVS2 and MVS3 (and, with
    // DESTIP ALL, to every target).
    let served = |node: &str| -> Vec<(String, String, bool)> {
        view(&config, node)
            .serves
            .iter()
            .map(|s| (s.dvipa.clone(), s.distributor.clone(), s.standby))
            .collect()
    };
    let entry = |d: &str, via: &str, standby: bool| (d.to_owned(), via.to_owned(), standby);
    assert_eq!(
        served("MVS2"),
        [
            entry("DVA1", "MVS1", false),
            entry("DVA1", "MVS5", true),
            entry("DVB1", "MVS5", false)
        ]
    );
    assert_eq!(
        served("MVS3"),
        [entry("DVA1", "MVS5", true), entry("DVB1", "MVS5", false)]
    );
    assert_eq!(
        served("MVS4"),
        [
            entry("DVA1", "MVS1", false),
            entry("DVA1", "MVS5", true),
            entry("DVB1", "MVS5", false)
        ]
    );
}

#[test]
fn figure4_runs_ike_on_mvs1_mvs4_mvs5_only() {
    let config = load_example("figure4.yaml");
    let ike: Vec<&str> = config
        .nodes
        .iter()
        .filter(|n| n.has(Capability::Ike))
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(ike, ["MVS1", "MVS4", "MVS5"]);
}

#[test]
fn summary_lines_name_roles_and_dvipas() {
    let config = load_example("figure4.yaml");
    assert_eq!(
        view(&config, "MVS5").summary(),
        "MVS5: roles distributor, backup, target, ike; owns DVB1; backs DVA1 (rank 100); serves DVB1 (via MVS5)"
    );
    assert_eq!(
        view(&config, "MVS3").summary(),
        "MVS3: roles target; owns -; backs -; serves DVA1 (standby via MVS5), DVB1 (via MVS5)"
    );
}

#[test]
fn example_secrets_are_readable_when_asked() {
    let config = load_example("one-distributor-two-targets.yaml");
    assert_eq!(config.check_secrets(None).unwrap(), 2);
    let psk = config.peer_psk("branch").unwrap();
    assert!(psk.expose().starts_with(b"EXAMPLE-ONLY"));
    assert!(!psk.expose().ends_with(b"\n"));
}

#[test]
fn secrets_stay_out_of_debug_and_views() {
    const SECRET: &str = "debug-secret-1b2c3d4e-do-not-show";
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(examples_dir().join("one-distributor-two-targets.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/EXAMPLE-branch.psk"), SECRET).unwrap();
    std::fs::write(dir.path().join("secrets/EXAMPLE-xcf.key"), SECRET).unwrap();
    let path = dir.path().join("site.yaml");
    std::fs::write(&path, example).unwrap();
    let config = SiteConfig::load(&path).unwrap();
    let psk = config.peer_psk("branch").unwrap();
    assert_eq!(psk.expose(), SECRET.as_bytes());
    let view = config.node_view("dist").unwrap();
    let shown = [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{psk:?}"),
        format!("{view:?}"),
        view.to_yaml().unwrap(),
        config.to_yaml().unwrap(),
    ];
    for text in shown {
        assert!(!text.contains(SECRET), "secret shown in:\n{text}");
    }
}

#[test]
fn unknown_peer_psk_is_an_error() {
    let config = load_example("one-distributor-two-targets.yaml");
    assert!(matches!(
        config.peer_psk("nobody"),
        Err(dvipsec_config::ConfigError::NoSuchPeer { .. })
    ));
}

#[test]
fn unknown_node_view_is_an_error() {
    let config = load_example("figure4.yaml");
    assert!(config.node_view("MVS9").is_err());
}

#[test]
fn xcf_key_is_read_only_for_a_protected_link() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let protected = dvipsec_config::SiteConfig::load(dir.join("one-distributor-two-targets.yaml"))
        .expect("example loads");
    let key = protected
        .xcf_key()
        .expect("the example's key file is readable")
        .expect("a protected link has a key");
    let on_disk = std::fs::read(dir.join("secrets/EXAMPLE-xcf.key")).expect("key file");
    assert!(!key.expose().is_empty());
    assert!(
        on_disk.starts_with(key.expose()),
        "the key comes from the named file"
    );

    let trusted =
        dvipsec_config::SiteConfig::load(dir.join("figure4.yaml")).expect("example loads");
    assert!(
        matches!(
            trusted.xcf.security.value,
            dvipsec_config::XcfSecurity::Trusted
        ),
        "figure4.yaml marks its XCF link trusted"
    );
    assert!(trusted.xcf_key().expect("no key to read").is_none());
}
