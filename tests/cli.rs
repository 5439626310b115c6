//! The command line: exit codes and error messages (relstat --help).

use crate::util::*;

#[test]
fn check_config_accepts_the_shipped_example() {
    let o = relstat(&["check-config", "-c", "examples/quickstart.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("configuration is valid"));
}

#[test]
fn check_config_names_file_line_and_key_and_exits_2() {
    let (_d, path) = temp_file(
        "bad.toml",
        "[[sources]]\nname = \"x\"\ntype = \"file\"\npaths = [\"/tmp/*.log\"]\n[sources.status_map]\nOK = \"deployd\"\n\n[tracking]\nmax_tracked = 0\n",
    );
    let o = relstat(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}:6: sources[0].status_map.OK")),
        "{err}"
    );
    assert!(err.contains("deployd"), "{err}");
    assert!(
        err.contains(&format!("{file}:9: tracking.max_tracked")),
        "{err}"
    );
}

#[test]
fn a_syntax_error_is_a_config_error_with_its_line() {
    let (_d, path) = temp_file("bad.toml", "[agent]\nsite = \"a\"\nsite2 = \n");
    let o = relstat(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.toml:3"), "{}", stderr(&o));
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let o = relstat(&["check-config", "-c", "/nonexistent/relstat.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read config file /nonexistent/relstat.toml"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(relstat(&["replay"]).status.code(), Some(2));
    assert_eq!(relstat(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn completions_and_man_page_are_generated() {
    let o = relstat(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("check-config"));
    let o = relstat(&["man"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).starts_with(".ie") || stdout(&o).contains(".TH relstat"),
        "{}",
        stdout(&o)
    );
}
