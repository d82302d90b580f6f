use super::*;
use crate::exec::{resolve_program, Stdout};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

/// A spec running `program` with `args`, a usable `PATH` and nothing else in its environment.
fn spec(program: &str, args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
        cwd: std::env::temp_dir(),
        stdin: None,
        stdout: Stdout::Log,
    }
}

/// What a finished child said and how it ended.
struct Ran {
    pid: i32,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Spawns `spec` and reads both pipes to the end (stderr after stdout: the tests write little
/// to it), then reaps the child.
fn run(spec: &ProcessSpec) -> io::Result<Ran> {
    let program = resolve_program(&spec.program, spec.env.get("PATH").map(String::as_str));
    let Some(mut child) = spawn_in_group(spec, &program)? else {
        panic!("not spawned here: {program:?}");
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.read_to_string(&mut stdout)?;
    child.stderr.read_to_string(&mut stderr)?;
    let status = reap(child.pid)?;
    Ok(Ran {
        pid: child.pid,
        status,
        stdout,
        stderr,
    })
}

fn sh(script: &str) -> Ran {
    run(&spec("sh", &["-c", script])).unwrap()
}

/// Children of this process, as (pid, state, name), read from `/proc`.
fn children_of_this_process() -> Vec<(i32, char, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == me {
            let pid = stat[..open].trim().parse().unwrap_or(0);
            found.push((pid, state, stat[open + 1..close].to_string()));
        }
    }
    found
}

/// Spawns `spec`, which must fail before execve, on a thread with a name of its own; a child that
/// failed is a copy of that thread and carries its name, so an unreaped one would be found.
fn failed_spawn_leaves_no_child(spec: ProcessSpec, name: &str) -> io::Error {
    let err = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || run(&spec).err().expect("the spawn fails"))
        .unwrap()
        .join()
        .unwrap();
    let left: Vec<_> = children_of_this_process()
        .into_iter()
        .filter(|(_, _, comm)| comm == name)
        .collect();
    assert!(left.is_empty(), "children left behind: {left:?}");
    err
}

#[test]
fn a_missing_program_is_not_found_and_leaves_no_zombie() {
    let path = failed_spawn_leaves_no_child(spec("/nonexistent/prog", &[]), "spawn-missing2");
    assert_eq!(path.kind(), io::ErrorKind::NotFound, "{path}");
    // A bare name not found on the stage's PATH is left to std, which searches that PATH (an
    // `execve` of the bare name would run a file of that name in the working directory).
    let bare = spec("no-such-program-xq", &[]);
    let program = resolve_program(&bare.program, bare.env.get("PATH").map(String::as_str));
    assert!(spawn_in_group(&bare, &program).unwrap().is_none());
}

#[test]
fn a_missing_directory_is_not_found() {
    let mut s = spec("sh", &["-c", "true"]);
    s.cwd = PathBuf::from("/nonexistent/dir");
    let err = failed_spawn_leaves_no_child(s, "spawn-nodir");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
}

#[test]
fn a_file_that_is_not_executable_is_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script");
    std::fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
    let err = failed_spawn_leaves_no_child(spec(file.to_str().unwrap(), &[]), "spawn-noexec");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
}

#[test]
fn a_nul_byte_in_an_argument_is_invalid_input() {
    let err = run(&spec("sh", &["-c", "tr\0ue"])).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn the_child_leads_its_own_process_group() {
    // Field 5 of /proc/PID/stat is the process group; `sh`'s name holds no space.
    let ran = sh("read -r pid comm state ppid pgrp rest < /proc/$$/stat; echo $pid $pgrp");
    assert_eq!(ran.stdout.trim(), format!("{} {}", ran.pid, ran.pid));
}

#[test]
fn the_environment_is_exactly_the_given_map_and_argv0_as_written() {
    let mut s = spec("env", &[]);
    s.env.insert("A".into(), "1".into());
    s.env.insert("B".into(), "two words".into());
    let ran = run(&s).unwrap();
    assert_eq!(ran.stdout, "A=1\nB=two words\nPATH=/usr/bin:/bin\n");
    let ran = sh("echo \"$0\"; cat /proc/$$/cmdline | tr '\\0' ' '");
    assert_eq!(
        ran.stdout,
        "sh\nsh -c echo \"$0\"; cat /proc/$$/cmdline | tr '\\0' ' ' "
    );
}

#[test]
fn the_working_directory_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("sh", &["-c", "pwd -P"]);
    s.cwd = dir.path().to_path_buf();
    let ran = run(&s).unwrap();
    let want = dir.path().canonicalize().unwrap();
    assert_eq!(ran.stdout.trim(), want.to_str().unwrap());
}

