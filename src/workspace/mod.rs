//! What goes into a workspace besides the image's files: the notebooks' git repository
//! (`[workspace] git`, `--git URL[#REF]`), put into every deployment's and seat's workspace
//! when it starts (`up`) and again on demand (`distribute --git`), through the deployment's
//! own Jupyter. A file the workspace lacks is added; a file that still holds one of the
//! repository's versions of it is brought up to date; a file someone changed is kept, and
//! the report says which.

pub mod git;

use serde::Serialize;

use crate::hosts::backup::{read_file, write_file, Added};
use crate::hosts::JupyterAccess;

/// The repository's commit put into one workspace, and what happened to each file.
#[derive(Debug, Clone, Serialize)]
pub struct GitSynced {
    /// `URL#REF` as configured.
    pub repository: String,
    pub commit: String,
    #[serde(flatten)]
    pub files: Added,
    /// Files already as the commit has them.
    pub unchanged: usize,
    /// Paths of the repository not put in (symbolic links, submodules, very large files).
    pub skipped: Vec<String>,
}

impl std::fmt::Display for GitSynced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.commit.get(..12).unwrap_or(&self.commit);
        write!(
            f,
            "{} at {short}: {} added, {} updated, {} unchanged",
            self.repository,
            self.files.added.len(),
            self.files.updated.len(),
            self.unchanged
        )?;
        if !self.files.kept.is_empty() {
            write!(
                f,
                ", kept the workspace's own {}",
                self.files.kept.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The configured notebooks' repository (`[workspace] git`), fetched, if there is one.
pub async fn fetch(
    config: &crate::config::Config,
    printer: &crate::output::Printer,
) -> crate::error::Result<Option<git::Snapshot>> {
    let Some(source) = &config.workspace.git else {
        return Ok(None);
    };
    printer.note(format!(
        "Fetching the notebooks' repository {}",
        source.spec()
    ));
    git::snapshot(source).await.map(Some)
}

/// Puts the snapshot's files into the running deployment's workspace, through its Jupyter.
pub async fn sync_deployment<H: crate::hosts::Host>(
    host: &H,
    deployment: &str,
    snapshot: &git::Snapshot,
) -> crate::error::Result<GitSynced> {
    let jupyter = host.jupyter(deployment).await?;
    let synced = sync(&jupyter, snapshot).await;
    jupyter.close().await;
    synced.map_err(|reason| crate::error::Error::GitWorkspace {
        repository: crate::token::redact(&snapshot.source.spec()),
        reason: format!("`{deployment}` is up, but its files could not be put in: {reason}"),
        hint: format!("`labship distribute --name {deployment} --git` tries again"),
    })
}

/// Puts the snapshot's files into the workspace behind `jupyter` (see the module's rules).
pub async fn sync(jupyter: &JupyterAccess, snapshot: &git::Snapshot) -> Result<GitSynced, String> {
    let mut done = GitSynced {
        repository: crate::token::redact(&snapshot.source.spec()),
        commit: snapshot.commit.clone(),
        files: Added::default(),
        unchanged: 0,
        skipped: snapshot.skipped.clone(),
    };
    for file in &snapshot.files {
        match read_file(jupyter, &file.path).await? {
            None => {
                write_file(jupyter, &file.path, &file.bytes).await?;
                done.files.added.push(file.path.clone());
            }
            Some(current) if current == file.bytes => done.unchanged += 1,
            Some(current) if snapshot.is_repository_version(&file.path, &current) => {
                write_file(jupyter, &file.path, &file.bytes).await?;
                done.files.updated.push(file.path.clone());
            }
            Some(_) => done.files.kept.push(file.path.clone()),
        }
    }
    Ok(done)
}
