//! `Watcher`: one thread that follows every job this sluice has submitted. Every
//! [`TICK`] it reads what each job's process wrote since the last look (stdout, stderr and
//! Slurm's own output) and looks for its `status` file, which the wrapper writes when the process
//! ends: completion is seen within a tick, without asking Slurm. Every `poll` it asks `squeue`
//! about all live jobs in one call, for the display (queued, and why; running, and where) and
//! to notice jobs that vanished without a status file (time limit, scancel by someone else,
//! node failure, preemption); for those, `scontrol show job` says how they ended. `sacct` is
//! never used: it needs accounting storage, which many clusters do not run.

use super::errors;
use super::submit::JobFiles;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often files are looked at.
pub(super) const TICK: Duration = Duration::from_millis(100);

/// How often `squeue` is asked while a job sluice cancelled is still listed: the stage's end
/// (and the run's, after Ctrl-C) waits for Slurm to let the job go.
const CANCEL_POLL: Duration = Duration::from_millis(250);

/// How long a job that Slurm says is over may take to show its status file here, for
/// filesystems that publish another machine's writes late (NFS attribute caching).
const STATUS_LAG: Duration = Duration::from_secs(10);

/// What the watcher tells the thread waiting for a job.
#[derive(Debug)]
pub(super) enum Update {
    /// sbatch accepted the job (sent by the submitter itself, before the watcher knows it).
    Submitted(u64),
    Stdout(String),
    Stderr(String),
    /// Slurm's view while the job lives: `PENDING` with its reason, `RUNNING` with its node.
    Queue {
        state: String,
        detail: String,
    },
    Ended(End),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum End {
    /// The wrapper wrote the process's exit status.
    Status(i32),
    /// Slurm ended the job before the process ended (or the status never reached us):
    /// `scontrol`'s `JobState` and `Reason`.
    Vanished { state: String, reason: String },
}

/// What the watcher thread is told.
enum Cmd {
    Follow(u64, JobFiles, Sender<Update>),
    /// sluice has scancelled the job: poll faster until it is gone.
    Cancelling(u64),
}

struct Watched {
    /// sluice has cancelled it.
    cancelling: bool,
    files: JobFiles,
    tails: [Tail; 3],
    updates: Sender<Update>,
    last: Option<(String, String)>,
    /// When Slurm stopped listing it without a status file here.
    gone_since: Option<(Instant, String, String)>,
}

/// Registers jobs with the watcher thread (started with the first job).
pub(super) struct Watcher {
    tx: Sender<Cmd>,
}

impl Watcher {
    pub(super) fn start(poll: Duration) -> Watcher {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("sluice-slurm-watch".into())
            .spawn(move || watch_loop(rx, poll))
            .expect("the watcher thread starts");
        Watcher { tx }
    }

    /// Follows `job` from now on; its updates arrive on the returned channel, the last being
    /// [`Update::Ended`].
    pub(super) fn follow(&self, job: u64, files: JobFiles) -> Receiver<Update> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let _ = self.tx.send(Cmd::Follow(job, files, tx));
        rx
    }

    /// The job has been scancelled: its end is looked for more often.
    pub(super) fn cancelling(&self, job: u64) {
        let _ = self.tx.send(Cmd::Cancelling(job));
    }
}