#[test]
fn stdin_is_dev_null_and_no_descriptor_of_ours_leaks() {
    // Descriptors this test process inherited without close-on-exec (a harness's jobserver)
    // reach every child, through std's spawn as well; every other one must not.
    let mut inherited: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        // SAFETY: F_GETFD only reads a descriptor's flags; a closed one returns -1.
        .filter(|&fd| fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } == 0)
        .map(|fd| fd.to_string())
        .collect();
    let ran = sh("readlink /proc/self/fd/0; cat; echo read-eof; ls /proc/self/fd");
    let mut lines = ran.stdout.lines();
    assert_eq!(lines.next(), Some("/dev/null"));
    assert_eq!(lines.next(), Some("read-eof"));
    // `ls` sees 0, 1, 2, what was inherited, and the one directory it reads.
    let mut fds: Vec<String> = lines
        .map(str::to_string)
        .filter(|fd| !["0", "1", "2"].contains(&fd.as_str()))
        .collect();
    inherited.sort();
    fds.retain(|fd| !inherited.contains(fd));
    assert_eq!(
        fds.len(),
        1,
        "{fds:?} beyond 0-2 and {inherited:?}; {}",
        ran.stderr
    );
}

#[test]
fn exit_codes_and_deaths_by_signal_come_back() {
    assert_eq!(sh("exit 7").status.code(), Some(7));
    let killed = sh("kill -TERM $$");
    assert_eq!(killed.status.code(), None);
    assert_eq!(killed.status.signal(), Some(libc::SIGTERM));
}

#[test]
fn the_child_starts_as_std_starts_one_with_our_mask_and_sigpipe_at_its_default() {
    // Rust's runtime ignores SIGPIPE in this process: the program gets it at its default, as
    // std's spawn gives it. The mask is this thread's (SIGUSR1 blocked here), as std leaves it,
    // not the everything-blocked mask of the moment of the clone. `grep` itself reads its
    // status: `sh` would set its own.
    // SAFETY: changes only this thread's mask, restored below.
    let old = unsafe {
        let mut usr1: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut usr1);
        libc::sigaddset(&mut usr1, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &usr1, &mut old);
        old
    };
    let ran = run(&spec(
        "grep",
        &["-E", "^(SigBlk|SigIgn):", "/proc/self/status"],
    ));
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    let ran = ran.unwrap();
    let field = |name: &str| {
        let line = ran.stdout.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(field("SigBlk:"), 1 << (libc::SIGUSR1 - 1), "{}", ran.stdout);
    assert_eq!(
        field("SigIgn:") & (1 << (libc::SIGPIPE - 1)),
        0,
        "{}",
        ran.stdout
    );
}

extern "C" fn ignore_usr2(_: c_int) {}

#[test]
fn a_handled_signal_is_reset_and_an_ignored_one_kept() {
    // execve resets handlers itself, so the child's window before it cannot be watched from a
    // test; the step it takes in that window is tested here on this process. SIGUSR2 is
    // handled by nothing else in these tests; SIGPIPE is ignored by Rust's runtime.
    let disposition = |sig| {
        // SAFETY: queries only, into a zeroed struct.
        unsafe {
            let mut a: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut a);
            a.sa_sigaction
        }
    };
    // SAFETY: installs a handler that does nothing, then resets only these two signals.
    unsafe {
        libc::signal(
            libc::SIGUSR2,
            ignore_usr2 as extern "C" fn(c_int) as libc::sighandler_t,
        );
        assert_ne!(disposition(libc::SIGUSR2), libc::SIG_DFL);
        reset_handler(libc::SIGUSR2);
        reset_handler(libc::SIGPIPE);
    }
    assert_eq!(disposition(libc::SIGUSR2), libc::SIG_DFL);
    assert_eq!(disposition(libc::SIGPIPE), libc::SIG_IGN);
}

#[test]
fn many_spawns_from_two_threads_at_once_all_succeed() {
    std::thread::scope(|s| {
        for t in 0..2 {
            s.spawn(move || {
                for i in 0..200 {
                    let word = format!("t{t}-{i}");
                    let ran = run(&spec("echo", &[&word])).unwrap();
                    assert!(ran.status.success());
                    assert_eq!(ran.stdout, format!("{word}\n"));
                }
            });
        }
    });
}
