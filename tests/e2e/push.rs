//! `labship push`: the real ECR flow (moto for the API, a real registry for the bytes),
//! checked through the registry's own API and through ECR's API.

use crate::support::*;

fn check_in_registry(repo: &str, tag: &str) -> serde_json::Value {
    let registry = Registry::rig();
    let manifest = registry
        .manifest(repo, tag)
        .unwrap_or_else(|| panic!("{repo}:{tag} is not in the registry"));
    let config = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    assert!(
        registry.has_blob(repo, config),
        "config blob {config} missing"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(!layers.is_empty());
    for layer in layers {
        let digest = layer["digest"].as_str().expect("layer digest");
        assert!(registry.has_blob(repo, digest), "layer {digest} missing");
    }
    manifest
}

#[tokio::test(flavor = "multi_thread")]
async fn push_creates_the_repository_uploads_once_and_then_skips() {
    let rig = rig();
    let p = Project::default_workload("push");
    // BuildKit's layers are reproducible: without a file of its own, this image's layers would
    // all be in the registry already (other tests push the same workload) and only be mounted.
    p.write("docker/resources/marker.txt", &p.name);
    let repo = p.repository();

    let first = json(&p.labship(&["push", "-o", "json"]));
    assert_eq!(first["skipped"], false, "{first}");
    assert_eq!(first["repository_created"], true, "{first}");
    assert_eq!(first["built"], true, "{first}");
    // Layers the registry already holds for another repository are mounted, not sent: the
    // count is what travelled, at least the workload's own layers.
    let first_bytes = first["bytes_uploaded"].as_u64().unwrap_or(0);
    assert!(first_bytes > 0, "{first}");
    let tag = first["tags"][0].as_str().expect("content tag").to_string();
    assert_eq!(first["image_uri"], format!("{}/{repo}:{tag}", rig.registry));
    let digest = first["digest"].as_str().expect("digest").to_string();
    assert!(digest.starts_with("sha256:"));

    // The registry has the manifest and every layer, under both tags.
    check_in_registry(&repo, &tag);
    check_in_registry(&repo, "latest");

    // ECR (moto) has the repository, set up as labship promises.
    let ecr = ecr_client(&rig.aws_endpoint).await;
    let described = ecr
        .describe_repositories()
        .repository_names(&repo)
        .send()
        .await
        .expect("describe");
    let r = &described.repositories()[0];
    assert!(r
        .image_scanning_configuration()
        .is_some_and(|c| c.scan_on_push()));
    assert!(r.encryption_configuration().is_some());
    let tags = ecr
        .list_tags_for_resource()
        .resource_arn(r.repository_arn().expect("arn"))
        .send()
        .await
        .expect("tags");
    let tag_pairs: Vec<(String, String)> = tags
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    assert!(
        tag_pairs.contains(&("labship:managed-by".into(), "labship".into())),
        "{tag_pairs:?}"
    );
    assert!(
        tag_pairs.contains(&("labship:deployment".into(), p.name.clone())),
        "{tag_pairs:?}"
    );
    let policy = ecr
        .get_lifecycle_policy()
        .repository_name(&repo)
        .send()
        .await
        .expect("lifecycle policy");
    assert!(policy
        .lifecycle_policy_text()
        .unwrap_or("")
        .contains("untagged"));

    // Unchanged image: nothing built, nothing uploaded, the same digest.
    let second = json(&p.labship(&["push", "-o", "json"]));
    assert_eq!(second["skipped"], true, "{second}");
    assert_eq!(second["bytes_uploaded"], 0);
    assert_eq!(second["built"], false);
    assert_eq!(second["repository_created"], false);
    assert_eq!(second["digest"], digest.as_str());

    // A changed notebook folder: a new tag, and only the changed layer travels.
    p.write("docker/resources/new-notes.md", "# notes\n");
    let third = json(&p.labship(&["push", "-o", "json"]));
    assert_eq!(third["skipped"], false);
    let new_tag = third["tags"][0].as_str().expect("tag");
    assert_ne!(new_tag, tag);
    // Only the changed layer (the workspace files, a few KiB) travels, not the base.
    let uploaded = third["bytes_uploaded"].as_u64().unwrap_or(u64::MAX);
    assert!(uploaded > 0 && uploaded < 1_000_000, "{third}");
    check_in_registry(&repo, new_tag);
}

#[test]
fn push_text_output_names_the_image() {
    let p = Project::with_files(
        "pushtext",
        &[(
            "Dockerfile",
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo text > /t\n",
        )],
    );
    let out = p.labship(&["push"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first_line = stdout.lines().next().unwrap_or_default();
    assert!(
        first_line.starts_with(&format!("{}/{}:ctx-", rig().registry, p.repository())),
        "{stdout}"
    );
    assert!(stdout.contains("digest    sha256:"), "{stdout}");
    assert!(stderr(&out).contains("Pushing"), "progress goes to stderr");
}
