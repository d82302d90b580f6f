//! The scheduler tests' harness: a pipeline in a temporary workspace, a fake `Executor` whose
//! stages succeed, fail or hold until released or cancelled while it records what it saw, and a
//! dispatch run in its own thread with the test holding its signal and control channels.

use crate::cache::LocalStore;
use crate::cancel::CancelReason;
use crate::events::{Event, Outcome};
use crate::exec::{ExecControl, ExecOutcome, Executor, ProcessSpec};
use crate::hash::Hasher;
use crate::job::RunCtx;
use crate::lock::LockFile;
use crate::lock::LOCK_VERSION;
use crate::pipeline::Pipeline;
use crate::scheduler::{dispatch, Control, DispatchOptions, DispatchReport};
use crate::stage::StageRegistry;
use crate::validate::{load, LoadOptions};
use crate::workspace::Workspace;
use crossbeam_channel::{unbounded, Sender};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Long enough for anything the machine is doing; a test only waits this long when it is broken.
pub(super) const PATIENCE: Duration = Duration::from_secs(60);

/// What a fake stage does once started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Act {
    /// Writes its outputs and exits 0.
    Succeed,
    /// Waits for `Fake::release`, then succeeds; stopped by its cancel token before that.
    Hold,
    /// Waits for `Fake::release`, then exits 1.
    HoldThenFail,
}

/// What the fake reports to the test, in the order it happens.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seen {
    Started(String),
    /// Ended on its own (released, or an `Act` that does not hold).
    Ended(String),
    /// Stopped by its cancel token, with the reason the token carried.
    Stopped(String, Option<CancelReason>),
}

/// The slots held by the stages running right now, as the fake counts them.
#[derive(Default)]
pub(super) struct Load {
    pub(super) running: BTreeMap<String, (usize, String)>,
    pub(super) peak_cpus: usize,
    pub(super) peak_stages: usize,
    /// `CUDA_VISIBLE_DEVICES` of a stage that started while another running stage had one of
    /// the same devices.
    pub(super) gpu_clash: Option<String>,
}

pub(super) struct Fake {
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) acts: BTreeMap<String, Act>,
    pub(super) seen: Sender<Seen>,
    pub(super) log: Mutex<Vec<Seen>>,
    pub(super) load: Mutex<Load>,
    pub(super) released: Mutex<BTreeSet<String>>,
    pub(super) wake: Condvar,
    pub(super) executions: AtomicUsize,
}

impl Fake {
    pub(super) fn new(
        pipeline: &Arc<Pipeline>,
        acts: &[(&str, Act)],
    ) -> (Arc<Fake>, crossbeam_channel::Receiver<Seen>) {
        let (seen, seen_rx) = unbounded();
        let fake = Fake {
            pipeline: pipeline.clone(),
            acts: acts.iter().map(|(s, a)| (s.to_string(), *a)).collect(),
            seen,
            log: Mutex::new(Vec::new()),
            load: Mutex::new(Load::default()),
            released: Mutex::new(BTreeSet::new()),
            wake: Condvar::new(),
            executions: AtomicUsize::new(0),
        };
        (Arc::new(fake), seen_rx)
    }

    pub(super) fn release(&self, stage: &str) {
        self.released.lock().unwrap().insert(stage.to_string());
        self.wake.notify_all();
    }

    pub(super) fn report(&self, s: Seen) {
        self.log.lock().unwrap().push(s.clone());
        let _ = self.seen.send(s);
    }

    /// Holds until the test releases `stage` (true) or its token is cancelled (false). The token
    /// has no wake-up of its own, so the wait looks at it every few milliseconds.
    pub(super) fn hold(&self, stage: &str, ctl: &ExecControl<'_>) -> bool {
        let mut released = self.released.lock().unwrap();
        loop {
            if released.contains(stage) {
                return true;
            }
            if ctl.cancel.is_cancelled() {
                return false;
            }
            released = self
                .wake
                .wait_timeout(released, Duration::from_millis(5))
                .unwrap()
                .0;
        }
    }
}

