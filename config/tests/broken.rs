//! Every file under tests/broken/ states in its header where its error is and what the
//! message says (`# expect: LINE:COLUMN FRAGMENT`); loading it must fail exactly there.

use std::path::{Path, PathBuf};

use dvipsec_config::{ConfigError, Position, SiteConfig};

struct Expectation {
    at: Position,
    fragment: String,
}

fn expectation(path: &Path) -> Expectation {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no `# expect:` header", path.display()));
    let (position, fragment) = line.split_once(' ').unwrap();
    let (l, c) = position.split_once(':').unwrap();
    Expectation {
        at: Position::new(l.parse().unwrap(), c.parse().unwrap()),
        fragment: fragment.to_owned(),
    }
}

fn broken_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn at_least_twenty_broken_files() {
    assert!(broken_files().len() >= 20, "{}", broken_files().len());
}

#[test]
fn base_of_the_broken_files_is_valid() {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/base.yaml");
    if let Err(err) = SiteConfig::load(&base) {
        panic!("{}", err.render());
    }
}

#[test]
fn each_broken_file_fails_at_its_line_and_column() {
    let mut failures = Vec::new();
    for path in broken_files() {
        let expected = expectation(&path);
        let err = match SiteConfig::load(&path) {
            Ok(_) => {
                failures.push(format!("{}: loaded without error", path.display()));
                continue;
            }
            Err(err) => err,
        };
        let rendered = err.render();
        let headline = rendered.lines().next().unwrap_or_default().to_owned();
        let prefix = format!("{}:{}: ", path.display(), expected.at);
        if err.position() != Some(expected.at) || !headline.starts_with(&prefix) {
            failures.push(format!(
                "{}: expected {}, got {headline}",
                path.display(),
                expected.at
            ));
        } else if !headline.contains(&expected.fragment) {
            failures.push(format!(
                "{}: message lacks `{}`: {headline}",
                path.display(),
                expected.fragment
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn semantic_errors_come_with_a_snippet_and_caret() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken/rank-too-high.yaml");
    let rendered = SiteConfig::load(&path).unwrap_err().render();
    let lines: Vec<&str> = rendered.lines().collect();
    assert!(
        lines[1].contains("--> ") && lines[1].ends_with(":33:15"),
        "{rendered}"
    );
    let source_line = lines.iter().find(|l| l.contains("rank: 255")).unwrap();
    let caret_line = lines.iter().find(|l| l.contains("^ rank 255")).unwrap();
    // The caret sits under the value.
    assert_eq!(caret_line.find('^'), source_line.find("255"), "{rendered}");
}

#[test]
fn syntax_errors_keep_serde_saphyrs_snippet() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken/mode-typo.yaml");
    let rendered = SiteConfig::load(&path).unwrap_err().render();
    assert!(rendered.contains("mode: tunel"), "{rendered}");
    assert!(rendered.contains('^'), "{rendered}");
}

#[test]
fn an_inline_psk_is_never_echoed() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken/inline-psk.yaml");
    let err = SiteConfig::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }));
    let shown = format!("{}\n{err}\n{err:?}", err.render());
    assert!(!shown.contains("correct-horse"), "{shown}");
}

#[test]
fn an_inline_psk_is_not_echoed_when_another_error_comes_first() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/base.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let text = text
        .replace("psk: env:DVIPSEC_PSK_BRANCH", "psk: \"correct-horse\"")
        .replace("peer: branch", "peer: nobody");
    let err = SiteConfig::from_str_named(&text, "x.yaml").unwrap_err();
    let shown = format!("{}\n{err}\n{err:?}", err.render());
    assert!(!shown.contains("correct-horse"), "{shown}");
}
