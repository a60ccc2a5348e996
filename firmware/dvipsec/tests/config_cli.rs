//! `dvipsec config check|show` through the built binary: exit codes, the first line of
//! every error, the resolved views, and that no secret ever reaches the output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn dvipsec(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dvipsec"));
    command.args(args);
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().expect("run dvipsec")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_figure4_prints_one_line_per_node_and_exits_0() {
    let figure4 = repo_path("config/examples/figure4.yaml");
    let out = dvipsec(&["config", "check", figure4.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    for (line, node) in lines.iter().zip(["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"]) {
        assert!(line.starts_with(&format!("{node}: roles ")), "{line}");
    }
    assert!(lines[0].contains("owns DVA1"), "{}", lines[0]);
    assert!(
        lines[4].contains("owns DVB1; backs DVA1 (rank 100)"),
        "{}",
        lines[4]
    );
}

#[test]
fn check_with_node_prints_that_node_only() {
    let figure4 = repo_path("config/examples/figure4.yaml");
    let out = dvipsec(
        &[
            "config",
            "check",
            figure4.to_str().unwrap(),
            "--node",
            "MVS3",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "MVS3: roles target; owns -; backs -; serves DVA1 (standby via MVS5), DVB1 (via MVS5)\n"
    );
    let missing = dvipsec(
        &[
            "config",
            "check",
            figure4.to_str().unwrap(),
            "--node",
            "MVS9",
        ],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no node is named `MVS9`"));
}

#[test]
fn every_example_checks() {
    for entry in std::fs::read_dir(repo_path("config/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = dvipsec(&["config", "check", path.to_str().unwrap()], &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
    }
}

#[test]
fn a_missing_file_exits_2() {
    let out = dvipsec(&["config", "check", "/nonexistent/site.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("/nonexistent/site.yaml: cannot read"));
}

/// The `# expect: LINE:COLUMN FRAGMENT` header of a broken file.
fn expectation(path: &Path) -> (String, String) {
    let contents = std::fs::read_to_string(path).unwrap();
    let header = contents
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no `# expect:` header", path.display()));
    let (position, fragment) = header.split_once(' ').unwrap();
    (position.to_owned(), fragment.to_owned())
}

#[test]
fn every_broken_file_exits_2_with_file_line_column_first() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("config/tests/broken"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} broken files", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let (position, fragment) = expectation(path);
        let shown = path.to_str().unwrap();
        let out = dvipsec(&["config", "check", shown], &[]);
        let stderr = text(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        let prefix = format!("{shown}:{position}: ");
        if out.status.code() != Some(2) || !first.starts_with(&prefix) || !first.contains(&fragment)
        {
            failures.push(format!(
                "{shown}: exit {:?}, first line {first:?}, expected {prefix}...{fragment}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn show_prints_the_resolved_view_as_json() {
    let figure4 = repo_path("config/examples/figure4.yaml");
    let out = dvipsec(
        &[
            "config",
            "show",
            figure4.to_str().unwrap(),
            "--node",
            "MVS5",
            "--json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["node"], "MVS5");
    assert_eq!(view["owns"][0]["dvipa"], "DVB1");
    assert_eq!(view["owns"][0]["ports"], serde_json::json!([60]));
    assert_eq!(view["backs"][0]["dvipa"], "DVA1");
    assert_eq!(view["backs"][0]["rank"], 100);
    assert_eq!(
        view["backs"][0]["targets"],
        serde_json::json!(["MVS2", "MVS3", "MVS4"])
    );
    assert_eq!(view["peers"].as_array().unwrap().len(), 2);
}

#[test]
fn show_prints_the_resolved_view_as_yaml() {
    let figure4 = repo_path("config/examples/figure4.yaml");
    let out = dvipsec(
        &[
            "config",
            "show",
            figure4.to_str().unwrap(),
            "--node",
            "MVS1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected = dvipsec_config::SiteConfig::load(&figure4)
        .unwrap()
        .node_view("MVS1")
        .unwrap()
        .to_yaml()
        .unwrap();
    assert_eq!(text(&out.stdout), expected);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("node: MVS1"), "{stdout}");
    assert!(stdout.contains("owns:"), "{stdout}");
}

#[test]
fn show_of_a_broken_file_exits_2() {
    let broken = repo_path("config/tests/broken/rank-zero.yaml");
    let out = dvipsec(
        &["config", "show", broken.to_str().unwrap(), "--node", "D1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

const ENV_SECRET: &str = "env-secret-7f3a9c1d-never-print-me";
const FILE_SECRET: &str = "file-secret-52b8e6aa-never-print-me";

/// A copy of the small example whose PSK comes from a file with a known secret, plus
/// figure4, whose PSKs come from the environment.
fn site_with_known_secrets(dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(repo_path(
        "config/examples/one-distributor-two-targets.yaml",
    ))
    .unwrap();
    std::fs::create_dir(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/EXAMPLE-branch.psk"), FILE_SECRET).unwrap();
    std::fs::write(dir.join("secrets/EXAMPLE-xcf.key"), FILE_SECRET).unwrap();
    let path = dir.join("site.yaml");
    std::fs::write(&path, example).unwrap();
    path
}

fn assert_no_secret(out: &Output) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains(ENV_SECRET), "env secret leaked:\n{all}");
    assert!(!all.contains(FILE_SECRET), "file secret leaked:\n{all}");
    assert!(
        !all.contains("never-print-me"),
        "part of a secret leaked:\n{all}"
    );
}

#[test]
fn secrets_never_appear_in_check_or_show_output() {
    let dir = tempfile::tempdir().unwrap();
    let site = site_with_known_secrets(dir.path());
    let site = site.to_str().unwrap();
    let figure4 = repo_path("config/examples/figure4.yaml");
    let figure4 = figure4.to_str().unwrap();
    let envs = [
        ("DVIPSEC_PSK_BRANCH_A", ENV_SECRET),
        ("DVIPSEC_PSK_BRANCH_B", ENV_SECRET),
    ];
    let runs: [&[&str]; 6] = [
        &["config", "check", site, "--secrets"],
        &["config", "show", site, "--node", "dist"],
        &["config", "show", site, "--node", "dist", "--json"],
        &["config", "check", figure4, "--secrets"],
        &["config", "show", figure4, "--node", "MVS5"],
        &["config", "show", figure4, "--node", "MVS1", "--json"],
    ];
    for args in runs {
        let out = dvipsec(args, &envs);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_no_secret(&out);
    }
    let checked = dvipsec(&["config", "check", site, "--secrets"], &[]);
    assert!(text(&checked.stdout).contains("secrets: 2 readable"));
}

#[test]
fn check_secrets_names_the_missing_variable_and_its_position() {
    let figure4 = repo_path("config/examples/figure4.yaml");
    let shown = figure4.to_str().unwrap();
    // Without --secrets the environment is not consulted.
    let plain = dvipsec(&["config", "check", shown], &[]);
    assert_eq!(plain.status.code(), Some(0));
    let mut command = Command::new(env!("CARGO_BIN_EXE_dvipsec"));
    command
        .args(["config", "check", shown, "--secrets"])
        .env_remove("DVIPSEC_PSK_BRANCH_A")
        .env_remove("DVIPSEC_PSK_BRANCH_B");
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    let psk_line = std::fs::read_to_string(&figure4)
        .unwrap()
        .lines()
        .position(|l| l.contains("psk: env:DVIPSEC_PSK_BRANCH_A"))
        .unwrap()
        + 1;
    assert!(
        first.starts_with(&format!("{shown}:{psk_line}:")),
        "{first}"
    );
    assert!(first.contains("DVIPSEC_PSK_BRANCH_A is not set"), "{first}");
}

#[test]
fn an_inline_psk_is_not_echoed_by_the_cli() {
    let broken = repo_path("config/tests/broken/inline-psk.yaml");
    let out = dvipsec(&["config", "check", broken.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("correct-horse"), "{all}");
}