impl Executor for Fake {
    fn execute(&self, spec: &ProcessSpec, ctl: &ExecControl<'_>) -> std::io::Result<ExecOutcome> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        let name = spec.env["SLUICE_STAGE"].clone();
        let stage = self.pipeline.stage(&name).unwrap();
        let devices = spec.env["CUDA_VISIBLE_DEVICES"].clone();
        {
            let mut load = self.load.lock().unwrap();
            let mine: BTreeSet<&str> = devices.split(',').filter(|d| !d.is_empty()).collect();
            if load
                .running
                .values()
                .any(|(_, theirs)| theirs.split(',').any(|d| mine.contains(d)))
            {
                load.gpu_clash = Some(devices.clone());
            }
            load.running
                .insert(name.clone(), (stage.cpus as usize, devices.clone()));
            let cpus = load.running.values().map(|(c, _)| c).sum();
            load.peak_cpus = load.peak_cpus.max(cpus);
            load.peak_stages = load.peak_stages.max(load.running.len());
        }
        // Process group 0 stands for "no group": `signal_group` ignores it, so the dispatcher's
        // signals reach the stage only through its token, and its timeout clock starts here.
        (ctl.on_spawn)(0);
        self.report(Seen::Started(name.clone()));
        let act = self.acts.get(&name).copied().unwrap_or(Act::Succeed);
        let ended_by_itself = match act {
            Act::Succeed => true,
            Act::Hold | Act::HoldThenFail => self.hold(&name, ctl),
        };
        self.load.lock().unwrap().running.remove(&name);
        if !ended_by_itself {
            self.report(Seen::Stopped(name, ctl.cancel.reason()));
            return Ok(ExecOutcome {
                code: None,
                signal: Some(libc::SIGTERM),
                result: None,
                lost: None,
            });
        }
        let code = if act == Act::HoldThenFail {
            1
        } else {
            for o in &stage.outputs {
                std::fs::write(o.path.to_abs(&self.pipeline.root), name.as_bytes())?;
            }
            0
        };
        self.report(Seen::Ended(name));
        Ok(ExecOutcome {
            code: Some(code),
            signal: None,
            result: None,
            lost: None,
        })
    }
}

/// A pipeline in a temporary workspace.
pub(super) struct Setup {
    pub(super) _dir: tempfile::TempDir,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) ws: Workspace,
}

pub(super) fn setup(yaml: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let file = root.join("sluice.yaml");
    std::fs::write(&file, yaml).unwrap();
    let pipeline = load(&LoadOptions {
        root: &root,
        file: &file,
        display: "sluice.yaml".into(),
        overrides: &[],
        registry: &StageRegistry::default(),
        sweep: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let ws = Workspace::open(&root).unwrap();
    ws.ensure().unwrap();
    Setup {
        _dir: dir,
        pipeline: Arc::new(pipeline),
        ws,
    }
}

/// A dispatch going on in its own thread, and the ends of its channels the test holds.
pub(super) struct Dispatch {
    pub(super) handle: JoinHandle<DispatchReport>,
    pub(super) events: crossbeam_channel::Receiver<Event>,
    /// Events the test has already read while waiting for one.
    pub(super) read: std::cell::RefCell<Vec<Event>>,
    pub(super) signals: Sender<i32>,
    pub(super) control: Sender<Control>,
    pub(super) names: Vec<String>,
}

pub(super) struct Knobs {
    pub(super) jobs: usize,
    pub(super) gpus: usize,
    pub(super) keep_going: bool,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            jobs: 2,
            gpus: 0,
            keep_going: false,
        }
    }
}

/// The run's context and options, as the engine would make them, with the fake executor.
pub(super) fn context(
    s: &Setup,
    fake: &Arc<Fake>,
    knobs: Knobs,
) -> (
    Arc<RunCtx>,
    DispatchOptions,
    crossbeam_channel::Receiver<Event>,
) {
    let (events_tx, events) = unbounded();
    let ctx = Arc::new(RunCtx {
        pipeline: s.pipeline.clone(),
        ws: s.ws.clone(),
        hasher: Arc::new(Hasher::load(&s.ws.memo_path())),
        store: Arc::new(LocalStore::new(s.ws.cache_dir())),
        remote: None,
        registry: StageRegistry::default(),
        executor: fake.clone(),
        lock: Arc::new(LockFile {
            version: LOCK_VERSION,
            ..LockFile::default()
        }),
        events: events_tx,
        run_id: "test-run".into(),
        gpu_names: (0..knobs.gpus).map(|g| format!("gpu{g}")).collect(),
    });
    let opts = DispatchOptions {
        jobs: knobs.jobs,
        gpus: (0..knobs.gpus as u32).collect(),
        keep_going: knobs.keep_going,
        selection: (0..s.pipeline.stages.len()).collect(),
        forced: BTreeSet::new(),
        kill_grace: Duration::from_secs(30),
        lock_path: s.pipeline.lock_path(),
        lock_mirror_dir: s.ws.lock_mirror_dir(),
    };
    (ctx, opts, events)
}