fn watch_loop(rx: Receiver<Cmd>, poll: Duration) {
    let mut jobs: HashMap<u64, Watched> = HashMap::new();
    let mut next_poll = Instant::now() + poll;
    loop {
        let wait = if jobs.is_empty() {
            Duration::from_secs(3600)
        } else {
            TICK
        };
        match rx.recv_timeout(wait) {
            Ok(Cmd::Cancelling(id)) => {
                if let Some(w) = jobs.get_mut(&id) {
                    w.cancelling = true;
                    next_poll = next_poll.min(Instant::now() + CANCEL_POLL);
                }
                continue;
            }
            Ok(Cmd::Follow(id, files, updates)) => {
                let tails = [
                    Tail::new(files.stdout()),
                    Tail::new(files.stderr()),
                    Tail::new(files.slurm_out()),
                ];
                jobs.insert(
                    id,
                    Watched {
                        cancelling: false,
                        files,
                        tails,
                        updates,
                        last: None,
                        gone_since: None,
                    },
                );
                // More registrations may be waiting; files are looked at on the next round.
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut ended = Vec::new();
        for (&id, w) in jobs.iter_mut() {
            if let Some(end) = look(w) {
                drain(w);
                let _ = w.updates.send(Update::Ended(end));
                ended.push(id);
            }
        }
        for id in ended {
            jobs.remove(&id);
        }
        if Instant::now() >= next_poll && !jobs.is_empty() {
            poll_queue(&mut jobs);
            let hurry = jobs.values().any(|w| w.cancelling);
            next_poll = Instant::now() + if hurry { CANCEL_POLL.min(poll) } else { poll };
        }
    }
}

/// New output, and the job's end if it has ended.
fn look(w: &mut Watched) -> Option<End> {
    drain(w);
    if let Some(code) = read_status(&w.files) {
        return Some(End::Status(code));
    }
    let (since, state, reason) = w.gone_since.as_ref()?;
    // Ended by Slurm while the process ran: there will be no status file.
    let by_slurm = !matches!(state.as_str(), "COMPLETED" | "FAILED");
    (by_slurm || since.elapsed() >= STATUS_LAG).then(|| End::Vanished {
        state: state.clone(),
        reason: reason.clone(),
    })
}

fn drain(w: &mut Watched) {
    let [out, err, slurm] = &mut w.tails;
    for line in out.lines() {
        let _ = w.updates.send(Update::Stdout(line));
    }
    for line in err.lines().into_iter().chain(slurm.lines()) {
        let _ = w.updates.send(Update::Stderr(line));
    }
}

fn read_status(files: &JobFiles) -> Option<i32> {
    std::fs::read_to_string(files.status())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One `squeue` call for every live job: queue states for the display, and the jobs it no
/// longer lists, whose end `scontrol` explains.
fn poll_queue(jobs: &mut HashMap<u64, Watched>) {
    let ids: Vec<String> = jobs
        .iter()
        .filter(|(_, w)| w.gone_since.is_none())
        .map(|(id, _)| id.to_string())
        .collect();
    if ids.is_empty() {
        return;
    }
    let args = vec![
        "-h".to_string(),
        "-j".to_string(),
        ids.join(","),
        "-o".to_string(),
        "%i %T %R".to_string(),
    ];
    let listed: HashMap<u64, (String, String)> = match errors::run("squeue", &args) {
        Ok(out) if out.status.success() => parse_squeue(&String::from_utf8_lossy(&out.stdout)),
        // Asked only about jobs Slurm has forgotten: none is listed.
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("Invalid job id") => {
            HashMap::new()
        }
        Ok(out) => {
            tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "squeue failed; trying again at the next poll");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot run squeue; trying again at the next poll");
            return;
        }
    };
    for (id, w) in jobs.iter_mut() {
        if w.gone_since.is_some() {
            continue;
        }
        match listed.get(id) {
            // Still listed while Slurm cleans up after it: as good as gone, but its end is
            // known only once it leaves.
            Some((state, _)) if state == "COMPLETING" => {}
            Some((state, detail)) => {
                let now = (state.clone(), detail.clone());
                if w.last.as_ref() != Some(&now) {
                    let _ = w.updates.send(Update::Queue {
                        state: state.clone(),
                        detail: detail.clone(),
                    });
                    w.last = Some(now);
                }
            }
            None if read_status(&w.files).is_some() => {}
            None => {
                let (state, reason) = final_state(*id);
                w.gone_since = Some((Instant::now(), state, reason));
            }
        }
    }
}

/// `ID STATE DETAIL` lines.
fn parse_squeue(text: &str) -> HashMap<u64, (String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.trim().splitn(3, ' ');
            let id = parts.next()?.parse().ok()?;
            let state = parts.next()?.to_string();
            let detail = parts.next().unwrap_or("").trim().to_string();
            Some((id, (state, detail)))
        })
        .collect()
}

