//! The compose stack cannot be started here (no container engine), so this checks what can
//! be checked without one: every `herald` command line in `docker-compose.yml` parses with
//! this CLI, and every `HERALD_*` variable the stack sets is one the CLI really reads.

use std::collections::BTreeSet;

use clap::{CommandFactory, Parser};
use yaml_rust2::{Yaml, YamlLoader};

use crate::args::Cli;

fn compose() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml at the repository root");
    YamlLoader::load_from_str(&text)
        .expect("docker-compose.yml is valid YAML")
        .remove(0)
}

/// Every environment variable the CLI reads, over all subcommands.
fn cli_env_names() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_herald_command_in_the_compose_file_parses() {
    let doc = compose();
    let services = doc["services"].as_hash().expect("a services map");
    let mut checked = 0;
    for (name, service) in services {
        let command = strings(&service["command"]);
        if command.first().map(String::as_str) != Some("herald") {
            continue;
        }
        if let Err(e) = Cli::try_parse_from(&command) {
            panic!(
                "service {name:?}: `{}` does not parse: {e}",
                command.join(" ")
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "three announcers and the agent run herald, checked {checked}"
    );
}

#[test]
fn every_herald_variable_in_the_compose_file_is_read() {
    let known = cli_env_names();
    let doc = compose();
    let mut seen = 0;
    let mut check = |env: &Yaml, whose: &str| {
        if let Some(map) = env.as_hash() {
            for key in map.keys().filter_map(Yaml::as_str) {
                if key.starts_with("HERALD_") {
                    assert!(
                        known.contains(key),
                        "{whose} sets {key}, which nothing reads"
                    );
                    seen += 1;
                }
            }
        }
    };
    check(&doc["x-herald-env"], "x-herald-env");
    for (name, service) in doc["services"].as_hash().expect("a services map") {
        check(&service["environment"], name.as_str().unwrap_or("?"));
    }
    assert!(
        seen >= 5,
        "the stack configures herald through the environment"
    );
}