pub(super) fn start(s: &Setup, fake: &Arc<Fake>, knobs: Knobs) -> Dispatch {
    let (ctx, opts, events) = context(s, fake, knobs);
    let (signals, signals_rx) = unbounded();
    let (control, control_rx) = unbounded();
    let handle = std::thread::spawn(move || dispatch(ctx, opts, signals_rx, control_rx));
    Dispatch {
        handle,
        events,
        read: Default::default(),
        signals,
        control,
        names: s.pipeline.stages.iter().map(|s| s.id.0.clone()).collect(),
    }
}

/// How the run ended for each stage, by name, with the message it was given.
pub(super) struct Ended {
    pub(super) report: DispatchReport,
    pub(super) finished: BTreeMap<String, (Outcome, Option<String>)>,
    pub(super) warnings: Vec<(Option<String>, String)>,
}

impl Ended {
    pub(super) fn outcome(&self, stage: &str) -> Outcome {
        self.finished[stage].0
    }
    pub(super) fn message(&self, stage: &str) -> &str {
        self.finished[stage].1.as_deref().unwrap_or("")
    }
}

impl Dispatch {
    pub(super) fn index(&self, stage: &str) -> usize {
        self.names.iter().position(|n| n == stage).unwrap()
    }

    /// Waits for the engine to report `stage` finished.
    pub(super) fn wait_finished(&self, stage: &str) -> Outcome {
        loop {
            let e = self
                .events
                .recv_timeout(PATIENCE)
                .expect("the run went quiet");
            self.read.borrow_mut().push(e.clone());
            if let Event::StageFinished {
                stage: s, outcome, ..
            } = e
            {
                if s == stage {
                    return outcome;
                }
            }
        }
    }

    pub(super) fn join(self) -> Ended {
        let report = self.handle.join().expect("the dispatcher panicked");
        let mut finished = BTreeMap::new();
        let mut warnings = Vec::new();
        let read = self.read.take();
        for e in read.into_iter().chain(self.events.try_iter()) {
            match e {
                Event::StageFinished {
                    stage,
                    outcome,
                    message,
                    ..
                } => {
                    finished.insert(stage, (outcome, message));
                }
                Event::Warning { stage, message } => warnings.push((stage, message)),
                _ => {}
            }
        }
        // The report and the events tell the same story (a withdrawn stage has a last word in
        // the events but no verdict in the report).
        for (name, (outcome, _)) in &finished {
            let idx = self.names.iter().position(|n| n == name).unwrap();
            if let Some(r) = report.stages.get(&idx) {
                assert_eq!(r.outcome, *outcome, "{name}");
            }
        }
        Ended {
            report,
            finished,
            warnings,
        }
    }
}

pub(super) fn next(seen: &crossbeam_channel::Receiver<Seen>) -> Seen {
    seen.recv_timeout(PATIENCE).expect("no stage moved")
}

/// The next stage to start; stages ending on their own in between are passed over.
pub(super) fn expect_started(seen: &crossbeam_channel::Receiver<Seen>) -> String {
    loop {
        match next(seen) {
            Seen::Started(s) => return s,
            Seen::Ended(_) => {}
            other => panic!("expected a start, got {other:?}"),
        }
    }
}

/// `stages:` lines for `n` independent stages `s0..`, each with one output and the given extra
/// fields.
pub(super) fn independent(n: usize, extra: &str) -> String {
    (0..n)
        .map(|i| format!("  s{i}: {{run: \"fake\", outputs: [o]{extra}}}\n"))
        .collect()
}

/// Releases held stages one at a time, oldest first, each time the slots are full (or nothing
/// else is left to start), until all `n` have run.
pub(super) fn drain_in_turn(
    fake: &Fake,
    seen: &crossbeam_channel::Receiver<Seen>,
    n: usize,
    at_once: usize,
) {
    let mut running = std::collections::VecDeque::new();
    let mut started = 0;
    for _ in 0..n {
        while running.len() < at_once && started < n {
            running.push_back(expect_started(seen));
            started += 1;
        }
        fake.release(&running.pop_front().unwrap());
    }
}
