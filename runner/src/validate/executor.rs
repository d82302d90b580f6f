//! `ExecutorSettings`: the pipeline's `executor:` section resolved — override stage names
//! checked against the stages written under `stages:`, `poll` read as a bounded duration — and
//! merged into each stage's `SlurmJob`. Nothing here is part of any key.

use super::duration::parse_duration;
use super::Validator;
use crate::diag::did_you_mean;
use crate::pipeline::{SlurmJob, DEFAULT_SLURM_POLL};
use crate::spec::executor::{RawExecutor, RawSlurm};
use std::collections::HashMap;
use std::time::Duration;

/// The shortest and longest `squeue` interval: faster would load the controller for nothing
/// (completion is seen through status files anyway), slower would notice a vanished job late.
const MIN_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub(super) struct ExecutorSettings {
    defaults: RawSlurm,
    overrides: HashMap<String, RawSlurm>,
    pub(super) poll: Option<Duration>,
}

impl ExecutorSettings {
    /// The defaults with the stage's own override (by the name written under `stages:`) over
    /// them; extra `sbatch` arguments add up, defaults first.
    pub(super) fn job_for(&self, base: &str) -> SlurmJob {
        let d = &self.defaults;
        let o = self.overrides.get(base);
        let pick = |f: fn(&RawSlurm) -> &Option<String>| {
            o.and_then(|o| f(o).clone()).or_else(|| f(d).clone())
        };
        let mut sbatch_args = d.sbatch_args.clone();
        if let Some(o) = o {
            sbatch_args.extend(o.sbatch_args.iter().cloned());
        }
        SlurmJob {
            local: o.and_then(|o| o.local).unwrap_or(false),
            partition: pick(|s| &s.partition),
            account: pick(|s| &s.account),
            qos: pick(|s| &s.qos),
            sbatch_args,
        }
    }

    pub(super) fn poll(&self) -> Duration {
        self.poll.unwrap_or(DEFAULT_SLURM_POLL)
    }
}

impl Validator<'_, '_> {
    /// `executor:`: every override names a stage written under `stages:`.
    pub(super) fn executor(
        &mut self,
        raw: Option<&RawExecutor>,
        bases: &[String],
    ) -> ExecutorSettings {
        let Some(raw) = raw else {
            return ExecutorSettings::default();
        };
        let mut settings = ExecutorSettings {
            defaults: raw.defaults.clone(),
            ..ExecutorSettings::default()
        };
        if let Some((text, path)) = &raw.poll {
            match parse_duration(text) {
                Ok(d) if (MIN_POLL..=MAX_POLL).contains(&d) => settings.poll = Some(d),
                _ => self.problems.push(
                    path,
                    format!("`poll` must be a duration from 200ms to 10m, found `{text}`"),
                    Some("e.g. `poll: 2s`; completion is seen through status files, so this only bounds how soon a vanished job is noticed".into()),
                ),
            }
        }
        for (name, path, o) in &raw.stages {
            if !bases.iter().any(|b| b == name) {
                let help = did_you_mean(name, bases.iter().map(String::as_str))
                    .unwrap_or_else(|| format!("the stages are: {}", bases.join(", ")));
                self.problems.push(
                    &path.key_of(),
                    format!("`executor.stages` names `{name}`, which is not a stage"),
                    Some(help),
                );
                continue;
            }
            settings.overrides.insert(name.clone(), o.clone());
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_replaces_the_defaults_and_adds_its_sbatch_args() {
        let settings = ExecutorSettings {
            defaults: RawSlurm {
                partition: Some("cpu".into()),
                account: Some("lab".into()),
                sbatch_args: vec!["--a".into()],
                ..RawSlurm::default()
            },
            overrides: [(
                "train".to_string(),
                RawSlurm {
                    partition: Some("gpu".into()),
                    sbatch_args: vec!["--b".into()],
                    ..RawSlurm::default()
                },
            )]
            .into(),
            poll: None,
        };
        let train = settings.job_for("train");
        assert_eq!(train.partition.as_deref(), Some("gpu"));
        assert_eq!(train.account.as_deref(), Some("lab"));
        assert_eq!(train.sbatch_args, ["--a", "--b"]);
        assert!(!train.local);
        let other = settings.job_for("other");
        assert_eq!(other.partition.as_deref(), Some("cpu"));
        assert_eq!(other.sbatch_args, ["--a"]);
        assert_eq!(settings.poll(), DEFAULT_SLURM_POLL);
    }
}
