//! The tags that mark a cloud resource as labship's. Every resource is tagged when it is
//! created, so any machine can find a deployment's resources, and remove them, from AWS alone.

/// Marks a resource as created and managed by labship.
pub const MANAGED_BY: &str = "labship:managed-by";
pub const MANAGED_BY_VALUE: &str = "labship";
/// The deployment a resource belongs to.
pub const DEPLOYMENT: &str = "labship:deployment";
/// On an instance: the image its container runs (`REGISTRY/REPOSITORY:CONTENT_TAG`).
pub const IMAGE: &str = "labship:image";
/// On an instance: which `[data] inputs` its host copied (`labship::hosts::ec2::userdata::
/// inputs_id`; `none`; absent on instances of older labship versions, which have none).
pub const INPUTS: &str = "labship:inputs";
/// On an instance: the port Jupyter is published on.
pub const PORT: &str = "labship:port";
/// On an instance: `https` when its Jupyter serves TLS with a certificate the host made (every
/// instance since labship 0.2); absent on older ones, which serve plain HTTP.
pub const SCHEME: &str = "labship:scheme";
/// On an instance: how Jupyter is reached, `https` (its port open to the allowed addresses) or
/// `ssm` (no inbound rule; Systems Manager port forwarding). Absent means `https`.
pub const ACCESS: &str = "labship:access";
/// On an instance: how long it may be idle before it stops itself (`60m`, `off`).
pub const IDLE_STOP: &str = "labship:idle-stop";
/// On an instance: how long after each start it stops itself (`24h`, `off`).
pub const TTL: &str = "labship:ttl";
/// On an instance: `yes` when its workspace lives on the deployment's data volume; absent on
/// instances launched before labship had data volumes, whose workspace is on their own disk.
pub const DATA_VOLUME: &str = "labship:data-volume";
/// On an EBS volume: what it holds for its deployment (`workspace`: the data volume that
/// outlives the instances).
pub const VOLUME: &str = "labship:volume";
pub const VOLUME_WORKSPACE: &str = "workspace";

/// On a seat of a class (`up --seats`, `--roster`), on its instance, data volume and token:
/// the class and the seat's id; on the security group the seats share (which has no
/// `labship:deployment`), the class alone. Students' names and emails are not tags: anyone
/// who may list the account's instances would read them.
pub const CLASS: &str = "labship:class";
pub const SEAT: &str = "labship:seat";
/// On the instances of a class's seats launched by one RunInstances: the seats' ids in
/// launch-index order, space-separated (each instance is the seat of its `AmiLaunchIndex`
/// until its own `labship:deployment` and `labship:seat` tags are set, right after).
pub const LAUNCH_SEATS: &str = "labship:launch-seats";
/// On a host several seats of a class share (`--seats-per-instance`), instead of
/// `labship:deployment` and `labship:seat`: its seats' ids in slot order, space-separated.
/// Launched with other hosts, its entry in `labship:launch-seats` is its seats joined by
/// [`HOST_SEATS_JOIN`] until this tag is set.
pub const HOST_SEATS: &str = "labship:host-seats";
pub const HOST_SEATS_JOIN: char = '+';
/// On such a host: the seats taken off it alone (`down --seat`) while the others stay,
/// space-separated. Their slots in `labship:host-seats` stay theirs, empty.
pub const HOST_GONE: &str = "labship:host-gone";
/// On such a host: `labship:image:<seat>`, the image one seat's container runs once a
/// replace put it in place alone (each seat's `up` replaces its own); without it the seat
/// runs the host's `labship:image`.
pub const SEAT_IMAGE_PREFIX: &str = "labship:image:";

/// The key of the tag holding `seat`'s image on its shared host.
#[must_use]
pub fn seat_image(seat: &str) -> String {
    format!("{SEAT_IMAGE_PREFIX}{seat}")
}

