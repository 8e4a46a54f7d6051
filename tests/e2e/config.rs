//! Settings layering through the real binary: flags over LABSHIP_* over labship.toml.

use crate::support::*;

#[test]
fn flags_beat_environment_beat_file() {
    let p = Project::with_files(
        "layers",
        &[("Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")],
    );
    let base = rig().base_image;
    let (file, env, flag) = (unique("file"), unique("env"), unique("flag"));
    p.write(
        "labship.toml",
        &format!("name = \"{file}\"\n[build.args]\nBASE_IMAGE = \"{base}\"\n"),
    );
    let image =
        |out: std::process::Output| json(&out)["image"].as_str().expect("image").to_string();

    let from_file = image(p.labship(&["build", "-o", "json", "-q"]));
    assert!(
        from_file.starts_with(&format!("labship/{file}:ctx-")),
        "{from_file}"
    );

    let out = p
        .command(&["build", "-o", "json", "-q"])
        .env("LABSHIP_NAME", &env)
        .output()
        .expect("run");
    let from_env = image(out);
    assert!(
        from_env.starts_with(&format!("labship/{env}:ctx-")),
        "{from_env}"
    );

    let out = p
        .command(&["build", "-o", "json", "-q", "--name", &flag])
        .env("LABSHIP_NAME", &env)
        .output()
        .expect("run");
    let from_flag = image(out);
    assert!(
        from_flag.starts_with(&format!("labship/{flag}:ctx-")),
        "{from_flag}"
    );

    for name in [&file, &env, &flag] {
        remove_images(&format!("labship/{name}"));
    }
}

#[test]
fn init_then_build_works_in_an_empty_folder() {
    let p = Project::empty("init");
    std::fs::remove_file(p.path().join("labship.toml")).expect("rm");
    let name = unique("fresh");
    let out = p.labship(&["init", "--name", &name]);
    assert!(out.status.success());
    assert!(p.path().join("docker/Dockerfile").is_file());
    assert!(p
        .path()
        .join("docker/resources/parallel-processing.ipynb")
        .is_file());
    let written = std::fs::read_to_string(p.path().join("labship.toml")).expect("toml");
    assert!(written.contains(&format!("name = \"{name}\"")));

    // The written project builds (on the rig's base: this machine cannot pull).
    let base = rig().base_image;
    let built = json(&p.labship(&[
        "build",
        "-o",
        "json",
        "-q",
        "--build-arg",
        &format!("BASE_IMAGE={base}"),
    ]));
    assert!(
        built["image"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("labship/{name}:ctx-")),
        "{built}"
    );
    remove_images(&format!("labship/{name}"));

    // A second init keeps the user's files.
    p.write("docker/Dockerfile", "# mine\n");
    let again = p.labship(&["init"]);
    assert!(again.status.success());
    assert_eq!(
        std::fs::read_to_string(p.path().join("docker/Dockerfile")).expect("df"),
        "# mine\n"
    );
}
