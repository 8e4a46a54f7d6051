//! The tags that mark a cloud resource as labship's. Every resource is tagged when it is
//! created, so any machine can find a deployment's resources, and remove them, from AWS alone.

/// Marks a resource as created and managed by labship.
pub const MANAGED_BY: &str = "labship:managed-by";
pub const MANAGED_BY_VALUE: &str = "labship";
/// The deployment a resource belongs to.
pub const DEPLOYMENT: &str = "labship:deployment";
/// On an instance: the image its container runs (`REGISTRY/REPOSITORY:CONTENT_TAG`).
pub const IMAGE: &str = "labship:image";
/// On an instance: the port Jupyter is published on.
pub const PORT: &str = "labship:port";
/// On an instance: `https` when its Jupyter serves TLS with a certificate the host made (every
/// instance since labship 0.2); absent on older ones, which serve plain HTTP.
pub const SCHEME: &str = "labship:scheme";

/// The tags of a resource of `deployment`.
pub fn for_deployment(deployment: &str) -> [(&'static str, String); 2] {
    [
        (MANAGED_BY, MANAGED_BY_VALUE.to_string()),
        (DEPLOYMENT, deployment.to_string()),
    ]
}

/// The same marks as Docker labels on local containers and volumes (reverse-DNS keys, as
/// Docker's convention asks).
pub mod labels {
    pub const MANAGED_BY: &str = "dev.labship.managed-by";
    pub const DEPLOYMENT: &str = "dev.labship.deployment";
    /// The content tag of the image a container runs: an unchanged image keeps the container.
    pub const CONTENT_TAG: &str = "dev.labship.content-tag";
    /// On a short-lived helper container (the workspace sync of a replace): the deployment
    /// it works for. `down` removes any that a killed run left behind.
    pub const HELPER_OF: &str = "dev.labship.helper-of";
}