/// `JobState` and `Reason` from `scontrol show job`; `UNKNOWN` when Slurm no longer knows the
/// job (it forgot it: `MinJobAge` passed).
fn final_state(id: u64) -> (String, String) {
    let args = vec!["-o".into(), "show".into(), "job".into(), id.to_string()];
    let Ok(out) = errors::run("scontrol", &args) else {
        return ("UNKNOWN".into(), "scontrol could not be run".into());
    };
    if !out.status.success() {
        return ("UNKNOWN".into(), "Slurm no longer knows the job".into());
    }
    parse_scontrol(&String::from_utf8_lossy(&out.stdout))
}

fn parse_scontrol(text: &str) -> (String, String) {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
    };
    (
        field("JobState=").unwrap_or_else(|| "UNKNOWN".into()),
        field("Reason=").unwrap_or_else(|| "None".into()),
    )
}

/// A file read as it grows, line by line; a last line without its newline waits for it.
struct Tail {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            file: None,
            partial: Vec::new(),
        }
    }

    fn lines(&mut self) -> Vec<String> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return Vec::new();
        }
        self.partial.extend_from_slice(&buf);
        let mut lines = Vec::new();
        while let Some(at) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=at).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            lines.push(text.trim_end_matches('\r').to_string());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_give_state_and_detail() {
        let m = parse_squeue("12 PENDING (Resources)\n13 RUNNING vm\n");
        assert_eq!(m[&12], ("PENDING".into(), "(Resources)".into()));
        assert_eq!(m[&13], ("RUNNING".into(), "vm".into()));
    }

    #[test]
    fn scontrol_gives_state_and_reason() {
        let (s, r) =
            parse_scontrol("JobId=5 JobName=x JobState=TIMEOUT Reason=TimeLimit Dependency=(null)");
        assert_eq!((s.as_str(), r.as_str()), ("TIMEOUT", "TimeLimit"));
    }

    #[test]
    fn a_tail_returns_whole_lines_as_they_are_completed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut t = Tail::new(p.clone());
        assert!(t.lines().is_empty());
        std::fs::write(&p, "a\nb").unwrap();
        assert_eq!(t.lines(), ["a"]);
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"c\n").unwrap();
        assert_eq!(t.lines(), ["bc"]);
    }
}

#[cfg(test)]
mod end_tests {
    use super::*;

    fn watched(dir: &std::path::Path) -> (Watched, Receiver<Update>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let files = JobFiles {
            dir: dir.to_path_buf(),
        };
        let tails = [
            Tail::new(files.stdout()),
            Tail::new(files.stderr()),
            Tail::new(files.slurm_out()),
        ];
        let w = Watched {
            cancelling: false,
            files,
            tails,
            updates: tx,
            last: None,
            gone_since: None,
        };
        (w, rx)
    }

    #[test]
    fn a_status_file_ends_the_job_after_its_output_is_relayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, rx) = watched(dir.path());
        assert_eq!(look(&mut w), None);
        std::fs::write(dir.path().join("stdout"), "one\ntwo\n").unwrap();
        std::fs::write(dir.path().join("status"), "3\n").unwrap();
        assert_eq!(look(&mut w), Some(End::Status(3)));
        let lines: Vec<String> = rx
            .try_iter()
            .filter_map(|u| match u {
                Update::Stdout(l) => Some(l),
                _ => None,
            })
            .collect();
        assert_eq!(lines, ["one", "two"]);
    }

    #[test]
    fn a_job_slurm_ended_is_over_at_once_but_a_completed_one_waits_for_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _rx) = watched(dir.path());
        w.gone_since = Some((Instant::now(), "TIMEOUT".into(), "TimeLimit".into()));
        assert_eq!(
            look(&mut w),
            Some(End::Vanished {
                state: "TIMEOUT".into(),
                reason: "TimeLimit".into()
            })
        );
        // Completed, but its status file has not shown up here yet: a slow shared filesystem
        // gets `STATUS_LAG` before the job counts as lost.
        w.gone_since = Some((Instant::now(), "COMPLETED".into(), "None".into()));
        assert_eq!(look(&mut w), None);
        w.gone_since = Some((
            Instant::now() - STATUS_LAG - Duration::from_secs(1),
            "COMPLETED".into(),
            "None".into(),
        ));
        assert!(matches!(look(&mut w), Some(End::Vanished { state, .. }) if state == "COMPLETED"));
    }
}