/// On every resource `up` creates: the ARN of the identity that created it (STS
/// GetCallerIdentity). `up` and `down` of a deployment someone else owns need `--force`.
pub const OWNER: &str = "labship:owner";

/// On a job host (`labship run --ec2`) and its root volume: the run's id,
/// the deployment (project) it ran for, and where its results go in S3. A job host is not a
/// deployment: it has no `labship:deployment` tag, and the deployment verbs leave it alone.
pub const JOB: &str = "labship:job";
pub const JOB_OF: &str = "labship:job-of";
pub const JOB_OUTPUT: &str = "labship:job-output";
/// On the job hosts' security group of a VPC (shared by every run; `down --all` removes it).
pub const JOB_GROUP: &str = "labship:job-group";

static CALLER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records who runs this command (once per process; later calls are ignored): from then
/// on [`for_deployment`] adds the owner tag.
pub fn set_caller(arn: &str) {
    let _ = CALLER.set(arn.to_string());
}

/// Who runs this command, once known ([`set_caller`]).
pub fn owner() -> Option<String> {
    CALLER.get().cloned()
}

/// The tags of a resource of `deployment`: managed-by, deployment, and the owner once the
/// caller is known ([`set_caller`]).
pub fn for_deployment(deployment: &str) -> Vec<(&'static str, String)> {
    let mut tags = vec![
        (MANAGED_BY, MANAGED_BY_VALUE.to_string()),
        (DEPLOYMENT, deployment.to_string()),
    ];
    tags.extend(owner().map(|arn| (OWNER, arn)));
    tags
}

/// The tags of a job host's resources: managed-by, the run, its project, where its results
/// go, and the owner once the caller is known.
pub fn for_job(run_id: &str, of: &str, output: &str) -> Vec<(&'static str, String)> {
    let mut tags = vec![
        (MANAGED_BY, MANAGED_BY_VALUE.to_string()),
        (JOB, run_id.to_string()),
        (JOB_OF, of.to_string()),
        (JOB_OUTPUT, output.to_string()),
    ];
    tags.extend(owner().map(|arn| (OWNER, arn)));
    tags
}

/// The same marks as Docker labels on local containers and volumes (reverse-DNS keys, as
/// Docker's convention asks).
pub mod labels {
    pub const MANAGED_BY: &str = "dev.labship.managed-by";
    pub const DEPLOYMENT: &str = "dev.labship.deployment";
    /// The content tag of the image a container runs: an unchanged image keeps the container.
    pub const CONTENT_TAG: &str = "dev.labship.content-tag";
    /// A deployment's S3 inputs (their addresses, space-separated), mounted at `inputs/`:
    /// other inputs replace the container.
    pub const INPUTS: &str = "dev.labship.inputs";
    /// On a short-lived helper container (the workspace sync of a replace): the deployment
    /// it works for. `down` removes any that a killed run left behind.
    pub const HELPER_OF: &str = "dev.labship.helper-of";
    /// On a seat of a class (`up --seats`, `--roster`): the class, the seat's id, and the
    /// student's name and email when the roster gives them.
    pub const CLASS: &str = "dev.labship.class";
    pub const SEAT: &str = "dev.labship.seat";
    pub const STUDENT: &str = "dev.labship.student";
    pub const EMAIL: &str = "dev.labship.email";
    /// On a job's container (`labship run`): its run id, and the deployment whose image it runs.
    pub const JOB: &str = "dev.labship.job";
    pub const JOB_OF: &str = "dev.labship.job-of";
    /// The notebook's (or script's) file name.
    pub const JOB_NOTEBOOK: &str = "dev.labship.job-notebook";
    /// The `labship run` invocation that started it (an interrupted one names its own).
    pub const JOB_BATCH: &str = "dev.labship.job-batch";
    /// Where a job's results go in S3 (`--output-uri`; the run id is added), for `runs`.
    pub const JOB_OUTPUT: &str = "dev.labship.job-output";
}
