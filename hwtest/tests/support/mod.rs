//! Helpers shared by the hwtest integration tests: how a test that cannot run here reports
//! it (a skip with the reason outside CI, a failure under CI=true).

/// Not every test binary uses the site helpers.
#[allow(dead_code)]
pub mod site;
/// strongSwan as the site's peer (for the site tests only).
#[allow(dead_code)]
pub mod swan;

pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Reports that `test` cannot run because of `problem`: panics under CI=true, otherwise says
/// it is skipping.
pub fn skip_or_fail_in_ci(test: &str, problem: &str) {
    assert!(!in_ci(), "{test}: {problem}, and CI=true");
    eprintln!("skipping {test}: {problem}");
}
