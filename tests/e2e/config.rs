//! Settings layering through the real binary: flags over LABSHIP_* over labship.toml.

use crate::support::*;

#[test]
fn flags_beat_environment_beat_file() {
    let p = Project::with_files(
        "layers",
        &[("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")],
    );
    let base = rig().base_image;
    p.write(
        "labship.toml",
        &format!("name = \"from-file\"\n[build.args]\nBASE_IMAGE = \"{base}\"\n"),
    );
    let image =
        |out: std::process::Output| json(&out)["image"].as_str().expect("image").to_string();

    let from_file = image(p.labship(&["build", "-o", "json", "-q"]));
    assert!(
        from_file.starts_with("labship/from-file:ctx-"),
        "{from_file}"
    );

    let out = p
        .command(&["build", "-o", "json", "-q"])
        .env("LABSHIP_NAME", "from-env")
        .output()
        .expect("run");
    let from_env = image(out);
    assert!(from_env.starts_with("labship/from-env:ctx-"), "{from_env}");

    let out = p
        .command(&["build", "-o", "json", "-q", "--name", "from-flag"])
        .env("LABSHIP_NAME", "from-env")
        .output()
        .expect("run");
    let from_flag = image(out);
    assert!(
        from_flag.starts_with("labship/from-flag:ctx-"),
        "{from_flag}"
    );

    for reference in [&from_file, &from_env, &from_flag] {
        let repo = reference.split(':').next().unwrap_or_default();
        let _ = docker(&["rmi", "-f", reference, &format!("{repo}:latest")]);
    }
}

#[test]
fn init_then_build_works_in_an_empty_folder() {
    let p = Project::empty("init");
    std::fs::remove_file(p.path().join("labship.toml")).expect("rm");
    let out = p.labship(&["init", "--name", "fresh-lab"]);
    assert!(out.status.success());
    assert!(p.path().join("docker/Dockerfile").is_file());
    assert!(p
        .path()
        .join("docker/resources/parallel-processing.ipynb")
        .is_file());
    let written = std::fs::read_to_string(p.path().join("labship.toml")).expect("toml");
    assert!(written.contains("name = \"fresh-lab\""));
    // A second init keeps the user's files.
    p.write("docker/Dockerfile", "# mine\n");
    let again = p.labship(&["init"]);
    assert!(again.status.success());
    assert_eq!(
        std::fs::read_to_string(p.path().join("docker/Dockerfile")).expect("df"),
        "# mine\n"
    );
}
