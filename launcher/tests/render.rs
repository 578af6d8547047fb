//! `docker/render`, the containers' copy of the launcher's template engine (the infrastructure
//! images have a shell and awk, not the launcher binary), held to
//! [`launcher::haproxy::render_template`]: every template of the repository renders the same
//! with both, and both refuse a placeholder without a value and a value without a placeholder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use launcher::haproxy::render_template;

/// Every template the containers render (docker/entrypoint).
const TEMPLATES: [&str; 4] = [
    "haproxy/gateway.cfg.tmpl",
    "haproxy/databases.cfg.tmpl",
    "patroni/patroni.yml.tmpl",
    "prometheus/prometheus.yml.tmpl",
];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The placeholders of `template`, by the launcher's rules (`{{ name }}`, spaces trimmed).
fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").expect("a terminated placeholder");
        names.push(after[..end].trim().to_owned());
        rest = &after[end + 2..];
    }
    names
}

/// `docker/render` on `template` with `values` as `T_<name>`; its stdout, or its stderr.
fn awk_render(template: &Path, values: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut command = Command::new("sh");
    command
        .arg(repository().join("docker/render"))
        .arg(template)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (name, value) in values {
        command.env(format!("T_{name}"), value);
    }
    let output = command.output().expect("run docker/render");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn docker_render_renders_every_template_as_the_launcher_does() {
    for name in TEMPLATES {
        let path = repository().join(name);
        let template = std::fs::read_to_string(&path).unwrap();
        let names = placeholders(&template);
        assert!(!names.is_empty(), "{name} has placeholders");
        // Values that span lines, as the server lists do.
        let values: BTreeMap<&str, String> = names
            .iter()
            .map(|key| (key.as_str(), format!("<{key}>\n    <{key} again>")))
            .collect();
        let launcher = render_template(&template, &values).unwrap();
        let awk = awk_render(&path, &values).unwrap_or_else(|error| panic!("{name}: {error}"));
        // awk ends every line it prints, the last one included.
        let launcher = if launcher.ends_with('\n') {
            launcher
        } else {
            launcher + "\n"
        };
        assert_eq!(awk, launcher, "{name}");
    }
}

#[test]
fn docker_render_refuses_what_the_launcher_refuses() {
    let path = repository().join(TEMPLATES[0]);
    let template = std::fs::read_to_string(&path).unwrap();
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    let names = placeholders(&template);
    for key in &names {
        values.insert(key.as_str(), "x".to_owned());
    }

    let mut missing = values.clone();
    missing.remove(names[0].as_str());
    assert!(render_template(&template, &missing).is_err());
    let error = awk_render(&path, &missing).unwrap_err();
    assert!(error.contains("no value"), "{error}");

    let mut unused = values.clone();
    unused.insert("not_in_the_template", "x".to_owned());
    assert!(render_template(&template, &unused).is_err());
    let error = awk_render(&path, &unused).unwrap_err();
    assert!(error.contains("no {{not_in_the_template}}"), "{error}");
}
